"""The tools on bad inputs: no command writes over, into or around what it reads; a broken file read by a command is
one line naming it, exit status 2; a run with nothing to train on fails with the counts instead of claiming success;
a notice that says "once" prints once."""

import json
import shutil
import struct
from pathlib import Path

import pytest

from towervision_cli import main as cli_main
from towervision_hf.checkpoint.output import check_model_folder, staged_output


FIXTURES = Path(__file__).parent / "fixtures"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("safety") / "tiny"
    assert cli_main(["init", "--tiny", str(folder)]) == 0
    return folder


def one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: "), err
    return err


@pytest.mark.parametrize("command", ["convert", "export"])
def test_convert_and_export_refuse_an_output_over_their_source_and_leave_it_byte_identical(
    command, tiny_checkpoint, tmp_path, capsys
):
    source = tmp_path / "source"
    shutil.copytree(FIXTURES / "release_llava_next" if command == "convert" else tiny_checkpoint, source)
    before = snapshot(source)
    extra = ["--format", "llava_next"] if command == "export" else []
    for output, relation in (
        (source, "is the input"),
        (source / "out", "lies inside the input"),
        (tmp_path, "contains the input"),
    ):
        assert cli_main([command, str(source), str(output), *extra]) == 2
        assert relation in one_error_line(capsys, f"towervision {command}")
    assert snapshot(source) == before and sorted(path.name for path in tmp_path.iterdir()) == ["source"]


def test_a_failed_write_leaves_nothing_and_a_full_folder_is_never_replaced(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_output(target) as staging:
        (staging / "half.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with staged_output(target) as staging:
        (staging / "whole.bin").write_bytes(b"x")
    assert snapshot(target) == {"whole.bin": b"x"}
    with pytest.raises(ValueError, match="already exists and is not an empty folder"), staged_output(target):
        pass
    assert snapshot(target) == {"whole.bin": b"x"} and [path.name for path in tmp_path.iterdir()] == ["out"]


def test_init_merge_push_and_data_refuse_outputs_over_their_inputs(tiny_checkpoint, tmp_path, capsys):
    before = snapshot(tiny_checkpoint)
    assert cli_main(["init", "--tiny", str(tiny_checkpoint)]) == 2
    assert "already exists and is not an empty folder" in one_error_line(capsys, "towervision init")
    assert cli_main(["merge", str(tiny_checkpoint), str(tiny_checkpoint / "merged")]) == 2
    assert "lies inside the input" in one_error_line(capsys, "towervision merge")
    stage_dir = tiny_checkpoint / "staged"
    argv = ["push", str(tiny_checkpoint), "--repo-id", "org/name", "--dry-run", "--stage-dir", str(stage_dir)]
    assert cli_main(argv) == 2
    assert "lies inside the input" in capsys.readouterr().err
    rows = tmp_path / "rows"
    rows.mkdir()
    (rows / "data.jsonl").write_text("{}\n")
    for argv in (
        ["translate", "--source", str(rows), "--langs", "de", "--out", str(rows)],
        ["filter", str(rows), "--out", str(rows / "kept")],
        ["synth", "--source", str(rows), "--endpoint", "http://127.0.0.1:9", "--model", "m", "--out", str(rows)],
    ):
        assert cli_main(["data", *argv]) == 2
        assert "the input" in one_error_line(capsys, f"towervision data {argv[0]}")
    assert snapshot(rows) == {"data.jsonl": b"{}\n"} and snapshot(tiny_checkpoint) == before


def test_eval_refuses_to_write_its_results_into_the_model_folder(tiny_checkpoint, capsys):
    before = snapshot(tiny_checkpoint)
    argv = [
        "eval",
        "commute",
        "--model",
        str(tiny_checkpoint),
        "--data",
        "absent",
        "--output-dir",
        str(tiny_checkpoint / "results"),
    ]
    assert cli_main(argv) == 2
    assert "lies inside the input" in one_error_line(capsys, "towervision eval commute")
    assert snapshot(tiny_checkpoint) == before


def broken_copies(folder: Path, weights: str, root: Path) -> dict[str, Path]:
    """Copies of `folder` whose `weights` file is empty, cut in half, or claims a header of 2^60 bytes."""
    copies = {}
    for kind in ("zero-byte", "truncated", "absurd-header"):
        copy = root / kind
        shutil.copytree(folder, copy)
        data = (copy / weights).read_bytes()
        broken = {"zero-byte": b"", "truncated": data[: len(data) // 2], "absurd-header": struct.pack("<Q", 2**60)}
        (copy / weights).write_bytes(broken[kind] + (data[8:] if kind == "absurd-header" else b""))
        copies[kind] = copy
    return copies


@pytest.mark.parametrize("command", ["convert", "push", "merge"])
def test_broken_safetensors_are_one_line_naming_the_file(command, tiny_checkpoint, tmp_path, capsys):
    if command == "convert":
        copies = broken_copies(FIXTURES / "release_llava_next", "model.safetensors", tmp_path)
    elif command == "push":
        copies = broken_copies(tiny_checkpoint, "model.safetensors", tmp_path)
    else:  # the trained tensors of a --save_trained_only stage folder
        from towervision_hf.checkpoint.compose import build_tiny
        from towervision_hf.checkpoint.trained_modules import save_trained_modules

        model, processor = build_tiny()
        model.requires_grad_(False).model.multi_modal_projector.requires_grad_(True)
        save_trained_modules(model, processor, tmp_path / "stage", {"model_name_or_path": "tiny", "seed": 0})
        copies = broken_copies(tmp_path / "stage", "trained_modules.safetensors", tmp_path)
    capsys.readouterr()
    for kind, copy in copies.items():
        argv = {
            "convert": ["convert", str(copy), str(tmp_path / "out")],
            "push": ["push", str(copy), "--repo-id", "org/name", "--dry-run", "--stage-dir", str(tmp_path / "out")],
            "merge": ["merge", str(copy), str(tmp_path / "out")],
        }[command]
        assert cli_main(argv) == 2, kind
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"towervision {command}: "), err
        weights = "trained_modules.safetensors" if command == "merge" else "model.safetensors"
        assert str(copy / weights) in err and ("truncated" in err or "not a safetensors file" in err), err
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_corrupt_trained_modules_index_is_named(tmp_path, capsys):
    from towervision_hf.checkpoint.compose import build_tiny
    from towervision_hf.checkpoint.trained_modules import save_trained_modules

    model, processor = build_tiny()
    model.requires_grad_(False).model.multi_modal_projector.requires_grad_(True)
    stage = tmp_path / "stage"
    save_trained_modules(model, processor, stage, {"model_name_or_path": "tiny", "seed": 0})
    index = stage / "trained_modules.json"
    text = index.read_text()
    capsys.readouterr()
    no_frozen = json.dumps({**json.loads(text), "frozen": []})
    for corrupt, message in (
        (text[: len(text) // 2], "is not valid JSON"),
        (no_frozen, "'frozen' is missing or not a JSON object"),
    ):
        index.write_text(corrupt)
        assert cli_main(["merge", str(stage), str(tmp_path / "out")]) == 2
        err = one_error_line(capsys, "towervision merge")
        assert str(index) in err and message in err


def test_missing_local_folders_and_data_are_reported_missing(tmp_path, capsys):
    stage = "outputs/towervision-2b/stage0"
    with pytest.raises(FileNotFoundError, match="no such folder .*`towervision init` writes a stage-0 folder"):
        check_model_folder(stage)
    check_model_folder("Unbabel/Tower-Plus-2B")  # may be a Hub id: left to the Hub
    assert cli_main(["merge", str(tmp_path / "stage1"), str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'stage1'}: no such folder" in one_error_line(capsys, "towervision merge")
    assert cli_main(["eval", "commute", "--model", stage, "--data", "absent", "--output-dir", str(tmp_path)]) == 2
    assert f"{stage}: no such folder" in one_error_line(capsys, "towervision eval commute")
    assert (
        cli_main(
            [
                "train",
                "tiny/stage1_projector.yaml",
                "--model_name_or_path",
                stage,
                "--output_dir",
                str(tmp_path / "run"),
                "--report_to",
                "none",
            ]
        )
        == 2
    )
    assert f"{stage}: no such folder" in one_error_line(capsys, "towervision train")
    typo = tmp_path / "comute"
    assert cli_main(["eval", "commute", "--model", "absent", "--data", str(typo), "--output-dir", str(tmp_path)]) == 2
    assert f"{typo}: no such file or folder" in one_error_line(capsys, "towervision eval commute")
    assert (
        cli_main(
            [
                "train",
                "tiny/stage1_projector.yaml",
                "--model_name_or_path",
                "tiny",
                "--dataset",
                str(typo),
                "--output_dir",
                str(tmp_path / "run"),
                "--report_to",
                "none",
            ]
        )
        == 2
    )
    assert f"{typo}: no such file or folder" in one_error_line(capsys, "towervision train")


def test_a_hub_id_that_cannot_be_fetched_is_one_line(tmp_path, capsys):
    """No network here (or no such repo): the Hub client's error, not its traceback."""
    argv = ["init", "--vision", "my-org/absent-siglip", "--text", "my-org/absent-tower", str(tmp_path / "out")]
    assert cli_main(argv) == 2
    assert "my-org/absent-siglip" in one_error_line(capsys, "towervision init")
    assert not (tmp_path / "out").exists()


def test_eval_of_a_save_trained_only_folder_says_to_merge_it(tmp_path, capsys):
    stage = tmp_path / "stage1"
    stage.mkdir()
    (stage / "trained_modules.json").write_text("{}")
    assert cli_main(["eval", "commute", "--model", str(stage), "--data", "absent", "--output-dir", str(tmp_path)]) == 2
    assert f"`towervision merge {stage} OUT`" in one_error_line(capsys, "towervision eval commute")


def write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def turn(role: str, text: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


@pytest.mark.parametrize("packing", ["false", "true"])
def test_training_on_no_sample_fails_with_the_counts(packing, tmp_path):
    from towervision_hf import train

    untrainable = write_rows(tmp_path / "untrainable.jsonl", [
        {"id": f"q{i}", "messages": [turn("user", "What is this?")]} for i in range(4)
    ])  # fmt: skip
    long = write_rows(tmp_path / "long.jsonl", [
        {"id": f"long{i}", "messages": [turn("user", "Describe. " * (5 + i)), turn("assistant", "A red square.")]}
        for i in range(3)
    ])  # fmt: skip
    common = [
        "tiny/stage2_vision.yaml",
        "--model_name_or_path",
        "tiny",
        "--output_dir",
        str(tmp_path / "run"),
        "--packing",
        packing,
        "--report_to",
        "none",
        "--untrainable",
        "skip",
    ]
    with pytest.raises(ValueError, match=r"no sample to train on: of 4 samples, 4 would train on nothing"):
        train.build_trainer(*train.parse_args([*common, "--dataset", untrainable]))
    message = r"of 3 samples, 3 longer than max_length=16 \(the longest, sample 'long2', is \d+ tokens"
    with pytest.raises(ValueError, match=message):
        train.build_trainer(*train.parse_args([*common, "--dataset", long, "--max_length", "16"]))
    assert not (tmp_path / "run").exists()


def test_the_newer_transformers_notice_prints_once_for_every_copy_of_the_remote_code(tmp_path, caplog):
    """Remote code loads `configuration_towervision.py` once per file that imports it, each copy its own module."""
    import importlib
    import sys

    from towervision_hf.model import configuration_towervision, tiling_towervision

    for index in range(3):
        package = tmp_path / f"remote_copy_{index}"
        package.mkdir()
        (package / "__init__.py").write_text("")
        for module in (configuration_towervision, tiling_towervision):
            shutil.copy(module.__file__, package)
    sys.path.insert(0, str(tmp_path))
    try:
        copies = [importlib.import_module(f"remote_copy_{index}.configuration_towervision") for index in range(3)]
    finally:
        sys.path.remove(str(tmp_path))
    with caplog.at_level("WARNING"):
        for copy in copies:
            copy.check_transformers_version("5.99.0")
    notices = [record for record in caplog.records if "transformers 5.99.0 is newer and untested" in record.message]
    assert len(notices) == 1
