"""`towervision convert` / `export` against tiny release-format checkpoints saved by transformers 4.52.

`tests/fixtures/release_llava_*` were written by `scripts/make_release_fixture.py` under transformers 4.52.4:
the checkpoints in the release's exact format, the images, the prompts and the trained behaviour's outputs
(4.52 LlavaNext / LlavaOnevision, eager attention, float32, final-logit softcap applied).
"""

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from towervision_hf.convert import (
    load_release_config,
    load_safetensors_dir,
    rename_source_key,
    rename_state_dict,
    resolve_lm_head,
)


FIXTURES = Path(__file__).parent / "fixtures"
NEXT_DIR = FIXTURES / "release_llava_next"
ONEVISION_DIR = FIXTURES / "release_llava_onevision"


def load_reference(directory: Path) -> tuple[dict, dict]:
    return json.loads((directory / "reference.json").read_text()), load_file(directory / "reference.safetensors")


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    return torch.tanh(logits / cap) * cap


@pytest.mark.parametrize(
    "key, expected",
    [
        # transformers 4.x on-disk layout (the release)
        ("language_model.model.layers.0.self_attn.q_proj.weight", "model.language_model.layers.0.self_attn.q_proj.weight"),
        ("language_model.lm_head.weight", "lm_head.weight"),
        ("vision_tower.vision_model.encoder.layers.1.mlp.fc1.bias", "model.vision_tower.encoder.layers.1.mlp.fc1.bias"),
        ("vision_tower.vision_model.post_layernorm.weight", "model.vision_tower.post_layernorm.weight"),
        ("multi_modal_projector.linear_2.weight", "model.multi_modal_projector.linear_2.weight"),
        ("image_newline", "model.image_newline"),
        # transformers 5.x in-memory layout
        ("model.language_model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
        ("model.vision_tower.embeddings.patch_embedding.weight", "model.vision_tower.embeddings.patch_embedding.weight"),
        ("model.image_newline", "model.image_newline"),
        ("lm_head.weight", "lm_head.weight"),
    ],
)
def test_source_keys_map_to_in_memory_names(key, expected):
    assert rename_source_key(key) == expected


def test_unknown_source_key_is_rejected_by_name():
    with pytest.raises(ValueError, match="model.mm_projector.0.weight"):
        rename_source_key("model.mm_projector.0.weight")


def test_missing_head_is_tied_only_when_text_config_ties_it():
    state_dict = rename_state_dict(load_safetensors_dir(NEXT_DIR))
    assert not any("lm_head" in key for key in state_dict)  # 4.52 saved no head
    tied, message = resolve_lm_head(dict(state_dict), text_ties=True)
    assert tied and "no lm_head.weight" in message and "deliberately" in message
    with pytest.raises(ValueError, match="lm_head"):
        resolve_lm_head(dict(state_dict), text_ties=False)


def test_head_equal_to_embeddings_is_tied_and_a_different_head_is_kept():
    state_dict = rename_state_dict(load_safetensors_dir(NEXT_DIR))
    embeddings = state_dict["model.language_model.embed_tokens.weight"]
    equal = {**state_dict, "lm_head.weight": embeddings.clone()}
    assert resolve_lm_head(equal, text_ties=False)[0] is True
    assert "lm_head.weight" not in equal
    different = {**state_dict, "lm_head.weight": embeddings + 1}
    assert resolve_lm_head(different, text_ties=True)[0] is False
    assert torch.equal(different["lm_head.weight"], embeddings + 1)


@pytest.mark.parametrize("directory", [NEXT_DIR, ONEVISION_DIR], ids=["llava_next", "llava_onevision"])
def test_native_transformers_5_runs_the_release_differently(directory):
    """Why `convert` exists: native 5.x classes on the release checkpoint (head tied by hand, PIL preprocessing)
    miss the reference by several logits; scaling the merged image features by sqrt(hidden) is exactly the fix."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

    record, reference = load_reference(directory)
    model, loading_info = AutoModelForImageTextToText.from_pretrained(
        directory, attn_implementation="eager", output_loading_info=True
    )
    if directory == NEXT_DIR:  # 5.x LlavaNext reads the top-level tie_word_embeddings=false: random head
        assert "lm_head.weight" in loading_info["missing_keys"]
    model.lm_head.weight = model.model.language_model.embed_tokens.weight
    model.eval()
    processor = AutoProcessor.from_pretrained(directory)
    processor.image_processor = AutoImageProcessor.from_pretrained(directory, backend="pil")  # what 4.52 computed
    cap = model.config.text_config.final_logit_softcapping

    def max_delta() -> float:
        worst = 0.0
        for sample in record["samples"]:
            inputs = sample_inputs(processor, directory, sample, reference)
            with torch.no_grad():
                logits = model(**inputs).logits[0, -record["logit_positions"] :]
            worst = max(worst, (softcap(logits, cap) - reference[f"{sample['name']}.logits"]).abs().max().item())
        return worst

    assert max_delta() > 1.0
    scale = math.sqrt(model.config.text_config.hidden_size)
    model.model.multi_modal_projector.register_forward_hook(lambda module, args, output: output * scale)
    with torch.no_grad():
        model.model.image_newline.mul_(scale)
    assert max_delta() < 1e-4


def sample_inputs(processor, directory: Path, sample: dict, reference: dict):
    """Processor inputs of a reference sample, built the way the references were (rendered prompt, no extra BOS)."""
    prompt = processor.apply_chat_template(sample["messages"], tokenize=False, add_generation_prompt=True)
    assert prompt == sample["prompt"]
    kwargs = {"text": prompt, "return_tensors": "pt", "add_special_tokens": False}
    if sample.get("images"):
        kwargs["images"] = [Image.open(directory / name) for name in sample["images"]]
    if sample.get("video"):
        kwargs["videos"] = [reference[f"{sample['name']}.video_frames"].numpy()]
    return processor(**kwargs)
