"""TowerVisionProcessor: placeholder expansion identical to transformers' LLaVA-NeXT / LLaVA-OneVision processors,
the chat template (release-compatible, multimodal, assistant masks), bad inputs and remote-code loading."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
)

from towervision_hf.checkpoint.tiny import build_tiny_processor, build_tiny_tokenizer
from towervision_hf.model.image_processing_towervision import TowerVisionImageProcessor
from towervision_hf.model.processing_towervision import TowerVisionProcessor
from towervision_hf.model.tiling_towervision import default_grid_pinpoints


TILE, PATCH = 56, 8
# The released checkpoints' chat_template.jinja (utter-project/TowerVision-2B), verbatim.
RELEASE_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}<start_of_turn>{{ role }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
    "{% endif %}\n"
)


def random_image(height, width, seed=0):
    rng = np.random.default_rng(seed + 7 * height + width)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def processor(tiny_tokenizer):
    return build_tiny_processor(tiny_tokenizer)


@pytest.fixture(scope="module")
def bos_processor():
    """A tokenizer that adds BOS by itself, like Gemma's: the template's BOS must not be doubled."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_bos_token = True
    return build_tiny_processor(tokenizer)


def release_image_processor(tile, pinpoints=None):
    return LlavaNextImageProcessorPil(
        size={"shortest_edge": tile},
        crop_size={"height": tile, "width": tile},
        image_grid_pinpoints=pinpoints or default_grid_pinpoints(6, tile),
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        resample=Image.Resampling.BICUBIC,
        do_convert_rgb=False,
    )


def llava_next_processor(tokenizer, tile=TILE, patch=PATCH):
    return LlavaNextProcessor(
        image_processor=release_image_processor(tile),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
    )


def image_sizes_under_test():
    """62 sizes: every pinpoint exactly, extreme aspect ratios, sizes around tile multiples and random ones."""
    sizes = [tuple(p) for p in default_grid_pinpoints(6, TILE)]
    sizes += [(1, 1), (1, 4000), (4000, 1), (2, 2), (1, 57), (57, 1), (55, 56), (56, 57), (113, 111), (300, 7)]
    sizes += [(TILE * r + d, TILE * c - d) for r, c in [(1, 2), (2, 3), (3, 1)] for d in (1, 2)]
    rng = np.random.default_rng(1)
    sizes += [tuple(int(v) for v in rng.integers(1, 700, 2)) for _ in range(32)]
    return sizes


def test_image_tokens_match_llava_next_processor(processor, tiny_tokenizer):
    sizes = image_sizes_under_test()
    assert len(sizes) >= 50
    images = [random_image(h, w) for h, w in sizes]
    texts = [f"Describe <image> #{i}" for i in range(len(images))]
    ours = processor(text=texts, images=images, padding=True, return_tensors="pt")
    expected = llava_next_processor(tiny_tokenizer)(text=texts, images=images, padding=True, return_tensors="pt")
    assert torch.equal(ours.input_ids, expected.input_ids)
    assert torch.equal(ours.attention_mask, expected.attention_mask)
    assert torch.equal(ours.pixel_values, expected.pixel_values)
    assert ours.batch_num_images.tolist() == [1] * len(images)


@pytest.mark.parametrize("size", [(1, 1), (384, 384), (480, 640), (1080, 1920), (5, 3000)])
def test_image_tokens_match_llava_next_processor_at_384(tiny_tokenizer, size):
    ours = TowerVisionProcessor(image_processor=TowerVisionImageProcessor(), tokenizer=tiny_tokenizer, patch_size=14)
    reference = llava_next_processor(tiny_tokenizer, tile=384, patch=14)
    image = random_image(*size)
    counts = [
        int((p(text="<image>\nhi", images=[image], return_tensors="pt").input_ids == p.image_token_id).sum())
        for p in (ours, reference)
    ]
    assert counts[0] == counts[1]
    assert ours._get_num_multimodal_tokens(image_sizes=[size]).num_image_tokens == [counts[0]]


def llava_onevision_processor(tokenizer):
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(
            size={"height": TILE, "width": TILE},
            image_grid_pinpoints=default_grid_pinpoints(6, TILE),
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
        ),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(
            size={"height": TILE, "width": TILE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ),
        num_image_tokens=(TILE // PATCH) ** 2,
        vision_feature_select_strategy="full",
    )


def test_multi_image_and_video_tokens_match_llava_onevision(processor, tiny_tokenizer):
    texts = ["<image><image>\nCompare.", "<image>\nOne.", "<video>\nWhat happens?"]
    images = [[random_image(40, 90), random_image(90, 40)], [random_image(70, 130)], []]
    video = np.random.default_rng(0).integers(0, 256, (4, 30, 40, 3), dtype=np.uint8)
    ours = processor(text=texts, images=images, videos=[video], padding=True, return_tensors="pt")
    expected = llava_onevision_processor(tiny_tokenizer)(
        text=texts, images=images, videos=[video], padding=True, return_tensors="pt"
    )
    assert torch.equal(ours.input_ids, expected.input_ids)
    assert torch.equal(ours.pixel_values, expected.pixel_values)
    assert torch.equal(ours.pixel_values_videos, expected.pixel_values_videos)
    assert ours.batch_num_images.tolist() == [2, 1]
    assert (ours.input_ids[0] == processor.image_token_id).sum() == 2 * (49 + 1)
    assert (ours.input_ids[2] == processor.video_token_id).sum() == 4 * 16 + 1
    assert processor._get_num_multimodal_tokens(video_sizes=[(4, 30, 40)]).num_video_tokens == [4 * 16 + 1]


def test_flat_images_are_assigned_to_samples_by_placeholder(processor):
    images = [random_image(30, 30), random_image(40, 20), random_image(20, 40)]
    flat = processor(text=["<image> a", "<image><image> b"], images=images, padding=True, return_tensors="pt")
    nested = processor(text=["<image> a", "<image><image> b"], images=[images[:1], images[1:]], padding=True)
    assert flat.batch_num_images.tolist() == [1, 2]
    assert flat.input_ids.tolist() == nested.input_ids


def test_lower_max_tiles_at_call_time(processor):
    image = random_image(60, 330)
    full = processor(text="<image>", images=[image], return_tensors="pt")
    fewer = processor(text="<image>", images=[image], max_tiles=2, return_tensors="pt")
    assert fewer.pixel_values.shape[1] == 3 < full.pixel_values.shape[1]
    assert fewer.image_max_tiles.tolist() == [2]
    assert (fewer.input_ids == processor.image_token_id).sum() < (full.input_ids == processor.image_token_id).sum()


def conversation(content, answer=None, system=None):
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def test_release_prompt_format_gives_identical_ids(bos_processor):
    image = random_image(50, 70)
    for messages in [
        conversation("<image>\nWhat is in the picture?"),
        conversation("  <image>\nTranslate to German: a cat. ", answer=" Eine Katze. "),
        conversation("<image>\nDescribe.", answer="A cat.", system="Answer briefly."),
    ]:
        ours, release = (
            bos_processor.apply_chat_template(
                messages,
                chat_template=template,
                tokenize=True,
                return_dict=True,
                add_generation_prompt=messages[-1]["role"] == "user",
                processor_kwargs={"images": [image]},  # (a fresh dict: apply_chat_template pops from it)
            )
            for template in (None, RELEASE_TEMPLATE)
        )
        assert ours["input_ids"] == release["input_ids"]
        assert bos_processor.apply_chat_template(messages) == bos_processor.apply_chat_template(
            messages, chat_template=RELEASE_TEMPLATE
        )


def test_rendering(processor):
    rendered = processor.apply_chat_template(conversation("<image>\nWhat?"), add_generation_prompt=True)
    assert rendered == "<bos><start_of_turn>user\n<image>\nWhat?<end_of_turn>\n<start_of_turn>model\n"
    for content in [
        [{"type": "image"}, {"type": "text", "text": "What?"}],
        [{"type": "text", "text": "What?"}, {"type": "image"}],  # media placeholders always come first
    ]:
        assert processor.apply_chat_template(conversation(content), add_generation_prompt=True) == rendered
    mixed = [
        {"type": "video"},
        {"type": "text", "text": "Compare "},
        {"type": "image"},
        {"type": "text", "text": "it."},
    ]
    assert processor.apply_chat_template(conversation(mixed, answer=[{"type": "text", "text": "Same."}])) == (
        "<bos><start_of_turn>user\n<video>\n<image>\nCompare it.<end_of_turn>\n"
        "<start_of_turn>model\nSame.<end_of_turn>\n"
    )
    with_system = processor.apply_chat_template(conversation("Hi", system="Be brief."))
    assert with_system == "<bos><start_of_turn>system\nBe brief.<end_of_turn>\n<start_of_turn>user\nHi<end_of_turn>\n"


def test_exactly_one_bos(bos_processor):
    image = random_image(20, 30)
    messages = conversation([{"type": "image", "image": image}, {"type": "text", "text": "What?"}])
    bos, start = bos_processor.tokenizer.bos_token_id, bos_processor.tokenizer.convert_tokens_to_ids("<start_of_turn>")
    out = bos_processor.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=True)
    assert out["input_ids"][0][:2] == [bos, start]
    prompt = bos_processor.apply_chat_template(messages, add_generation_prompt=True)
    direct = bos_processor(text=prompt, images=[image])
    assert direct["input_ids"][0] == out["input_ids"][0]
    assert bos_processor(text="<image> hi", images=[image])["input_ids"][0][0] == bos  # plain text still gets BOS


def assistant_text(processor, out, sample=0):
    ids, mask = out["input_ids"][sample], out["assistant_masks"][sample]
    return processor.tokenizer.decode([token for token, keep in zip(ids, mask) if keep])


def test_assistant_mask_covers_answers_and_end_of_turn(processor):
    image = random_image(60, 45)
    messages = conversation([{"type": "image", "image": image}, {"type": "text", "text": "Colour?"}], answer="Red.")
    messages += [{"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "Yes."}]
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert assistant_text(processor, out) == "Red.<end_of_turn>\nYes.<end_of_turn>\n"
    image_positions = [i for i, token in enumerate(out["input_ids"][0]) if token == processor.image_token_id]
    assert image_positions and not any(out["assistant_masks"][0][i] for i in image_positions)


def test_trl_assistant_only_loss(processor):
    from trl.chat_template_utils import (
        has_generation_markers,
        is_chat_template_prefix_preserving,
        is_chat_template_stop_token_trained,
    )
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    assert has_generation_markers(processor.chat_template)
    assert is_chat_template_prefix_preserving(processor)
    assert is_chat_template_stop_token_trained(processor)
    examples = [
        {"images": [random_image(40, 60)], "messages": conversation("What colour?", answer="Red.")},
        {"images": [random_image(30, 30), random_image(50, 20)], "messages": conversation("Compare.", answer="Same.")},
        {"images": [], "messages": conversation("Hi", answer="Hello.")},
    ]
    batch = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)(examples)
    trained = [processor.tokenizer.decode(ids[labels != -100]) for ids, labels in zip(batch.input_ids, batch.labels)]
    assert trained == ["Red.<end_of_turn>\n", "Same.<end_of_turn>\n", "Hello.<end_of_turn>\n"]
    assert batch.batch_num_images.tolist() == [1, 2]
    assert (batch.input_ids[1] == processor.image_token_id).sum() == 2 * (49 + 1)


def test_chat_template_loads_images_and_videos(processor, tmp_path, video_files):
    path = tmp_path / "picture.png"
    random_image(40, 100).save(path)
    content = [
        {"type": "image", "path": str(path)},
        {"type": "image", "url": str(path)},
        {"type": "image", "image": random_image(40, 100)},
        {"type": "text", "text": "Same pictures?"},
    ]
    out = processor.apply_chat_template(conversation(content), tokenize=True, return_dict=True, return_tensors="pt")
    assert out.batch_num_images.tolist() == [3]
    assert (out.input_ids == processor.image_token_id).sum() == 3 * (49 + 1)
    assert torch.equal(out.pixel_values[0], out.pixel_values[2])
    for video in [{"path": video_files["clip"]}, {"video": np.zeros((9, 30, 40, 3), np.uint8)}]:
        content = [{"type": "video", **video}, {"type": "text", "text": "What happens?"}]
        out = processor.apply_chat_template(
            conversation(content), tokenize=True, return_dict=True, return_tensors="pt"
        )
        assert out.pixel_values_videos.shape == (1, 4, 3, TILE, TILE)
        assert (out.input_ids == processor.video_token_id).sum() == 4 * 16 + 1
        assert "video_metadata" not in out


IMAGE, VIDEO = random_image(10, 10), np.zeros((2, 8, 8, 3), np.uint8)


@pytest.mark.parametrize(
    "inputs, message",
    [
        (dict(text="<image><image> a", images=[IMAGE]), "The text has 2 <image> placeholders but 1 images were given"),
        (dict(text="<image> a", images=[IMAGE, IMAGE]), "The text has 1 <image> placeholders but 2 images were given"),
        (dict(text="a", images=[IMAGE]), "The text has 0 <image> placeholders but 1 images were given"),
        (dict(text="<image> a"), "The text has 1 <image> placeholders but no images were given"),
        (dict(text=["<image>", "<image>"], images=[[IMAGE, IMAGE], []]), "Sample 0 has 1 <image> placeholders but 2"),
        (dict(text="<video> a"), "The text has 1 <video> placeholders but no videos were given"),
        (dict(text="<video> a", videos=[VIDEO, VIDEO]), "The text has 1 <video> placeholders but 2 videos were given"),
        (dict(text="<image> a", images=[b"not an image"]), "Image bytes .* could not be decoded as an image"),
    ],
)
def test_mismatched_or_bad_inputs_raise_value_errors(processor, inputs, message):
    with pytest.raises(ValueError, match=message):
        processor(**inputs)


def test_save_and_reload(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"chat_template.jinja", "processor_config.json", "tokenizer.json"} <= files
    expected_code = {"processing_towervision.py", "image_processing_towervision.py", "video_processing_towervision.py"}
    assert expected_code | {"tiling_towervision.py"} <= files
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["auto_map"] == {"AutoProcessor": "processing_towervision.TowerVisionProcessor"}
    assert config["image_processor"]["auto_map"]["AutoImageProcessor"].endswith("TowerVisionImageProcessor")
    assert config["video_processor"]["auto_map"]["AutoVideoProcessor"].endswith("TowerVisionVideoProcessor")
    reloaded = TowerVisionProcessor.from_pretrained(tmp_path)
    assert reloaded.chat_template == processor.chat_template
    assert (reloaded.patch_size, reloaded.video_pool_size, reloaded.image_processor.tile_size) == (PATCH, 2, TILE)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["towervision_hf"] = None  # the package must not be importable: only the saved files may be used
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
    assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
    image = Image.fromarray(np.arange(70 * 130 * 3, dtype=np.uint8).reshape(70, 130, 3))
    video = np.full((6, 20, 30, 3), 9, np.uint8)
    out = processor(text=["<image>\\nWhat? <video>"], images=[image], videos=[video], return_tensors="np")
    np.savez(sys.argv[2], **out)
    """
)


@pytest.mark.slow
def test_auto_processor_loads_the_saved_remote_code(processor, tmp_path):
    saved, work = tmp_path / "saved", tmp_path / "work"
    work.mkdir()
    processor.save_pretrained(saved)
    script = work / "load_remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, str(script), str(saved), str(work / "out.npz")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = np.load(work / "out.npz")
    image = Image.fromarray(np.arange(70 * 130 * 3, dtype=np.uint8).reshape(70, 130, 3))
    video = np.full((6, 20, 30, 3), 9, np.uint8)
    local = processor(text=["<image>\nWhat? <video>"], images=[image], videos=[video], return_tensors="np")
    assert sorted(remote.files) == sorted(local.keys())
    for key in local:
        assert np.array_equal(remote[key], local[key]), key


def test_placeholders_match_the_model_features():
    """The tiny model raises unless every sample has exactly as many placeholders as it produces features."""
    from towervision_hf.checkpoint.compose import build_tiny

    model, processor = build_tiny()
    batch = processor(
        text=["<image>\nOne.", "<image><image> Two.", "<video> A clip."],
        images=[random_image(30, 200), random_image(50, 50), random_image(10, 90)],
        videos=[np.zeros((7, 20, 30, 3), np.uint8)],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch.input_ids.shape


@pytest.mark.parametrize("aspect_ratio", ["square", "pad"])
def test_single_tile_layout_placeholders_match_the_model_features(aspect_ratio):
    """One tile per image, 7x7 = 49 tokens whatever the image (and however many per sample), videos unchanged."""
    from towervision_hf.checkpoint.compose import build_tiny
    from towervision_hf.model.processing_towervision import TowerVisionProcessor

    model, processor = build_tiny()
    model.config.image_aspect_ratio = aspect_ratio
    processor = TowerVisionProcessor.from_model_config(model.config, processor.tokenizer)
    texts = ["<image>\nOne.", "<image><image> Two.", "<video> A clip."]
    batch = processor(
        text=texts,
        images=[random_image(30, 200), random_image(50, 50), random_image(10, 90)],
        videos=[np.zeros((7, 20, 30, 3), np.uint8)],
        padding=True,
        return_tensors="pt",
    )
    assert batch.input_ids.eq(processor.image_token_id).sum(dim=1).tolist() == [49, 98, 0]
    assert processor._get_num_multimodal_tokens(image_sizes=[(30, 200), (500, 20)]).num_image_tokens == [49, 49]
    with torch.no_grad():
        features = model.model.get_image_features(
            batch.pixel_values, batch.image_sizes, batch.batch_num_images
        ).pooler_output
        logits = model(**batch).logits
    assert [feature.shape[0] for feature in features] == [49] * 3 and logits.shape[:2] == batch.input_ids.shape


@pytest.mark.parametrize("max_tiles", [1, 2, 4])
def test_lowered_max_tiles_drives_the_model(max_tiles):
    """`processor(..., max_tiles=k)` gives the same features as a model whose own budget is k tiles."""
    from towervision_hf.checkpoint.compose import build_tiny
    from towervision_hf.model.modeling_towervision import TowerVisionForConditionalGeneration
    from towervision_hf.model.tiling_towervision import restrict_pinpoints

    model, processor = build_tiny()
    batch = processor(text="<image>\nWhat?", images=[random_image(60, 330)], max_tiles=max_tiles, return_tensors="pt")
    config = model.config
    budget_config = type(config).from_dict(
        {
            **config.to_dict(),
            "image_grid_pinpoints": restrict_pinpoints(config.image_grid_pinpoints, max_tiles, config.tile_size),
        }
    )
    budget_model = TowerVisionForConditionalGeneration(budget_config).eval()
    budget_model.load_state_dict(model.state_dict())
    inputs = {key: value for key, value in batch.items() if key != "image_max_tiles"}
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, budget_model(**inputs).logits)
        generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == batch.input_ids.shape[1] + 3
