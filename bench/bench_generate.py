"""Greedy-generation throughput: TowerVision vs transformers' LlavaNextForConditionalGeneration, same weights.

Prefills one prompt holding a 6-tile image, then greedily generates a fixed number of new tokens. The two models
alternate for `--repeats` rounds after a warm-up round; the best (minimum) time of each is the figure least disturbed
by other processes on a shared machine, and the ratio is taken on it (> 1 means TowerVision is faster). Medians are
printed too. Random weights, offline, CPU by default:

    PYTHONPATH=src python bench/bench_generate.py                         # small-but-not-tiny, ~1 min on 2 idle cores
    PYTHONPATH=src python bench/bench_generate.py --threads 1 --clock cpu  # steadier when other jobs share the CPU
    PYTHONPATH=src python bench/bench_generate.py --tile 224 --text-hidden 1024 --text-layers 8 --repeats 3
"""

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from PIL import Image
from transformers import (
    Gemma2Config,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    SiglipVisionConfig,
)

from towervision_hf import TowerVisionConfig, TowerVisionForConditionalGeneration
from towervision_hf.checkpoint.tiny import build_tiny_tokenizer
from towervision_hf.model.tiling_towervision import anyres_grid_shape


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tile", type=int, default=112, help="tile side in pixels (a multiple of --patch)")
    parser.add_argument("--patch", type=int, default=14)
    parser.add_argument("--vision-hidden", type=int, default=384)
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--text-hidden", type=int, default=512)
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="'cpu' times this process's CPU use: steadier on a busy shared machine (use with --threads 1)",
    )
    return parser.parse_args(argv)


def build_config(args, tokenizer) -> TowerVisionConfig:
    vision = SiglipVisionConfig(
        hidden_size=args.vision_hidden,
        intermediate_size=4 * args.vision_hidden,
        num_hidden_layers=args.vision_layers,
        num_attention_heads=args.vision_hidden // 64,
        image_size=args.tile,
        patch_size=args.patch,
        vision_use_head=False,
    )
    text = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=args.text_hidden,
        intermediate_size=4 * args.text_hidden,
        num_hidden_layers=args.text_layers,
        num_attention_heads=args.text_hidden // 64,
        num_key_value_heads=max(1, args.text_hidden // 128),
        head_dim=64,
        query_pre_attn_scalar=64,
        sliding_window=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<end_of_turn>"),
    )
    return TowerVisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.image_token_id,
        video_token_id=tokenizer.video_token_id,
        scale_image_features=False,
    )


def timed(fn, model, device, clock):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = clock()
    result = fn(model)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return clock() - start, result


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    tokenizer = build_tiny_tokenizer()
    config = build_config(args, tokenizer)
    torch.manual_seed(0)
    ours = TowerVisionForConditionalGeneration._from_config(copy.deepcopy(config), dtype=dtype)
    native_config = LlavaNextConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id,
        image_grid_pinpoints=config.image_grid_pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    native = LlavaNextForConditionalGeneration._from_config(native_config, dtype=dtype)
    native.load_state_dict(ours.state_dict())
    models = {"towervision": ours.to(args.device).eval(), "llava_next": native.to(args.device).eval()}

    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": args.tile},
            crop_size={"height": args.tile, "width": args.tile},
            image_grid_pinpoints=config.image_grid_pinpoints,
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
            do_center_crop=False,
        ),
        tokenizer=tokenizer,
        patch_size=args.patch,
        vision_feature_select_strategy="full",
    )
    size = (2 * args.tile - args.tile // 4, 3 * args.tile)  # 2x3 tiles, with letterbox padding to remove
    rows, cols = anyres_grid_shape(size, config.image_grid_pinpoints, config.tile_size)
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    inputs = processor(images=Image.fromarray(pixels), text="<bos><image>\nDescribe the image.", return_tensors="pt")
    inputs = inputs.to(args.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    prompt_length = inputs["input_ids"].shape[1]
    print(
        f"config: tile {args.tile}px / patch {args.patch} ({rows}x{cols} tiles + thumbnail), "
        f"vision {args.vision_hidden}x"
        f"{args.vision_layers}, text {args.text_hidden}x{args.text_layers}, {args.dtype} on {args.device}, "
        f"{torch.get_num_threads()} threads, {args.clock} clock; prompt {prompt_length} tokens, "
        f"{args.new_tokens} new tokens"
    )

    def generate(model):
        return model.generate(
            **inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False
        )

    def prefill(model):
        with torch.no_grad():
            return model(**inputs, logits_to_keep=1)

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    timings = {name: {"prefill": [], "generate": []} for name in models}
    outputs = {}
    for round_index in range(args.repeats + 1):  # round 0 warms up
        for name, model in models.items():
            prefill_s, _ = timed(prefill, model, args.device, clock)
            generate_s, outputs[name] = timed(generate, model, args.device, clock)
            if round_index:
                timings[name]["prefill"].append(prefill_s)
                timings[name]["generate"].append(generate_s)
    if not torch.equal(outputs["towervision"], outputs["llava_next"]):
        raise SystemExit("the two models generated different tokens")

    best = {name: {k: min(v) for k, v in t.items()} for name, t in timings.items()}
    for name, timing in timings.items():
        prefill_ms = [1e3 * t for t in timing["prefill"]]
        print(
            f"{name:12s} prefill best {min(prefill_ms):8.1f} ms (median {statistics.median(prefill_ms):8.1f})   "
            f"generate best {args.new_tokens / best[name]['generate']:7.1f} tokens/s "
            f"(median {args.new_tokens / statistics.median(timing['generate']):7.1f})"
        )
    generate_ratio = best["llava_next"]["generate"] / best["towervision"]["generate"]
    prefill_ratio = best["llava_next"]["prefill"] / best["towervision"]["prefill"]
    print(
        f"ratio towervision / llava_next (best of {args.repeats}): "
        f"generate {generate_ratio:.3f}x, prefill {prefill_ratio:.3f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
