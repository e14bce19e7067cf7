"""`bench/scale.py --small`: the real-scale pipeline (stand-ins, init, export, convert, generate, push, LoRA, stage 1)
at toy widths, so that it keeps running."""

import importlib.util
import json
from pathlib import Path

import pytest


SCALE = Path(__file__).resolve().parents[1] / "bench" / "scale.py"


@pytest.mark.slow
def test_scale_bench_small_runs_every_step(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("scale", SCALE)
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    assert scale.main(["--small", "--workdir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "scale.json").read_text())
    assert list(results) == list(scale.STEPS)
    assert all(step["wall s"] > 0 and step["peak RSS GiB"] > 0 for step in results.values())
    assert results["generate"]["same tokens"] and results["stage1"]["cache hits"] > 0
    assert "load check passed" in capsys.readouterr().out
