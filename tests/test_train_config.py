"""`TowerVisionSFTConfig`: our stage options on TRL's `SFTConfig`, and what its `__post_init__` sets for training."""

import pytest

from towervision_hf.training import TowerVisionSFTConfig


def test_post_init_hands_packing_to_ours_and_keeps_the_raw_rows(tmp_path):
    config = TowerVisionSFTConfig(output_dir=str(tmp_path), packing=True, use_cpu=True, report_to="none")
    assert config.pack_samples and not config.packing  # TRL refuses to pack vision rows: ours packs
    assert config.remove_unused_columns is False and config.dataset_kwargs["skip_prepare_dataset"] is True
    assert config.accelerator_config.dispatch_batches is False
    plain = TowerVisionSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert not plain.pack_samples and not plain.packing


def test_module_learning_rates_and_layout(tmp_path):
    config = TowerVisionSFTConfig(
        output_dir=str(tmp_path), vision_lr=0.0, language_lr=2e-6, max_tiles=2, use_cpu=True, report_to="none"
    )
    assert config.module_learning_rates == {"vision": 0.0, "projector": None, "language": 2e-6}
    assert config.layout == {"max_tiles": 2}


@pytest.mark.parametrize("option", [{"save_trained_only": True}, {"vision_feature_cache": "cache"}])
def test_options_that_need_whole_parameters_are_refused_when_sharding_is_configured(tmp_path, monkeypatch, option):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="FSDP / ZeRO-3"):
        TowerVisionSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **option)


def test_the_light_option_choices_match_the_model_and_the_collator():
    """`training.arguments` spells the choices out so `towervision train --help` needs no torch: they must stay the
    model's and the collator's."""
    from towervision_hf.model import tiling_towervision
    from towervision_hf.training import arguments, collator

    assert arguments.IMAGE_ASPECT_RATIOS == tiling_towervision.IMAGE_ASPECT_RATIOS
    assert collator.OVER_LENGTH_POLICIES is arguments.OVER_LENGTH_POLICIES
