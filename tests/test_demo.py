"""`towervision demo`: the three tiny stages on the embedded sample, from an unrelated working directory."""

import json
import re

import pytest

from towervision_hf.cli import main as cli_main


@pytest.mark.slow
def test_demo_runs_three_stages_and_generates(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # recipes and sample come from the package, not from the repository
    assert cli_main(["demo", "--max-steps", "2", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    output_dir = tmp_path / "outputs" / "demo"
    assert f"outputs: {output_dir}" in out
    assert re.search(r"^image \(\d+x\d+\) -> ", out, re.M) and re.search(r"^video \(4 frames\) -> ", out, re.M)
    table = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("stage")}
    assert set(table) >= {"stage1_projector", "stage2_vision", "stage3_video"}
    assert all(table[stage][1] == "2" for stage in ("stage1_projector", "stage2_vision", "stage3_video"))
    assert table["stage1_projector"][-5:] == ["0", "/", "2,112", "/", "0"]  # the projector only
    for stage in ("stage1", "stage2", "stage3"):
        assert (output_dir / stage / "model.safetensors").is_file()
    assert json.loads((output_dir / "stage1" / "train_summary.json").read_text())["vision_feature_cache"]["misses"] > 0
