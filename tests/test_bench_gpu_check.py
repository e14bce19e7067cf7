"""`bench/gpu_check.py --device cpu --tiny`: the GPU check's parts at the tiny geometry on CPU, so that the one command
meant for a lent GPU keeps running (engines need a GPU and are skipped)."""

import importlib.util
import json
from pathlib import Path

import pytest


GPU_CHECK = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_runs_every_part_on_cpu_at_the_tiny_geometry(tmp_path):
    pytest.importorskip("bitsandbytes", reason="the qlora extra (bitsandbytes) is not installed")
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--device", "cpu", "--tiny", "--steps", "1", "--workdir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["train"]) == [
        f"{attention}/{layout}"
        for attention in ("towervision_reference_flash_varlen", "eager")
        for layout in ("padded", "packed")
    ]
    assert all(result["tokens/s"] > 0 for result in results["train"].values())
    assert results["qlora"]["4-bit linear layers"] == 14 and len(results["qlora"]["losses"]) == 2
    assert results["engines"] == {"skipped": "cpu"}
    assert results["generate"]["same tokens"] and results["generate"]["prefill logits max abs difference"] < 1e-3
