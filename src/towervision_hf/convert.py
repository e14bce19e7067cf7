"""`towervision convert` and `towervision export`: move checkpoints between the released format and TowerVision.

The released TowerVision / TowerVideo checkpoints are native transformers `llava_next` / `llava_onevision`
folders exported with transformers 4.52. Run as they are under transformers >= 5.4, they no longer compute what
was trained (official-checkpoints.md §12): the Gemma2 `sqrt(hidden_size)` normalizer moved into the embedding
layer, so merged image features are no longer scaled, the final-logit softcap is not applied by the Llava head,
and transformers 5 reads the top-level `tie_word_embeddings: false` and leaves the (absent) LM head random.

`convert` turns such a folder into a TowerVision `trust_remote_code` checkpoint that reproduces the trained
behaviour (`scale_image_features=True`, softcap, deliberate tying), with every tensor copied bit for bit.
`export` goes the other way, for tools that only know the native classes (see `NORMALIZER_CAVEAT`).
"""

import argparse
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from .configuration_towervision import TowerVisionConfig


SOURCE_MODEL_TYPES = ("llava_next", "llava_onevision")
EMBED_KEY = "model.language_model.embed_tokens.weight"
HEAD_KEY = "lm_head.weight"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# On-disk names of llava checkpoints -> TowerVision (= transformers 5.x LlavaNext) in-memory names. First match
# wins. Covers the layout written by transformers 4.x and by 5.x `save_pretrained` (which reverses its own
# renaming: `language_model.model.*`, `vision_tower.vision_model.*`, ...) and the 5.x in-memory layout itself.
SOURCE_KEY_RULES = [
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^(?:model\.)?language_model\.model\.", "model.language_model."),
    (r"^(?:model\.)?language_model\.", "model.language_model."),
    (r"^(?:model\.)?vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^(?:model\.)?vision_tower\.", "model.vision_tower."),
    (r"^(?:model\.)?multi_modal_projector\.", "model.multi_modal_projector."),
    (r"^(?:model\.)?image_newline$", "model.image_newline"),
    (r"^lm_head\.", "lm_head."),
]

NORMALIZER_CAVEAT = """\
Caveat: this model was trained with its projected image/video features (image-newline rows included) multiplied
by sqrt(text hidden_size), because Gemma2 applied that normalizer to the whole inputs_embeds before transformers
5.4. transformers >= 5.4 applies it inside the embedding layer instead, so its native LlavaNext / LlavaOnevision
classes merge image features {factor:.4g}x too small and answer differently (the LM head there also skips the
final-logit softcap, which changes log-probs but not greedy outputs). This export is faithful under transformers
< 5.4 and under serving stacks that scale merged features like Gemma2 did. With transformers >= 5.4, load the
TowerVision checkpoint instead (AutoModelForImageTextToText.from_pretrained(..., trust_remote_code=True)) or
re-convert this folder with `towervision convert`. For pixel-exact preprocessing, load the native processor with
AutoProcessor.from_pretrained(folder, backend="pil")."""


def rename_source_key(key: str) -> str:
    """The TowerVision in-memory name of a llava checkpoint tensor name; `ValueError` for a name it cannot place."""
    for pattern, replacement in SOURCE_KEY_RULES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    raise ValueError(f"checkpoint tensor {key!r} does not belong to a llava_next / llava_onevision model")


def load_safetensors_dir(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint folder, with their on-disk names and dtypes."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        raise ValueError(f"{directory} holds no model.safetensors or model.safetensors.index.json")
    state_dict = {}
    for shard in shards:
        state_dict.update(load_file(directory / shard))
    return state_dict


def rename_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every tensor with `rename_source_key`; two source names landing on one target is an error."""
    renamed = {}
    for key, tensor in state_dict.items():
        target = rename_source_key(key)
        if target in renamed:
            raise ValueError(f"checkpoint tensors collide on {target!r} (one of them is {key!r})")
        renamed[target] = tensor
    return renamed


def resolve_lm_head(state_dict: dict[str, torch.Tensor], text_ties: bool) -> tuple[bool, str]:
    """Decide whether the converted model ties its LM head; drops `lm_head.weight` from `state_dict` when it does.

    Returns `(tie_word_embeddings, message)`. A missing head is tied only when the source's `text_config` ties
    it (what transformers 4.x, which ignores the top-level flag, did when it saved the release); a head equal to
    the embeddings is tied; a different head is kept.
    """
    if EMBED_KEY not in state_dict:
        raise ValueError(f"the checkpoint has no input embeddings ({EMBED_KEY!r} after renaming)")
    head = state_dict.get(HEAD_KEY)
    if head is None:
        if not text_ties:
            raise ValueError(
                "the checkpoint holds no lm_head.weight and its text_config does not tie the head to the input "
                "embeddings: the language-model head is missing"
            )
        return True, (
            "The source holds no lm_head.weight: transformers 4.x saved it tied to the input embeddings through "
            "text_config.tie_word_embeddings=true (it ignores the top-level tie_word_embeddings=false, which "
            "transformers 5 reads and would then leave the head randomly initialised). Tying lm_head to "
            "model.language_model.embed_tokens deliberately: tie_word_embeddings=True."
        )
    if head.shape == state_dict[EMBED_KEY].shape and torch.equal(head, state_dict[EMBED_KEY]):
        del state_dict[HEAD_KEY]
        return True, "lm_head.weight equals the input embeddings: tied (tie_word_embeddings=True), stored once."
    return False, "lm_head.weight differs from the input embeddings: kept as a separate head (tie_word_embeddings=False)."


def max_tiles_of(pinpoints: list[list[int]], tile_size: int) -> int:
    """Largest number of tiles among `[height, width]` pinpoints."""
    return max((height // tile_size) * (width // tile_size) for height, width in pinpoints)


def towervision_config_from_release(source, tie_word_embeddings: bool, video_token_id: int | None) -> TowerVisionConfig:
    """Map a loaded `LlavaNextConfig` / `LlavaOnevisionConfig` onto a `TowerVisionConfig`.

    Every field that shapes the computation is carried over. `scale_image_features` is True for Gemma-family
    language models (what the release was trained with) unless the source records the switch itself, as
    `towervision export` does.
    """
    if source.model_type not in SOURCE_MODEL_TYPES:
        raise ValueError(f"source model_type {source.model_type!r} is not one of {SOURCE_MODEL_TYPES}")
    vision_config = source.vision_config.to_dict()
    text_config = source.text_config.to_dict()
    # `architectures: ["LlavaGemma2ForCausalLM"]` names the training fork's class; it misleads tools (vLLM).
    for key in ("architectures", "_name_or_path"):
        text_config.pop(key, None)
        vision_config.pop(key, None)
    text_config["tie_word_embeddings"] = tie_word_embeddings
    tile_size = vision_config["image_size"]
    pinpoints = [list(p) for p in source.image_grid_pinpoints]
    scale_default = source.text_config.model_type in ("gemma", "gemma2")
    return TowerVisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=source.image_token_id,
        video_token_id=video_token_id,
        projector_hidden_act=source.projector_hidden_act,
        multimodal_projector_bias=getattr(source, "multimodal_projector_bias", True),
        vision_feature_layer=source.vision_feature_layer,
        vision_feature_select_strategy=source.vision_feature_select_strategy,
        max_tiles=max_tiles_of(pinpoints, tile_size),
        tile_size=tile_size,
        image_grid_pinpoints=pinpoints,
        use_image_newline=getattr(source, "use_image_newline_parameter", True),
        scale_image_features=getattr(source, "scale_image_features", scale_default),
        tie_word_embeddings=tie_word_embeddings,
    )


def load_release_config(directory: Path):
    """The source folder's config as transformers' own config class (absent keys take the class defaults)."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{directory} has no config.json")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in SOURCE_MODEL_TYPES:
        raise ValueError(
            f"{config_file} has model_type {model_type!r}; `towervision convert` reads {' / '.join(SOURCE_MODEL_TYPES)} "
            "checkpoints (utter-project/TowerVision-*, TowerVideo-*)"
        )
    return AutoConfig.from_pretrained(directory)
