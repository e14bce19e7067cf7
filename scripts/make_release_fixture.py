"""Build the tiny release-format fixtures and their reference outputs under transformers 4.52.

TowerVision / TowerVideo were exported with transformers 4.52 as native `llava_next` / `llava_onevision`
checkpoints and trained with a code base in which Gemma2's `sqrt(hidden_size)` normalizer scaled the whole
`inputs_embeds` (image features included) and the LM head applied Gemma2's final-logit softcap. This script
writes tiny checkpoints in exactly the release's format and records what that trained behaviour computes, so
`tests/test_convert.py` can prove that `towervision convert` + our model + our processor reproduce it under
transformers 5.x:

* `tests/fixtures/release_llava_next/`: like `utter-project/TowerVision-2B` (its config, preprocessor, template):
  `LlavaNextForConditionalGeneration`, SigLIP vision tower (no head, feature layer -1, strategy "full"), Gemma2
  text model with softcaps 50/30, every grid of <= 6 tiles in the release's pinpoint order, top-level
  `tie_word_embeddings: false` while `text_config` ties (so 4.52 saves no `lm_head`), `<image>` as the last
  vocabulary id, `LlavaNextImageProcessor` (PIL) with shortest_edge = crop = tile, mean = std = 0.5,
  bilinear resampling, `do_pad`, `do_convert_rgb: false`, the release's 305-byte chat template.
* `tests/fixtures/release_llava_onevision/`: like `utter-project/TowerVideo-2B` (§7): `llava_onevision` with
  `<image>` and `<video>` as the last two ids, the 6x6 pinpoint grid, `anyres_max_9`, an image and a video sample.

Each folder gets the checkpoint (float32 safetensors, saved by 4.52's `save_pretrained`), the generated PNGs,
`reference.safetensors` (per sample: `input_ids`, `pixel_values`/`image_sizes` or `pixel_values_videos` and
the raw `video_frames`, the final-logit-softcapped logits of the last positions and 10 greedy tokens) and
`reference.json` (prompts, messages, image names and how the references were computed).

References use `attn_implementation="eager"` (the path that applies Gemma2's attention softcap), float32,
batch size 1, `add_special_tokens=False` on the rendered prompt (the template already emits `<bos>`).

Run with transformers 4.52 importable, e.g. installed into a folder `TF452` of your choice without touching the
project's environment (the tests find the same folder through `TOWERVISION_TRANSFORMERS_452`):

    python -m pip install --target TF452 --no-deps transformers==4.52.4 \
        "tokenizers>=0.21,<0.22" "huggingface_hub>=0.30,<1.0" requests urllib3 idna charset_normalizer certifi
    PYTHONPATH=TF452 python scripts/make_release_fixture.py [--out-dir DIR] [--only llava_next|llava_onevision]
"""

import argparse
import json
import math
import shutil
import string
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Tokenizer, decoders, normalizers
from tokenizers.models import BPE
from transformers import (
    Gemma2Config,
    GemmaTokenizerFast,
    GenerationConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    SiglipVisionConfig,
)


# utter-project/TowerVision-2B chat_template.jinja, verbatim (305 bytes).
RELEASE_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}<start_of_turn>{{ role }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
TILE_SIZE = 56  # 7x7 patches of 8 px: odd per side, like so400m's 27x27
PATCH_SIZE = 8
FINAL_LOGIT_SOFTCAP = 30.0
LOGIT_POSITIONS = 16  # reference logits kept for the last N positions (they attend to every image feature)
MAX_NEW_TOKENS = 10
SEED = 0

# (name, (height, width)): shapes chosen to hit square, wide, tall, multi-row/column grids and a 1x6 strip.
NEXT_IMAGES = [
    ("square", (56, 56)),
    ("wide", (40, 100)),
    ("tall", (130, 45)),
    ("photo", (150, 200)),
    ("strip", (24, 300)),
]
NEXT_SAMPLES = [
    {
        "name": "square",
        "images": ["square.png"],
        "messages": [{"role": "user", "content": "<image>\nDescribe the image."}],
    },
    {
        "name": "wide",
        "images": ["wide.png"],
        "messages": [{"role": "user", "content": "<image>\nWhat colour is the square?"}],
    },
    {
        "name": "tall",
        "images": ["tall.png"],
        "messages": [{"role": "user", "content": "<image>\nTraduza o texto para inglês."}],
    },
    {
        "name": "photo_multiturn",
        "images": ["photo.png"],
        "messages": [
            {"role": "user", "content": "<image>\nWhat is this?"},
            {"role": "assistant", "content": "A small chart."},
            {"role": "user", "content": "Qu'est-ce que c'est ?"},
        ],
    },
    {"name": "strip", "images": ["strip.png"], "messages": [{"role": "user", "content": "<image>\n这是什么？"}]},
    {
        "name": "text_only",
        "images": [],
        "messages": [{"role": "user", "content": "Translate to German: good morning"}],
    },
]
ONEVISION_IMAGES = [("chart", (70, 110))]
ONEVISION_SAMPLES = [
    {
        "name": "image",
        "images": ["chart.png"],
        "messages": [{"role": "user", "content": "<image>\nDescribe the image."}],
    },
    {
        "name": "video",
        "video": "clip",
        "messages": [{"role": "user", "content": "<video>\nWhat happens in the video?"}],
    },
]
VIDEO_SHAPE = (4, 48, 64)  # frames, height, width


def release_pinpoints(max_tiles: int, tile: int) -> list[list[int]]:
    """Every grid of <= max_tiles tiles, ordered by tile count then rows (TowerVision-2B's 14 pinpoints at 384)."""
    grids = sorted(
        ((r, c) for r in range(1, max_tiles + 1) for c in range(1, max_tiles + 1) if r * c <= max_tiles),
        key=lambda grid: (grid[0] * grid[1], grid[0]),
    )
    return [[r * tile, c * tile] for r, c in grids]


def build_tokenizer(extra_tokens: list[str]) -> GemmaTokenizerFast:
    """A Gemma-style byte-fallback tokenizer; `extra_tokens` are appended last like the release's `<image>`."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece in ["▁", *string.ascii_letters, *string.digits, *string.punctuation]:
        vocab.setdefault(piece, len(vocab))
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer = GemmaTokenizerFast(tokenizer_object=backend, add_bos_token=True, add_eos_token=False)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    # As the release converter did: `<image>` (and TowerVideo's `<video>`) added after the base vocabulary,
    # then the end-of-turn token made the tokenizer's EOS.
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in extra_tokens], special_tokens=True)
    tokenizer.eos_token = "<end_of_turn>"
    return tokenizer


def sub_configs(tokenizer):
    vision_config = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TILE_SIZE,
        patch_size=PATCH_SIZE,
        vision_use_head=False,
    )
    text_config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=64,
        max_position_embeddings=2048,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=FINAL_LOGIT_SOFTCAP,
        eos_token_id=tokenizer.convert_tokens_to_ids("<end_of_turn>"),
        # the release's text_config carries the LLaVA-NeXT training class and leftovers (its config.json)
        architectures=["LlavaGemma2ForCausalLM"],
        image_aspect_ratio="anyres",
        mm_patch_merge_type="spatial_unpad",
        mm_newline_position="grid",
        mm_vision_select_layer=-2,
        mm_hidden_size=32,
        use_mm_proj=True,
        tokenizer_model_max_length=2048,
        tokenizer_padding_side="right",
    )
    return vision_config, text_config


def randomize(model: torch.nn.Module, seed: int):
    """Random weights under which the outputs depend on the whole context and logits spread over several units.

    Small token embeddings keep the residual stream from being a copy of the current token (with tied
    embeddings that makes a random model repeat its last token); a large final-norm gain spreads the logits.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if "embed_tokens" in name:
                values = torch.randn(param.shape, generator=generator) * 0.1
            elif name.endswith(("language_model.model.norm.weight", "language_model.norm.weight")):
                values = 3.0 + 0.1 * torch.randn(param.shape, generator=generator)  # Gemma2RMSNorm scales by 1 + w
            elif "position_embedding" in name:
                values = torch.randn(param.shape, generator=generator) * 0.5
            elif param.ndim >= 2:
                values = torch.randn(param.shape, generator=generator) / math.sqrt(param[0].numel())
            elif "layer_norm" in name and name.endswith("weight"):  # SigLIP LayerNorm: multiplicative weight
                values = 1.0 + 0.1 * torch.randn(param.shape, generator=generator)
            elif "image_newline" in name:
                values = torch.randn(param.shape, generator=generator) * 0.5
            else:  # biases and Gemma2 RMSNorm weights (applied as 1 + w)
                values = 0.1 * torch.randn(param.shape, generator=generator)
            param.copy_(values)


def make_image(height: int, width: int, seed: int) -> Image.Image:
    """A deterministic RGB test card: smooth gradients, two flat rectangles and a little seeded noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None]
    x = np.linspace(0.0, 1.0, width)[None, :]
    image = np.stack([200 * x + 30 * y, 180 * y * np.ones_like(x), 120 + 100 * np.sin(6 * x + 3 * y)], axis=-1)
    for _ in range(2):
        top, left = rng.integers(0, height), rng.integers(0, width)
        image[top : top + max(1, height // 3), left : left + max(1, width // 3)] = rng.integers(0, 256, 3)
    image += rng.normal(0.0, 6.0, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8), mode="RGB")


def make_video(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """`(frames, height, width, 3)` uint8: a square moving across a gradient background."""
    rng = np.random.default_rng(seed)
    background = np.asarray(make_image(height, width, seed), dtype=np.float64)
    frames = []
    for t in range(num_frames):
        frame = background.copy()
        left = (t * width) // (num_frames + 1)
        frame[height // 4 : height // 4 + height // 3, left : left + width // 4] = [230, 40, 40]
        frame += rng.normal(0.0, 4.0, frame.shape)
        frames.append(np.clip(frame, 0, 255).round().astype(np.uint8))
    return np.stack(frames)


def save_images(directory: Path, specs, seed_offset: int) -> dict:
    images = {}
    for index, (name, (height, width)) in enumerate(specs):
        make_image(height, width, seed_offset + index).save(directory / f"{name}.png")
        images[f"{name}.png"] = Image.open(directory / f"{name}.png")  # the reference sees the decoded PNG
        images[f"{name}.png"].load()
    return images


def compute_references(model_cls, directory: Path, samples, images: dict, videos: dict) -> dict:
    """Run the saved checkpoint under 4.52 (eager, float32) on every sample; tensors keyed `<sample>.<field>`."""
    processor = transformers.AutoProcessor.from_pretrained(directory)
    model = model_cls.from_pretrained(directory, attn_implementation="eager", torch_dtype=torch.float32).eval()
    tensors, records = {}, []
    for sample in samples:
        prompt = processor.apply_chat_template(sample["messages"], tokenize=False, add_generation_prompt=True)
        kwargs = {"text": prompt, "return_tensors": "pt", "add_special_tokens": False}
        if sample.get("images"):
            kwargs["images"] = [images[name] for name in sample["images"]]
        if sample.get("video"):
            kwargs["videos"] = [videos[sample["video"]]]
        inputs = processor(**kwargs)
        with torch.no_grad():
            logits = model(**inputs).logits[0, -LOGIT_POSITIONS:]
            output = model.generate(
                **inputs,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
            )
        capped = torch.tanh(logits / FINAL_LOGIT_SOFTCAP) * FINAL_LOGIT_SOFTCAP
        top2 = capped.topk(2, dim=-1).values
        step_top2 = torch.cat(output.scores).topk(2, dim=-1).values
        name = sample["name"]
        tensors[f"{name}.input_ids"] = inputs["input_ids"][0].contiguous()
        tensors[f"{name}.logits"] = capped.float().contiguous()
        tensors[f"{name}.generated"] = output.sequences[0, inputs["input_ids"].shape[1] :].contiguous()
        for key in ("pixel_values", "image_sizes", "pixel_values_videos"):
            if key in inputs:
                tensors[f"{name}.{key}"] = inputs[key].contiguous()
        if sample.get("video"):
            tensors[f"{name}.video_frames"] = torch.from_numpy(videos[sample["video"]]).contiguous()
        records.append(
            {
                **sample,
                "prompt": prompt,
                "num_tokens": int(inputs["input_ids"].shape[1]),
                # margins of the argmax (uncapped scores while generating): how robust the references are
                "min_top2_gap_logits": round(float((top2[:, 0] - top2[:, 1]).min()), 6),
                "min_top2_gap_generation": round(float((step_top2[:, 0] - step_top2[:, 1]).min()), 6),
            }
        )
        print(f"  {name}: {inputs['input_ids'].shape[1]} tokens, generated {tensors[f'{name}.generated'].tolist()}")
    save_file(tensors, directory / "reference.safetensors")
    return {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "attn_implementation": "eager",
        "dtype": "float32",
        "logits": f"last {LOGIT_POSITIONS} positions of the forward pass on the prompt, "
        f"after tanh(x/{FINAL_LOGIT_SOFTCAP})*{FINAL_LOGIT_SOFTCAP}",
        "final_logit_softcapping": FINAL_LOGIT_SOFTCAP,
        "logit_positions": LOGIT_POSITIONS,
        "max_new_tokens": MAX_NEW_TOKENS,
        "processor_call": {"add_special_tokens": False, "batch_size": 1},
        "samples": records,
    }


def check_saved_weights(directory: Path, model):
    saved = load_file(directory / "model.safetensors")
    if any("lm_head" in key for key in saved):
        raise RuntimeError("4.52 saved an lm_head: the fixture no longer matches the release's tying")
    expected = {k for k in model.state_dict() if not k.startswith("lm_head")}
    print(
        f"  saved {len(saved)} tensors, no lm_head (tied through text_config); "
        f"in-memory non-head tensors: {len(expected)}"
    )


def write_llava_next(directory: Path):
    tokenizer = build_tokenizer(["<image>"])
    vision_config, text_config = sub_configs(tokenizer)
    config = LlavaNextConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=release_pinpoints(6, TILE_SIZE),
        tie_word_embeddings=False,
        use_image_newline_parameter=True,
    )
    assert config.image_token_index == len(tokenizer) - 1
    torch.manual_seed(SEED)
    model = LlavaNextForConditionalGeneration(config)
    randomize(model, SEED)
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": TILE_SIZE},
        crop_size={"height": TILE_SIZE, "width": TILE_SIZE},
        image_grid_pinpoints=release_pinpoints(6, TILE_SIZE),
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        resample=2,  # bilinear, inherited from the SigLIP2 preprocessor (the release's preprocessor_config.json)
        do_pad=True,
        do_convert_rgb=False,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="full",
        image_token="<image>",
        chat_template=RELEASE_CHAT_TEMPLATE,
    )
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    check_saved_weights(directory, model)
    images = save_images(directory, NEXT_IMAGES, seed_offset=100)
    return compute_references(LlavaNextForConditionalGeneration, directory, NEXT_SAMPLES, images, {})


def write_llava_onevision(directory: Path):
    tokenizer = build_tokenizer(["<image>", "<video>"])
    vision_config, text_config = sub_configs(tokenizer)
    pinpoints = [[TILE_SIZE * rows, TILE_SIZE * cols] for rows in range(1, 7) for cols in range(1, 7)]
    config = LlavaOnevisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=pinpoints,
        tie_word_embeddings=False,
    )
    assert config.video_token_index == len(tokenizer) - 1
    torch.manual_seed(SEED + 1)
    model = LlavaOnevisionForConditionalGeneration(config)
    randomize(model, SEED + 1)
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    common = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": False}
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": TILE_SIZE, "width": TILE_SIZE},
        image_grid_pinpoints=pinpoints,
        resample=2,
        do_pad=True,
        **common,
    )
    video_processor = LlavaOnevisionVideoProcessor(size={"height": TILE_SIZE, "width": TILE_SIZE}, **common)
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        num_image_tokens=(TILE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=RELEASE_CHAT_TEMPLATE,
    )
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    check_saved_weights(directory, model)
    images = save_images(directory, ONEVISION_IMAGES, seed_offset=200)
    videos = {"clip": make_video(*VIDEO_SHAPE, seed=300)}
    return compute_references(LlavaOnevisionForConditionalGeneration, directory, ONEVISION_SAMPLES, images, videos)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "fixtures")
    parser.add_argument("--only", choices=["llava_next", "llava_onevision"], help="build one of the two fixtures")
    args = parser.parse_args(argv)
    if not transformers.__version__.startswith("4.52."):
        raise SystemExit(
            f"transformers {transformers.__version__} is importable; the references must come from 4.52 "
            "(see this script's docstring for a side install that leaves the project environment alone)"
        )
    torch.set_num_threads(1)
    builders = {"llava_next": write_llava_next, "llava_onevision": write_llava_onevision}
    for kind, build in builders.items():
        if args.only and kind != args.only:
            continue
        directory = args.out_dir / f"release_{kind}"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        print(f"{kind}: writing {directory} with transformers {transformers.__version__}")
        record = build(directory)
        (directory / "reference.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        size = sum(path.stat().st_size for path in directory.iterdir())
        print(f"  {len(list(directory.iterdir()))} files, {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
