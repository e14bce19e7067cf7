"""The `towervision` dispatcher: usage and version without importing the package, sub-command help names."""

import subprocess
import sys
from importlib.metadata import version

import pytest

from towervision_cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"towervision-hf {version('towervision-hf')}\n"


def test_usage_and_version_do_not_import_torch_or_the_package():
    code = (
        "import sys, towervision_cli\n"
        "assert towervision_cli.main(['--help']) == 0 and towervision_cli.main(['--version']) == 0\n"
        "heavy = sorted({'torch', 'transformers', 'towervision_hf'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage: towervision [--version] COMMAND" in result.stdout


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "eval", "data", "push", "init", "merge"])
def test_sub_command_help_names_the_sub_command(command, capsys):
    try:
        main([command, "--help"])
    except SystemExit as exit:
        assert exit.code == 0
    assert f"usage: towervision {command}" in capsys.readouterr().out


def test_every_command_help_imports_neither_torch_nor_transformers():
    """`towervision COMMAND --help` answers from a parser built without the heavy libraries (what is imported is
    asserted, not how long it takes: `bench/bench_cli_help.py` measures that)."""
    code = (
        "import contextlib, io, sys, towervision_cli\n"
        "for name in towervision_cli.COMMANDS:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        towervision_cli.main([name, '--help'])\n"
        "    assert f'usage: towervision {name}' in out.getvalue(), (name, out.getvalue()[:200])\n"
        "    heavy = sorted({'torch', 'transformers', 'trl', 'datasets'} & set(sys.modules))\n"
        "    assert not heavy, (name, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_train_help_lists_our_options_grouped_before_pointing_at_trl(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert (
        out.index("DataArguments:") < out.index("--dataset ") < out.index("StageArguments:") < out.index("--vision_lr")
    )
    assert "--help-all" in out and "--learning_rate" not in out and len(out.splitlines()) < 150


def test_the_light_choice_tables_match_their_sources():
    """`checkpoint.cli` spells its choices out so `--help` needs no torch: they must stay the dtype table's and the
    converter's."""
    from towervision_hf.checkpoint import cli, convert, weights

    assert sorted(cli.DTYPE_NAMES) == sorted(weights.DTYPES)
    assert cli.NATIVE_FORMATS == convert.SOURCE_MODEL_TYPES
