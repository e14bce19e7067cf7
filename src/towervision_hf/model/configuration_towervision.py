# Copyright 2026 The towervision-hf authors. Licensed under the Apache License, Version 2.0.
"""TowerVision configuration: SigLIP(2) vision tower + 2-layer MLP projector + Tower+ (Gemma2) language model."""

import transformers
from packaging import version
from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto import CONFIG_MAPPING
from transformers.utils import logging

from .tiling_towervision import IMAGE_ASPECT_RATIOS, default_grid_pinpoints


# One logger for every copy of this module (remote code runs it once per file that imports it): warnings once.
logger = logging.get_logger("towervision")

# The transformers releases this code is tested against: the oldest supported one and the newest tested minor series
# (CI load-checks the remote code under both and under the newest release of the day).
MIN_TRANSFORMERS_VERSION = "5.10.1"
NEWEST_TESTED_TRANSFORMERS_SERIES = "5.24"


def check_transformers_version(installed: str = transformers.__version__) -> None:
    """Fail clearly below `MIN_TRANSFORMERS_VERSION`; warn once above the newest tested minor series.

    Runs when this module is imported, i.e. before any TowerVision class is built from a checkpoint.

    Raises:
        ImportError: naming the installed version, the supported range and the fix.
    """
    supported = f"{MIN_TRANSFORMERS_VERSION} to {NEWEST_TESTED_TRANSFORMERS_SERIES}.x"
    installed_version = version.parse(installed)
    if installed_version < version.parse(MIN_TRANSFORMERS_VERSION):
        raise ImportError(
            f"TowerVision's code supports transformers {supported}, but transformers {installed} is installed. "
            "Upgrade it with: pip install -U transformers"
        )
    if installed_version.release[:2] > version.parse(NEWEST_TESTED_TRANSFORMERS_SERIES).release[:2]:
        logger.warning_once(
            f"TowerVision's code is tested with transformers {supported}; transformers {installed} is newer and "
            "untested. It runs, but if its results look wrong, please report it with the transformers version."
        )


check_transformers_version()


# SigLIP2-so400m/14@384 with its last encoder layer dropped and no pooling head, as in the released checkpoints:
# `vision_feature_layer=-1` on 26 layers is the original tower's penultimate layer (LLaVA's
# `mm_vision_select_layer=-2`).
SO400M_VISION_DEFAULTS = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 26,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "vision_use_head": False,
}

# Tower+ 2B (Gemma2-2B shape); vocabulary of 256000 plus `<image>` (256000) and `<video>` (256001).
TOWER_PLUS_2B_TEXT_DEFAULTS = {
    "model_type": "gemma2",
    "vocab_size": 256002,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "max_position_embeddings": 8192,
    "final_logit_softcapping": 30.0,
    "attn_logit_softcapping": 50.0,
    "hidden_activation": "gelu_pytorch_tanh",
    "pad_token_id": 0,
    "bos_token_id": 2,
    "eos_token_id": 107,
}

TOWER_PLUS_9B_TEXT_DEFAULTS = {
    **TOWER_PLUS_2B_TEXT_DEFAULTS,
    "hidden_size": 3584,
    "intermediate_size": 14336,
    "num_hidden_layers": 42,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
}

PRESETS = {
    "towervision-2b": {"text_config": TOWER_PLUS_2B_TEXT_DEFAULTS},
    "towervision-9b": {"text_config": TOWER_PLUS_9B_TEXT_DEFAULTS},
}


def _as_sub_config(value, defaults: dict, name: str) -> PretrainedConfig:
    if value is None:
        value = dict(defaults)
    if isinstance(value, dict):
        value = dict(value)
        model_type = value.pop("model_type", defaults["model_type"])
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"{name} has unknown model_type {model_type!r}")
        value = CONFIG_MAPPING[model_type](**value)
    if not isinstance(value, PretrainedConfig):
        raise ValueError(f"{name} must be a dict or a PretrainedConfig, got {type(value).__name__}")
    return value


class TowerVisionConfig(PretrainedConfig):
    r"""
    Configuration of a TowerVision / TowerVideo model (LLaVA-NeXT layout with LLaVA-OneVision video handling).

    Args:
        vision_config (`dict` or `PretrainedConfig`, *optional*):
            Vision tower config (`siglip_vision_model`). Defaults to SigLIP2-so400m/14@384 with 26 layers, no head.
        text_config (`dict` or `PretrainedConfig`, *optional*):
            Language model config (`gemma2`). Defaults to Tower+ 2B.
        image_token_id (`int`, *optional*, defaults to 256000):
            Id of the `<image>` placeholder token.
        video_token_id (`int`, *optional*, defaults to 256001):
            Id of the `<video>` placeholder token; `None` for image-only checkpoints.
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation between the two projector layers.
        multimodal_projector_bias (`bool`, *optional*, defaults to `True`):
            Whether the projector's linear layers have a bias.
        vision_feature_layer (`int` or `list[int]`, *optional*, defaults to -1):
            Vision hidden state(s) fed to the projector (index into the tower's hidden states, before
            `post_layernorm`); a list concatenates several layers on the channel axis.
        vision_feature_select_strategy (`str`, *optional*, defaults to `"full"`):
            `"full"` keeps every patch (SigLIP has no CLS token); `"default"` drops the first one.
        image_aspect_ratio (`str`, *optional*, defaults to `"anyres"`):
            How an image is encoded, with the names of the LLaVA(-NeXT) code base. `"anyres"`: a sample with one image
            is tiled (global thumbnail + unpadded tile grid + one newline per feature row), each image of a sample with
            several images is one tile + one newline (LLaVA-OneVision). `"square"` (the image squashed to one tile) and
            `"pad"` (padded to a square with the mean colour, then resized to one tile): every image is encoded once,
            `patches_per_side**2` features and no newline (LLaVA's `flat` merge), as in the TowerVision paper's
            projector pretraining (§2.2: 384 px, 729 tokens).
        max_tiles (`int`, *optional*, defaults to 6):
            Largest number of tiles an image may be split into (plus the global thumbnail) with `"anyres"`.
        tile_size (`int`, *optional*):
            Side of a tile in pixels; defaults to the vision tower's `image_size`.
        image_grid_pinpoints (`list[list[int]]`, *optional*):
            Candidate `[height, width]` canvases; derived from `max_tiles` and `tile_size` when not given.
        use_image_newline (`bool`, *optional*, defaults to `True`):
            Whether a learned newline vector ends each feature row of an image (and each video).
        video_pool_size (`int`, *optional*, defaults to 2):
            Spatial pooling of every video frame's feature map (2 → 2×2 bilinear, ceil).
        num_frames (`int`, *optional*, defaults to 32):
            Frames sampled per video by default.
        scale_image_features (`bool`, *optional*, defaults to `True`):
            Multiply projected image/video features (newline rows included) by `sqrt(text_config.hidden_size)`
            before merging them with the text embeddings. The released checkpoints were trained this way (the
            Gemma2 normalizer scaled all of `inputs_embeds` before transformers 5.4); transformers' own
            LlavaNext/LlavaOnevision now merge them unscaled (`False`).
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Tie the LM head to the input embeddings, as Gemma2 does.
    """

    model_type = "towervision"
    sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        image_token_id=256000,
        video_token_id=256001,
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_aspect_ratio="anyres",
        max_tiles=6,
        tile_size=None,
        image_grid_pinpoints=None,
        use_image_newline=True,
        video_pool_size=2,
        num_frames=32,
        scale_image_features=True,
        tie_word_embeddings=True,
        **kwargs,
    ):
        self.vision_config = _as_sub_config(vision_config, SO400M_VISION_DEFAULTS, "vision_config")
        self.text_config = _as_sub_config(text_config, TOWER_PLUS_2B_TEXT_DEFAULTS, "text_config")
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.projector_hidden_act = projector_hidden_act
        self.multimodal_projector_bias = multimodal_projector_bias
        self.vision_feature_layer = vision_feature_layer
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.image_aspect_ratio = image_aspect_ratio
        self.max_tiles = max_tiles
        self.tile_size = tile_size if tile_size is not None else self.vision_config.image_size
        self.image_grid_pinpoints = (
            [list(p) for p in image_grid_pinpoints]
            if image_grid_pinpoints is not None
            else default_grid_pinpoints(max_tiles, self.tile_size)
        )
        self.use_image_newline = use_image_newline
        self.video_pool_size = video_pool_size
        self.num_frames = num_frames
        self.scale_image_features = scale_image_features
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self._validate()

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "TowerVisionConfig":
        """Config of a released model size: `"towervision-2b"` or `"towervision-9b"` (keyword overrides allowed)."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **kwargs})

    @property
    def patches_per_side(self) -> int:
        return self.tile_size // self.vision_config.patch_size

    def _validate(self):
        vision, text = self.vision_config, self.text_config
        if self.tile_size != vision.image_size:
            raise ValueError(
                f"tile_size={self.tile_size} must equal vision_config.image_size={vision.image_size}: "
                "the vision tower's position embeddings are fixed to one resolution"
            )
        for pinpoint in self.image_grid_pinpoints:
            if len(pinpoint) != 2 or pinpoint[0] % self.tile_size or pinpoint[1] % self.tile_size:
                raise ValueError(
                    f"image_grid_pinpoints entry {pinpoint} is not a [height, width] multiple of "
                    f"tile_size={self.tile_size}"
                )
        if self.vision_feature_select_strategy not in ("full", "default"):
            raise ValueError(
                "vision_feature_select_strategy must be 'full' or 'default', "
                f"got {self.vision_feature_select_strategy!r}"
            )
        if self.image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(
                f"image_aspect_ratio must be one of {IMAGE_ASPECT_RATIOS}, got {self.image_aspect_ratio!r}"
            )
        layers = (
            self.vision_feature_layer if isinstance(self.vision_feature_layer, list) else [self.vision_feature_layer]
        )
        num_states = vision.num_hidden_layers + 1  # embeddings + one per encoder layer
        for layer in layers:
            if not -num_states <= layer < num_states:
                raise ValueError(
                    f"vision_feature_layer {layer} is out of range for a vision tower with "
                    f"{vision.num_hidden_layers} layers"
                )
        for name in ("image_token_id", "video_token_id"):
            token_id = getattr(self, name)
            if token_id is not None and not 0 <= token_id < text.vocab_size:
                raise ValueError(f"{name}={token_id} is outside the text vocabulary (vocab_size={text.vocab_size})")
        if self.image_token_id is not None and self.image_token_id == self.video_token_id:
            raise ValueError(f"image_token_id and video_token_id must differ, both are {self.image_token_id}")
        if self.video_pool_size < 1:
            raise ValueError(f"video_pool_size must be >= 1, got {self.video_pool_size}")


__all__ = ["TowerVisionConfig"]
