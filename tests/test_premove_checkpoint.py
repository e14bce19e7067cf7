"""A checkpoint staged for the Hub before the model/ + checkpoint/ move loads and generates the same after it."""

import shutil
from pathlib import Path

import torch

from towervision_hf.hub import load_check


FIXTURE = Path(__file__).resolve().parent / "fixtures" / "premove_tiny"


def test_checkpoint_staged_before_the_move_loads_and_generates_the_same(tmp_path):
    staged = Path(shutil.copytree(FIXTURE, tmp_path / "staged"))
    # the current in-repo classes on the fixture's weights ...
    reference = load_check.reference_outputs(staged)
    # ... against the fixture's own (pre-move) remote code, in a subprocess where towervision_hf is not importable
    result = load_check.run_load_check(staged, reference=reference)
    assert result.passed, result.summary()
    assert result.report["towervision_hf_importable"] is False
    assert set(result.max_logit_diff) == {"image", "video"}
    assert torch.equal(result.remote["image.generated"], reference["image.generated"])
    assert torch.equal(result.remote["video.generated"], reference["video.generated"])
