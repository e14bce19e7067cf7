"""TowerVision modeling: parity with transformers' LlavaNext / LlavaOnevision, the trained feature scale, Gemma2
softcapping, generation, errors, save/load and remote-code loading. Everything is tiny, float32 and offline."""

import copy
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import llava_single_tile_image_processor
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    Gemma2ForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    LlavaProcessor,
)

from towervision_hf import TowerVisionForConditionalGeneration, TowerVisionModel, TowerVisionProcessor
from towervision_hf.checkpoint.tiny import TINY_PATCH_SIZE, TINY_TILE_SIZE, tiny_config
from towervision_hf.model.modeling_towervision import CACHE_NAME
from towervision_hf.model.tiling_towervision import anyres_grid_shape


TOLERANCE = 0.0  # same weights, same operations: the logits are bit-identical
# (height, width) pairs batched together; between them they need 1 to 6 tiles, with 1-pixel and 1:15 aspect ratios.
IMAGE_SIZE_PAIRS = [
    [(40, 50), (1, 57)],
    [(30, 150), (100, 90)],
    [(20, 250), (120, 170)],
    [(20, 300), (300, 20)],
    [(57, 1), (200, 150)],
]


def softcap(logits, cap=30.0):
    return torch.tanh(logits / cap) * cap


def random_image(height, width, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def random_video(num_frames, seed):
    return np.random.default_rng(seed).integers(0, 256, (num_frames, 70, 90, 3), dtype=np.uint8)


def build_model(config, state_dict=None, **config_overrides):
    """A fresh TowerVision model with eager attention (the config is copied, `_from_config` mutates it)."""
    config = copy.deepcopy(config)
    for name, value in config_overrides.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    model = TowerVisionForConditionalGeneration._from_config(config, attn_implementation="eager").eval()
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def native_config_kwargs(config):
    return {
        "vision_config": config.vision_config.to_dict(),
        "text_config": config.text_config.to_dict(),
        "image_grid_pinpoints": config.image_grid_pinpoints,
        "vision_feature_select_strategy": "full",
        "vision_feature_layer": -1,
        "tie_word_embeddings": True,
    }


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.padding_side = "left"  # batched generation
    return tokenizer


@pytest.fixture(scope="module")
def config(tokenizer):
    return tiny_config(tokenizer, scale_image_features=False)


@pytest.fixture(scope="module")
def model(config):
    return build_model(config)


@pytest.fixture(scope="module")
def llava_next(model, config):
    native = LlavaNextConfig(image_token_index=config.image_token_id, **native_config_kwargs(config))
    reference = LlavaNextForConditionalGeneration._from_config(native, attn_implementation="eager").eval()
    reference.load_state_dict(model.state_dict())
    return reference


@pytest.fixture(scope="module")
def llava_onevision(model, config):
    native = LlavaOnevisionConfig(
        image_token_index=config.image_token_id,
        video_token_index=config.video_token_id,
        **native_config_kwargs(config),
    )
    reference = LlavaOnevisionForConditionalGeneration._from_config(native, attn_implementation="eager").eval()
    reference.load_state_dict(model.state_dict())
    return reference


@pytest.fixture(scope="module")
def next_processor(tokenizer, config):
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": TINY_TILE_SIZE},
        crop_size={"height": TINY_TILE_SIZE, "width": TINY_TILE_SIZE},
        image_grid_pinpoints=config.image_grid_pinpoints,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        do_center_crop=False,
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=TINY_PATCH_SIZE,
        vision_feature_select_strategy="full",
    )


@pytest.fixture(scope="module")
def onevision_processor(tokenizer, config):
    tile = {"height": TINY_TILE_SIZE, "width": TINY_TILE_SIZE}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size=tile, image_grid_pinpoints=config.image_grid_pinpoints, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ),
        video_processor=LlavaOnevisionVideoProcessor(size=tile, image_mean=[0.5] * 3, image_std=[0.5] * 3),
        tokenizer=tokenizer,
        num_image_tokens=config.patches_per_side**2,
        vision_feature_select_strategy="full",
    )


def image_batch(processor, sizes, seed=0):
    images = [random_image(h, w, seed + i) for i, (h, w) in enumerate(sizes)]
    prompts = ["<bos>Look: <image> what is it?", "<bos><image>\nDescribe this picture in detail, please."][
        : len(images)
    ]
    return processor(images=images, text=prompts, return_tensors="pt", padding=True)


@pytest.fixture(scope="module")
def images_inputs(next_processor):
    return image_batch(next_processor, IMAGE_SIZE_PAIRS[1])


@pytest.fixture(scope="module")
def multi_image_inputs(onevision_processor):
    images = [[random_image(60, 80, 1), random_image(90, 40, 2)], [random_image(100, 120, 3)]]
    prompts = ["<bos><image><image> Compare the two.", "<bos>Describe <image> briefly"]
    return onevision_processor(images=images, text=prompts, return_tensors="pt", padding=True)


@pytest.fixture(scope="module")
def video_inputs(onevision_processor):
    videos = [random_video(4, 1), random_video(4, 2)]
    prompts = ["<bos><video> What happens?", "<bos>Summarise <video> in one word"]
    return onevision_processor(videos=videos, text=prompts, return_tensors="pt", padding=True)


def assert_matches(ours, reference, inputs):
    """Softcapped reference logits within TOLERANCE and identical greedy tokens; returns max |Δlogits|."""
    with torch.no_grad():
        logits = ours(**inputs).logits
        expected = softcap(reference(**inputs).logits)
    max_diff = (logits - expected).abs().max().item()
    assert max_diff <= TOLERANCE, max_diff
    generated = ours.generate(**inputs, max_new_tokens=10, do_sample=False)
    expected_tokens = reference.generate(**inputs, max_new_tokens=10, do_sample=False)
    assert torch.equal(generated, expected_tokens)
    return max_diff


def test_image_sizes_cover_every_tile_count(config):
    tile_counts = set()
    for sizes in IMAGE_SIZE_PAIRS:
        for size in sizes:
            rows, cols = anyres_grid_shape(size, config.image_grid_pinpoints, config.tile_size)
            tile_counts.add(rows * cols)
    assert tile_counts == {1, 2, 3, 4, 5, 6}


@pytest.mark.parametrize("sizes", IMAGE_SIZE_PAIRS, ids=str)
def test_matches_llava_next(model, llava_next, next_processor, sizes):
    inputs = image_batch(next_processor, sizes)
    assert (inputs["attention_mask"] == 0).any()  # the batch is padded
    assert_matches(model, llava_next, inputs)


def test_matches_llava_onevision_multi_image(model, llava_onevision, multi_image_inputs):
    assert multi_image_inputs["batch_num_images"].tolist() == [2, 1]
    assert_matches(model, llava_onevision, multi_image_inputs)


def test_matches_llava_onevision_video(model, llava_onevision, video_inputs):
    assert_matches(model, llava_onevision, video_inputs)


@pytest.mark.parametrize("aspect_ratio", ["square", "pad"])
def test_single_tile_layout_matches_llava(model, config, tokenizer, aspect_ratio):
    """One encode per image, `patches_per_side**2` tokens and no newline: LLaVA-1.5's layout (LLaVA's `flat` merge),
    with SigLIP / LLaVA-NeXT's resize ("square") or LLaVA's pad-to-square ("pad"), end to end."""
    native = {key: value for key, value in native_config_kwargs(config).items() if key != "image_grid_pinpoints"}
    native = LlavaConfig(image_token_index=config.image_token_id, **native)
    reference = LlavaForConditionalGeneration._from_config(native, attn_implementation="eager").eval()
    state_dict = model.state_dict()
    reference.load_state_dict({key: value for key, value in state_dict.items() if key != "model.image_newline"})
    reference_processor = LlavaProcessor(
        image_processor=llava_single_tile_image_processor(TINY_TILE_SIZE, aspect_ratio),
        tokenizer=tokenizer,
        patch_size=TINY_PATCH_SIZE,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
    )
    ours = build_model(config, state_dict, image_aspect_ratio=aspect_ratio)
    processor = TowerVisionProcessor.from_model_config(ours.config, tokenizer)
    images = [random_image(30, 150, 1), random_image(100, 90, 2), random_image(57, 1, 3)]
    prompts = ["<bos>Look: <image> what is it?", "<bos><image>\nDescribe this picture in detail.", "<bos><image>"]
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    expected_inputs = reference_processor(images=images, text=prompts, return_tensors="pt", padding=True)
    assert torch.equal(inputs["input_ids"], expected_inputs["input_ids"])
    assert inputs["input_ids"].eq(config.image_token_id).sum(dim=1).tolist() == [config.patches_per_side**2] * 3
    assert torch.equal(inputs["pixel_values"][:, 0], expected_inputs["pixel_values"])
    with torch.no_grad():
        logits = ours(**inputs).logits
        expected = softcap(reference(**expected_inputs).logits)
    assert (logits - expected).abs().max().item() <= TOLERANCE
    generated = ours.generate(**inputs, max_new_tokens=10, do_sample=False)
    assert torch.equal(generated, reference.generate(**expected_inputs, max_new_tokens=10, do_sample=False))


def test_single_tile_features_are_llava_onevision_multi_image_features_without_newline(
    model, config, llava_onevision, onevision_processor
):
    images = [[random_image(60, 80, 1), random_image(90, 40, 2), random_image(100, 120, 3)]]
    inputs = onevision_processor(images=images, text=["<bos><image><image><image>"], return_tensors="pt")
    ours = build_model(config, model.state_dict(), image_aspect_ratio="pad")
    with torch.no_grad():
        features = ours.get_image_features(
            inputs["pixel_values"], inputs["image_sizes"], inputs["batch_num_images"]
        ).pooler_output
        expected = llava_onevision.model.get_image_features(
            inputs["pixel_values"],
            inputs["image_sizes"],
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            batch_num_images=inputs["batch_num_images"],
        ).pooler_output
    for feature, reference in zip(features, expected, strict=True):
        assert feature.shape[0] == config.patches_per_side**2 == reference.shape[0] - 1
        torch.testing.assert_close(feature, reference[:-1], rtol=0, atol=TOLERANCE)
        assert torch.equal(reference[-1], llava_onevision.model.image_newline)  # the one thing left out


def scaled_reference_logits(reference, inputs, modality):
    """The trained behaviour: native features (newline rows included) × sqrt(hidden) merged into the embeddings."""
    native = reference.model
    if modality == "image":
        kwargs = {k: inputs[k] for k in ("image_sizes", "batch_num_images") if k in inputs}
        features = torch.cat(native.get_image_features(inputs["pixel_values"], **kwargs).pooler_output)
        token_id = reference.config.image_token_id
    else:
        features = native.get_video_features(inputs["pixel_values_videos"]).pooler_output.flatten(0, 1)
        token_id = reference.config.video_token_id
    features = features * math.sqrt(reference.config.text_config.hidden_size)
    embeds = native.get_input_embeddings()(inputs["input_ids"])
    embeds = embeds.masked_scatter((inputs["input_ids"] == token_id)[..., None], features)
    hidden = native.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).last_hidden_state
    return softcap(reference.lm_head(hidden))


@pytest.mark.parametrize("modality", ["image", "multi_image", "video"])
def test_scaled_features_reproduce_trained_behaviour(
    model, llava_next, llava_onevision, images_inputs, multi_image_inputs, video_inputs, modality
):
    inputs, reference = {
        "image": (images_inputs, llava_next),
        "multi_image": (multi_image_inputs, llava_onevision),
        "video": (video_inputs, llava_onevision),
    }[modality]
    scaled = build_model(model.config, model.state_dict(), scale_image_features=True)
    with torch.no_grad():
        logits = scaled(**inputs).logits
        expected = scaled_reference_logits(reference, inputs, "video" if modality == "video" else "image")
        unscaled = model(**inputs).logits
    assert (logits - expected).abs().max().item() <= TOLERANCE
    assert (logits - unscaled).abs().max().item() > 1e-3


def test_scale_is_rounded_to_embedding_dtype(model, images_inputs):
    """Like Gemma2's scaled embedding: bf16 features are multiplied by sqrt(hidden) rounded to bf16."""
    scaled = build_model(model.config, model.state_dict(), scale_image_features=True).to(torch.bfloat16)
    unscaled = build_model(model.config, model.state_dict()).to(torch.bfloat16)
    pixel_values, image_sizes = images_inputs["pixel_values"], images_inputs["image_sizes"]
    with torch.no_grad():
        features = torch.cat(scaled.get_image_features(pixel_values, image_sizes).pooler_output)
        expected = torch.cat(unscaled.get_image_features(pixel_values, image_sizes).pooler_output)
    scale = torch.tensor(math.sqrt(model.config.text_config.hidden_size), dtype=torch.bfloat16)
    assert features.dtype == torch.bfloat16
    assert torch.equal(features, expected * scale)


def test_loss_is_computed_on_softcapped_logits_like_trl_fused_head(model, images_inputs):
    from trl.trainer.utils import add_fused_lm_head

    # Large logits (lm_head is tied, so the embeddings grow too) make the softcap matter.
    big = build_model(model.config, model.state_dict(), scale_image_features=True)
    with torch.no_grad():
        big.lm_head.weight.mul_(300)
    labels = images_inputs["input_ids"].masked_fill(images_inputs["attention_mask"] == 0, -100)
    labels = labels.masked_fill(labels == model.config.image_token_id, -100)
    with torch.no_grad():
        loss = big(**images_inputs, labels=labels).loss
        hidden = big.model(**images_inputs).last_hidden_state
        raw_logits = hidden @ big.lm_head.weight.T

    def shifted_cross_entropy(logits):
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
        )

    assert torch.allclose(loss, shifted_cross_entropy(softcap(raw_logits)), atol=TOLERANCE)
    assert (loss - shifted_cross_entropy(raw_logits)).abs() > 1.0

    add_fused_lm_head(big)
    with torch.no_grad():
        fused_loss = big(**images_inputs, labels=labels, fused_lm_head=True).loss
    assert torch.allclose(fused_loss, loss, atol=TOLERANCE)


def test_training_step_with_checkpointing_reaches_projector_and_newline(model, images_inputs):
    trainable = build_model(model.config, model.state_dict()).train()
    trainable.activation_checkpointing_enable()  # TRL checkpoints activations by default
    labels = images_inputs["input_ids"].masked_fill(images_inputs["attention_mask"] == 0, -100)
    trainable(**images_inputs, labels=labels, use_cache=False).loss.backward()
    assert trainable.model.image_newline.grad.abs().sum() > 0
    assert trainable.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert trainable.model.vision_tower.embeddings.patch_embedding.weight.grad.abs().sum() > 0


def test_text_only_inputs(model, tokenizer):
    inputs = tokenizer(["<bos>Hello there", "<bos>Hi"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape
    assert model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 3


def test_generate_uses_gemma2_hybrid_cache(model, config, images_inputs):
    out = model.generate(**images_inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    gemma = Gemma2ForCausalLM(copy.deepcopy(config.text_config)).eval()
    text_out = gemma.generate(
        images_inputs["input_ids"][:1, -5:], max_new_tokens=3, do_sample=False, return_dict_in_generate=True
    )
    layer_types = [type(layer).__name__ for layer in out[CACHE_NAME].layers]
    assert layer_types == [type(layer).__name__ for layer in text_out[CACHE_NAME].layers]
    assert "DynamicSlidingWindowLayer" in layer_types


def without_first_placeholder(inputs, token_id):
    """`inputs` with the first placeholder of sample 0 turned into an ordinary text token."""
    input_ids = inputs["input_ids"].clone()
    input_ids[0, (input_ids[0] == token_id).nonzero()[0]] = 100
    return {**inputs, "input_ids": input_ids}


def error_cases(images_inputs, multi_image_inputs, video_inputs, config):
    image_ids = images_inputs["input_ids"]
    num_features = int((image_ids == config.image_token_id).sum())
    num_video_features = int((video_inputs["input_ids"] == config.video_token_id).sum())
    flipped = {k: images_inputs[k].flip(0) for k in ("pixel_values", "image_sizes")}
    return {
        "missing image token": (
            without_first_placeholder(images_inputs, config.image_token_id),
            rf"^Image features and image tokens do not match, tokens: {num_features - 1}, features: {num_features}",
        ),
        "pixel_values without image tokens": (
            {**images_inputs, "input_ids": torch.full_like(image_ids, 100)},
            rf"tokens: 0, features: {num_features}",
        ),
        "image_sizes length": (
            {**images_inputs, "image_sizes": images_inputs["image_sizes"][:1]},
            "image_sizes has 1 entries",
        ),
        "images swapped between samples": ({**images_inputs, **flipped}, "not grouped per image"),
        "batch_num_images total": (
            {**multi_image_inputs, "batch_num_images": torch.tensor([1, 1])},
            "adds up to 2 images",
        ),
        "missing video token": (
            without_first_placeholder(video_inputs, config.video_token_id),
            rf"^Video features and video tokens do not match, tokens: {num_video_features - 1}, "
            rf"features: {num_video_features}",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing image token",
        "pixel_values without image tokens",
        "image_sizes length",
        "images swapped between samples",
        "batch_num_images total",
        "missing video token",
    ],
)
def test_bad_inputs_raise_value_error(model, images_inputs, multi_image_inputs, video_inputs, case):
    inputs, message = error_cases(images_inputs, multi_image_inputs, video_inputs, model.config)[case]
    with pytest.raises(ValueError, match=message), torch.no_grad():
        model(**inputs)


@pytest.mark.parametrize("modality", ["image", "video"])
def test_forgotten_pixels_are_refused_by_generate_and_training(model, images_inputs, video_inputs, modality):
    inputs = images_inputs if modality == "image" else video_inputs
    pixels_name = "pixel_values" if modality == "image" else "pixel_values_videos"
    token_id = getattr(model.config, f"{modality}_token_id")
    text_only = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    message = (
        rf"^input_ids contain {int(inputs['input_ids'].eq(token_id).sum())} <{modality}> tokens but {pixels_name}"
    )
    with pytest.raises(ValueError, match=message):
        model.generate(**text_only, max_new_tokens=2, do_sample=False)
    with pytest.raises(ValueError, match=message), torch.no_grad():
        model(**text_only, labels=inputs["input_ids"])


def test_placeholders_without_pixels_are_tokens_in_forward_like_llava_next(model, llava_next, images_inputs):
    """What transformers' assisted decoding does to the draft model, and its SDPA / RoPE tests to every VLM."""
    text_only = {"input_ids": images_inputs["input_ids"], "attention_mask": images_inputs["attention_mask"]}
    with torch.no_grad():
        logits = model(**text_only).logits
        expected = softcap(llava_next(**text_only).logits)
    assert (logits - expected).abs().max().item() <= TOLERANCE


def test_default_attention_keeps_gemma2_softcap(config, tmp_path):
    """Gemma2 cannot softcap attention scores with SDPA: the default must fall back to eager for the text model."""
    model = TowerVisionForConditionalGeneration._from_config(copy.deepcopy(config))
    model.save_pretrained(tmp_path)
    loaded = TowerVisionForConditionalGeneration.from_pretrained(tmp_path)
    for candidate in (model, loaded):
        assert candidate.model.language_model.config._attn_implementation == "eager"
        assert candidate.model.vision_tower.config._attn_implementation == "sdpa"


def test_save_pretrained_ties_head_and_exports_code(model, images_inputs, tmp_path):
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        saved = set(weights.keys())
    assert "lm_head.weight" not in saved
    assert {"model.image_newline", "model.multi_modal_projector.linear_2.weight"} <= saved
    assert {"configuration_towervision.py", "modeling_towervision.py", "tiling_towervision.py"} <= set(
        os.listdir(tmp_path)
    )
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"} <= set(auto_map)

    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(loaded) is TowerVisionForConditionalGeneration
    assert loaded.lm_head.weight is loaded.model.language_model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(loaded(**images_inputs).logits, model(**images_inputs).logits)


REMOTE_SCRIPT = """
import sys
sys.modules["towervision_hf"] = None  # the package must not be importable: only the saved code may be used
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

path = sys.argv[1]
config = AutoConfig.from_pretrained(path, trust_remote_code=True)
backbone = AutoModel.from_pretrained(path, trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True, attn_implementation="eager").eval()
inputs = load_file(sys.argv[2])
with torch.no_grad():
    logits = model(**inputs).logits
generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
save_file({"logits": logits, "generated": generated}, sys.argv[3])
print(type(config).__name__, type(backbone).__name__, type(model).__module__)
"""


def test_auto_classes_resolve_in_process(config):
    assert AutoModel.from_config(copy.deepcopy(config)).__class__ is TowerVisionModel
    assert AutoModelForMultimodalLM.from_config(copy.deepcopy(config)).__class__ is TowerVisionForConditionalGeneration


@pytest.mark.slow
def test_remote_code_loads_without_package(model, images_inputs, tmp_path):
    model.save_pretrained(tmp_path / "checkpoint")
    save_file({k: v.contiguous() for k, v in images_inputs.items()}, tmp_path / "inputs.safetensors")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    args = [str(tmp_path / name) for name in ("checkpoint", "inputs.safetensors", "outputs.safetensors")]
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, *args],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    config_name, backbone_name, module = result.stdout.split()[-3:]
    assert (config_name, backbone_name) == ("TowerVisionConfig", "TowerVisionModel")
    assert module.startswith("transformers_modules.")

    outputs = load_file(tmp_path / "outputs.safetensors")
    with torch.no_grad():
        logits = model(**images_inputs).logits
    assert (outputs["logits"] - logits).abs().max().item() <= TOLERANCE
    assert torch.equal(outputs["generated"], model.generate(**images_inputs, max_new_tokens=5, do_sample=False))
