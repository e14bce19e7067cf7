import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from towervision_hf import TowerVisionConfig
from towervision_hf.checkpoint.compose import build_tiny
from towervision_hf.model import configuration_towervision
from towervision_hf.model.configuration_towervision import (
    MIN_TRANSFORMERS_VERSION,
    NEWEST_TESTED_TRANSFORMERS_SERIES,
    check_transformers_version,
)
from towervision_hf.model.tiling_towervision import default_grid_pinpoints


RELEASE_PINPOINTS = [
    [384, 384],
    [384, 768],
    [768, 384],
    [384, 1152],
    [1152, 384],
    [384, 1536],
    [768, 768],
    [1536, 384],
    [384, 1920],
    [1920, 384],
    [384, 2304],
    [768, 1152],
    [1152, 768],
    [2304, 384],
]


def test_default_pinpoints_are_the_release_pinpoints_in_order():
    assert default_grid_pinpoints(6, 384) == RELEASE_PINPOINTS
    assert TowerVisionConfig().image_grid_pinpoints == RELEASE_PINPOINTS


def test_defaults_describe_towervision_2b():
    config = TowerVisionConfig()
    assert config.vision_config.model_type == "siglip_vision_model"
    assert (config.vision_config.num_hidden_layers, config.vision_config.vision_use_head) == (26, False)
    assert config.text_config.model_type == "gemma2"
    assert config.text_config.final_logit_softcapping == 30.0
    assert config.text_config.attn_logit_softcapping == 50.0
    assert config.vision_feature_select_strategy == "full"
    assert (config.max_tiles, config.tile_size, config.patches_per_side) == (6, 384, 27)
    assert config.scale_image_features is True
    assert TowerVisionConfig.from_preset("towervision-9b").text_config.hidden_size == 3584


def test_round_trip_through_save_pretrained(tmp_path, tiny_config):
    tiny_config.save_pretrained(tmp_path)
    loaded = TowerVisionConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == tiny_config.to_dict()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"image_token_id": 10**6}, "image_token_id"),
        ({"video_token_id": -1}, "video_token_id"),
        ({"tile_size": 64}, "tile_size"),
        ({"vision_feature_layer": 7}, "vision_feature_layer"),
        ({"vision_feature_select_strategy": "cls"}, "vision_feature_select_strategy"),
        ({"image_grid_pinpoints": [[56, 60]]}, "image_grid_pinpoints"),
        ({"image_aspect_ratio": "crop"}, "image_aspect_ratio"),
    ],
)
def test_inconsistent_config_is_rejected_at_construction(tiny_tokenizer, overrides, message):
    from towervision_hf.checkpoint.tiny import tiny_config

    with pytest.raises(ValueError, match=message):
        tiny_config(tiny_tokenizer, **overrides)


def test_unsupported_transformers_is_refused_with_the_version_the_range_and_the_fix():
    with pytest.raises(ImportError) as error:
        check_transformers_version("5.9.0")
    message = str(error.value)
    assert "transformers 5.9.0 is installed" in message
    assert f"{MIN_TRANSFORMERS_VERSION} to {NEWEST_TESTED_TRANSFORMERS_SERIES}.x" in message
    assert "pip install -U transformers" in message


def test_newer_than_tested_transformers_warns_once_and_runs(monkeypatch):
    warnings = []
    monkeypatch.setattr(configuration_towervision.logger, "warning_once", warnings.append)
    check_transformers_version(MIN_TRANSFORMERS_VERSION)
    check_transformers_version(f"{NEWEST_TESTED_TRANSFORMERS_SERIES}.9")
    assert warnings == []
    major, minor = NEWEST_TESTED_TRANSFORMERS_SERIES.split(".")
    check_transformers_version(f"{major}.{int(minor) + 1}.0")
    assert len(warnings) == 1 and f"transformers {major}.{int(minor) + 1}.0 is newer and untested" in warnings[0]


def test_newest_tested_series_is_the_locked_transformers():
    lock = (Path(__file__).parents[1] / "requirements" / "lock.txt").read_text()
    locked = re.search(r"^transformers==(\S+)$", lock, re.MULTILINE).group(1)
    assert locked.startswith(NEWEST_TESTED_TRANSFORMERS_SERIES + ".")
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    major, minor = NEWEST_TESTED_TRANSFORMERS_SERIES.split(".")
    assert f'"transformers>=5.23,<{major}.{int(minor) + 1}"' in pyproject


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("TOWERVISION_TRANSFORMERS_452"),
    reason="set TOWERVISION_TRANSFORMERS_452 to a `pip install --target` folder holding transformers 4.52",
)
@pytest.mark.parametrize("auto_class", ["AutoConfig", "AutoModelForImageTextToText"])
def test_checkpoint_under_too_old_transformers_fails_with_the_fix(tmp_path, auto_class):
    """A checkpoint's remote code under transformers 4.52 says what is wrong instead of crashing inside it.

    (`AutoProcessor` is not checked here: 4.x copies only the direct relative imports of a *local* folder's module, so
    it stops at the missing nested `fetching_towervision.py` before any code runs; from the Hub, where 4.x fetches
    them all, the processor files import the configuration first and give the same error.)"""
    checkpoint = tmp_path / "tiny"
    model, processor = build_tiny()
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    load = (
        f"from transformers import {auto_class}; "
        f"{auto_class}.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)"
    )
    env = {**os.environ, "PYTHONPATH": os.environ["TOWERVISION_TRANSFORMERS_452"], "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", load], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: TowerVision's code supports transformers")
    assert "transformers 4.52.4 is installed" in last_line and "pip install -U transformers" in last_line
