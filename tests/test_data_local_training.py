"""Local data written by our tools trains as written, from any working folder: the `data sample` output (media in a
sibling `media/` folder) and a `data translate` output (data.jsonl, media/, report.json) given to `towervision
train --dataset` as paths relative to another working folder."""

import json
import os
from pathlib import Path

import pytest

from towervision_hf import train
from towervision_hf.data.cli import main as data_main


@pytest.fixture(scope="module")
def written(tmp_path_factory, tiny_tower):  # noqa: F811
    root = tmp_path_factory.mktemp("written")
    assert data_main(["sample", "--out", str(root / "sample")]) == 0
    code = data_main(
        [
            "translate",
            "--source",
            str(root / "sample" / "stage2"),
            "--langs",
            "de,ko",
            "--model",
            tiny_tower,
            "--backend",
            "transformers",
            "--max-new-tokens",
            "4",
            "--limit",
            "6",
            "--out",
            str(root / "translated"),
        ]
    )
    assert code == 0 and (root / "translated" / "report.json").is_file()
    return root


@pytest.mark.slow
@pytest.mark.parametrize("data", ["sample/stage2/data.jsonl", "sample/stage2", "translated"])
def test_local_data_written_by_our_tools_trains_from_another_working_folder(written, tmp_path, monkeypatch, data):
    text = (written / data / "data.jsonl" if (written / data).is_dir() else written / data).read_text()
    assert '"path": "/' not in text and ('"path": "../media/' in text or '"path": "media/' in text)  # as written
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = [
        "tiny/stage2_vision.yaml",
        "--model_name_or_path",
        "tiny",
        "--output_dir",
        str(tmp_path / "out"),
        "--dataset",
        os.path.relpath(written / data),
        "--max_steps",
        "1",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
    ]
    trainer = train.run(argv)
    packed = [row for pack in trainer.train_dataset for row in pack["packed_rows"]]
    assert len(packed) == len(text.splitlines())  # every row, none skipped; report.json is no row
    assert all(Path(entry["path"]).is_file() for row in packed for entry in row["images"] + row["videos"])
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["global_step"] == 1 and summary["packing"]["samples"] >= 1
    assert summary["skipped_over_length"] == summary["skipped_untrainable"] == 0
