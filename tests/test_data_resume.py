"""Shards and resume of `data translate / synth / filter`: a run killed at a random point and re-run writes exactly
the rows of an uninterrupted run, and N shards together are one run, row for row."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_helpers import ChatServer, FakeKiwi, SlowTranslator, question_rows
from datasets import Dataset

from towervision_hf.data import quality, translate
from towervision_hf.data.cli import main
from towervision_hf.data.jsonl import read_jsonl, write_jsonl
from towervision_hf.data.resume import shard_range


TESTS = Path(__file__).resolve().parent
DRIVER = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from data_helpers import FakeKiwi, SlowTranslator
from towervision_hf.data import quality, translate
FakeKiwi.delay = 0.05
translate.make_backend = lambda *args, **kwargs: SlowTranslator(delay=0.05)
quality.CometKiwiScorer = FakeKiwi
from towervision_hf.data.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def doubles(monkeypatch):
    monkeypatch.setattr(translate, "make_backend", lambda *args, **kwargs: SlowTranslator())
    monkeypatch.setattr(quality, "CometKiwiScorer", FakeKiwi)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """`questions`: 16 VQA rows (21 questions); `translated`: their translation into German and French."""
    root = tmp_path_factory.mktemp("inputs")
    write_jsonl(question_rows(16), root / "questions")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(translate, "make_backend", lambda *args, **kwargs: SlowTranslator())
        assert (
            main(
                [
                    "translate",
                    "--source",
                    str(root / "questions"),
                    "--langs",
                    "de,fr",
                    "--model",
                    "tower",
                    "--out",
                    str(root / "translated"),
                ]
            )
            == 0
        )
    return root


@pytest.fixture(scope="module")
def server():
    with ChatServer(latency=0.03) as server:
        yield server


def command_line(command, inputs, server, out, *options):
    if command == "translate":
        argv = ["translate", "--source", str(inputs / "questions"), "--langs", "de,fr", "--model", "tower"]
    elif command == "synth":
        argv = [
            "synth",
            "--source",
            str(inputs / "questions"),
            "--endpoint",
            server.endpoint,
            "--model",
            "m",
            "--concurrency",
            "2",
        ]
    else:
        argv = ["filter", str(inputs / "translated"), "--threshold", "0.5"]
    return [*argv, "--chunk-size", "2", "--out", str(out), *options]


def written(out) -> dict:
    """The bytes of every JSONL file and the names of the media of an output folder."""
    files = {path.name: path.read_bytes() for path in sorted(Path(out).glob("*.jsonl"))}
    return {**files, "media": sorted(path.name for path in (Path(out) / "media").iterdir())}


def counts(report: dict) -> dict:
    return {
        source: (counts["kept"], counts["skipped"], counts["languages"])
        for source, counts in report["sources"].items()
    }


def load_report(path) -> dict:
    return json.loads(Path(path).read_text())


def test_shards_split_like_datasets_shard():
    for count in (4, 5, 16, 17):
        dataset = Dataset.from_dict({"index": list(range(count))})
        for num_shards in (1, 3, 4):
            for index in range(num_shards):
                assert list(shard_range(count, num_shards, index)) == dataset.shard(num_shards, index)["index"]
    assert [list(shard_range(1, 3, index)) for index in range(3)] == [[0], [], []]  # datasets refuses empty shards
    with pytest.raises(ValueError, match="--shard-index 3"):
        shard_range(10, 3, 3)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["translate", "synth", "filter"])
def test_a_run_killed_at_a_random_point_and_rerun_writes_the_rows_of_one_run(command, inputs, server, tmp_path):
    assert main(command_line(command, inputs, server, tmp_path / "whole")) == 0
    whole = written(tmp_path / "whole")
    size = sum(len(data) for name, data in whole.items() if name != "media")
    # kill once this many bytes are written: somewhere in the first half, so that chunks (50 ms each) remain
    threshold = random.Random(command).randrange(1, size // 2)
    argv = command_line(command, inputs, server, tmp_path / "killed")
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while (
            process.poll() is None
            and sum(path.stat().st_size for path in (tmp_path / "killed").glob("*.jsonl")) < threshold
        ):
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL  # killed mid-way, not finished
    assert written(tmp_path / "killed") != whole
    assert main(argv) == 0  # the same command again
    assert written(tmp_path / "killed") == whole
    report = load_report(tmp_path / "killed" / "report.json")
    assert counts(report) == counts(load_report(tmp_path / "whole" / "report.json"))
    assert len(report["resume"]["runs"]) == 2 and report["resume"]["runs"][1]["from"] > 0


def test_a_half_written_row_is_cut_off_and_written_again(inputs, tmp_path, monkeypatch, capsys):
    argv = command_line("translate", inputs, None, tmp_path / "out")
    assert main(command_line("translate", inputs, None, tmp_path / "whole")) == 0
    monkeypatch.setattr(translate, "make_backend", lambda *args, **kwargs: SlowTranslator(fail_after=3))
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    data = tmp_path / "out" / "data.jsonl"
    checkpointed = data.read_bytes()
    assert checkpointed.count(b"\n") == 3 * 2 * 2  # three chunks of two rows, each into two languages
    with open(data, "ab") as handle:  # a row of the unfinished chunk and half of the next one
        handle.write(b'{"id": "q6:de", "language": "de"}\n{"id": "q6:fr", "lang')
    monkeypatch.setattr(translate, "make_backend", lambda *args, **kwargs: SlowTranslator())
    assert main(argv) == 0
    assert "discarded 1 rows written after the last checkpoint and a half-written row" in capsys.readouterr().err
    assert written(tmp_path / "out") == written(tmp_path / "whole")
    runs = load_report(tmp_path / "out" / "report.json")["resume"]["runs"]
    assert runs == [
        {"from": 0, "to": 6, "discarded_rows": 0, "half_written_row": False},
        {"from": 6, "to": 16, "discarded_rows": 1, "half_written_row": True},
    ]
    assert main(argv) == 0 and written(tmp_path / "out") == written(tmp_path / "whole")  # finished: nothing redone


def test_a_run_killed_before_its_first_checkpoint_resumes(inputs, tmp_path, monkeypatch):
    argv = command_line("translate", inputs, None, tmp_path / "out")
    assert main(command_line("translate", inputs, None, tmp_path / "whole")) == 0
    monkeypatch.setattr(translate, "make_backend", lambda *args, **kwargs: SlowTranslator(fail_after=0))
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    (tmp_path / "out" / "data.jsonl").write_bytes(b'{"id": "q0:de"}\n{"id": "q0:fr", "lan')  # never checkpointed
    monkeypatch.setattr(translate, "make_backend", lambda *args, **kwargs: SlowTranslator())
    assert main(argv) == 0
    assert written(tmp_path / "out") == written(tmp_path / "whole")


def test_resume_refuses_other_settings_and_files_it_did_not_write(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(command_line("translate", inputs, None, out)) == 0
    before = written(out)
    other = command_line("translate", inputs, None, out)
    other[other.index("de,fr")] = "de,ko"
    assert main(other) == 2
    assert "holds a run with other settings (langs: 'de,fr' -> 'de,ko')" in capsys.readouterr().err
    assert main([*command_line("translate", inputs, None, out), "--num-shards", "2"]) == 2
    assert "written with other settings or shard count" in capsys.readouterr().err
    assert written(out) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.jsonl").write_text('{"id": "mine"}\n')
    assert main(command_line("translate", inputs, None, foreign)) == 2
    assert "data.jsonl exists without its report report.json" in capsys.readouterr().err
    assert (foreign / "data.jsonl").read_text() == '{"id": "mine"}\n'


@pytest.mark.parametrize("command", ["translate", "synth", "filter"])
def test_shards_together_are_one_run_row_for_row(command, inputs, server, tmp_path):
    options = ["--assign", "uniform", "--keep-english", "0.5"] if command == "translate" else []
    assert main(command_line(command, inputs, server, tmp_path / "one", *options)) == 0
    for index in (2, 0, 1):  # any order, e.g. a SLURM array
        assert (
            main(
                command_line(
                    command,
                    inputs,
                    server,
                    tmp_path / "shards",
                    *options,
                    "--num-shards",
                    "3",
                    "--shard-index",
                    str(index),
                )
            )
            == 0
        )
    one, shards = written(tmp_path / "one"), written(tmp_path / "shards")
    for stem in ("data", "rejected") if command == "filter" else ("data",):
        assert b"".join(shards[f"{stem}-{index:05d}-of-00003.jsonl"] for index in range(3)) == one[f"{stem}.jsonl"]
    assert shards["media"] == one["media"]
    one_rows = list(read_jsonl(tmp_path / "one", resolve_media=False))
    assert list(read_jsonl(tmp_path / "shards", resolve_media=False)) == one_rows  # the loader reads them as one
    assert main(["merge", str(tmp_path / "shards")]) == 0
    merged = load_report(tmp_path / "shards" / "report.json")
    assert counts(merged) == counts(load_report(tmp_path / "one" / "report.json")) and merged["shards"] == 3


def test_merge_names_the_shards_left_to_run(inputs, tmp_path, capsys):
    out = tmp_path / "shards"
    assert main([*command_line("translate", inputs, None, out), "--num-shards", "3", "--shard-index", "1"]) == 0
    assert main(["merge", str(out)]) == 2
    assert "shards [0, 2] have no report and shards [] did not finish (of 3)" in capsys.readouterr().err
