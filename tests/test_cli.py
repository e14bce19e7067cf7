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
