import pytest

from towervision_hf import TowerVisionConfig
from towervision_hf.tiling_towervision import default_grid_pinpoints


RELEASE_PINPOINTS = [[384, 384], [384, 768], [768, 384], [384, 1152], [1152, 384], [384, 1536], [768, 768],
                     [1536, 384], [384, 1920], [1920, 384], [384, 2304], [768, 1152], [1152, 768], [2304, 384]]


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
    from towervision_hf.tiny import tiny_config

    with pytest.raises(ValueError, match=message):
        tiny_config(tiny_tokenizer, **overrides)
