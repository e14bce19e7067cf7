"""Training tokens per second with packed rows vs padded batches, on a VisionBlocks-like length mix, in one run.

The mix follows the category shares of the paper's Table 8 (VisionBlocks): text-only EuroBlocks conversations,
captions and VQA over one tiled image (photos, charts, documents, infographics, each with realistic sizes), a few
multi-image samples (one tile per image) and 32-frame videos. `--samples` rows are drawn once (seeded) and trained on
once by each strategy, in the same process, with the same initial weights:

    packed          `towervision train --packing true`: first-fit-decreasing rows of `max_length` tokens
                    (`training.packing`), `--rows` rows per step, sample-wise eager attention (`training.attention`:
                    each sample's block of scores only)
    packed_row      the same rows under transformers' eager attention: the whole row's scores, masked at sample
                    boundaries (what packing costs without the sample-wise path)
    padded_random   `TowerVisionCollator`, `--batch` samples per step in random order, padded to the longest
    padded_grouped  the same batches after length grouping (transformers' `group_by_length`: megabatches of 50
                    batches sorted by length), padded to the longest

A step is forward (labelled-position loss, as `towervision train`) + backward, timed, then an untimed AdamW step;
collation is done beforehand and not timed. Steps are timed in process CPU time and the strategies take turns step
by step, so that the load of a shared machine hits them alike. Tokens/s counts real tokens only (the same total for
every strategy), so padding shows up as lost throughput. Part `real` reports the pack efficiency, samples per row
and padding fractions of the same mix at the real model's scale (384 px tiles of 14 px patches, 32 frames,
`max_length` 8192), per training stage; it only measures lengths (header sizes, tokenized text), no model runs.

The model is a tiny-but-not-trivial TowerVision (SigLIP 2 x 64, Gemma2 4 x 128, eager attention with both
softcaps and alternating sliding/global layers) on 56 px tiles of 8 px patches: 49 tokens per tile and 16 per
video frame instead of 729 and 196, with every text length, image size and `max_length` scaled by the same factor,
so that lengths keep the real proportions. CPU, one thread, ~3 min per mix:

    PYTHONPATH=src python bench/bench_packing.py
    PYTHONPATH=src python bench/bench_packing.py --part speed --mix stage2   # the image stage: no videos
"""

import argparse
import copy
import random
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image
from transformers import Gemma2Config, SiglipVisionConfig

from towervision_hf import TowerVisionConfig, TowerVisionForConditionalGeneration
from towervision_hf.checkpoint.tiny import build_tiny_tokenizer
from towervision_hf.model.processing_towervision import TowerVisionProcessor
from towervision_hf.model.tiling_towervision import default_grid_pinpoints, pooled_side
from towervision_hf.training import SKIPPED_KEY, TowerVisionCollator
from towervision_hf.training.attention import SAMPLE_EAGER
from towervision_hf.training.packing import PACKING_KEY, Packer, SampleMeasure, TowerVisionPackedCollator
from towervision_hf.training.trainer import labelled_logits


REAL_TILE, REAL_PATCH, REAL_MAX_LENGTH = 384, 14, 8192
# Table 8 of the TowerVision paper (VisionBlocks), shares of the 6.3M samples per kind of row built here:
# EuroBlocks-SFT is text-only; PixMo-Cap (+ translated) are long captions; every other image source is VQA
# (short answers, 1-3 turns); LLaVA-Video-178k (+ translated) are 32-frame videos. Table 8 has no multi-image
# category: 5% of the VQA share (the Pangea-Multi / cultural sources) is drawn as 2-4 images of one tile each.
SHARES = {"text": 17.34, "caption": 16.95, "vqa": 41.83, "multi_image": 2.20, "video": 22.10}
# (width, height) of the images of each VQA source family, with their weights: photos (VQAv2, OKVQA, TallyQA,
# cultural), charts/plots (DVQA, PlotQA, ChartQA), documents (DocVQA, PixMo-Docs), infographics.
IMAGE_KINDS = {
    "photo": (0.70, [(640, 480), (480, 640), (640, 427), (500, 375), (1024, 768)]),
    "chart": (0.20, [(800, 600), (1000, 700), (600, 450)]),
    "document": (0.07, [(1700, 2200), (1240, 1754), (800, 1100)]),
    "infographic": (0.03, [(1000, 3000), (1080, 2500), (900, 1600)]),
}
STAGES = {"stage1": ("caption",), "stage2": ("text", "caption", "vqa", "multi_image"), "stage3": ("video",)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all", choices=["all", "speed", "real"])
    parser.add_argument("--samples", type=int, default=128, help="rows of the mix each strategy trains on")
    parser.add_argument(
        "--mix",
        default="all",
        choices=["all", "stage2", "stage3"],
        help="part `speed`: Table 8's whole mix, or the rows of one training stage (stage2: no videos)",
    )
    parser.add_argument("--tile", type=int, default=56)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="samples per padded batch (stage-1 recipe: 8)")
    parser.add_argument("--rows", type=int, default=4, help="packed rows per step")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--real-samples", type=int, default=1000, help="rows of the mix measured by part `real`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (1: process CPU time is then the work done; with more, threads spinning at "
        "every small op's barrier count as CPU time, most on a busy machine and most for the many small ops of "
        "sample-wise attention)",
    )
    return parser.parse_args(argv)


def lognormal(rng, median: float, sigma: float = 0.6, low: int = 2) -> int:
    return max(low, int(rng.lognormvariate(np.log(median), sigma)))


def text(rng, tokens: int) -> str:
    """About `tokens` tokens of the tiny tokenizer (one per character)."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz    ") for _ in range(tokens)).strip() or "a"


def draw_row(rng, kind: str, scale: float, side_scale: float, index: int, sizes_only: bool = False) -> dict:
    """One schema row of `kind`; text lengths divided by `scale`, image sides multiplied by `side_scale`. With
    `sizes_only`, images are zero-stride arrays (their size is all `SampleMeasure` reads) instead of PIL images."""

    def say(median, sigma=0.6):
        return text(rng, max(2, round(lognormal(rng, median, sigma) / scale)))

    def picture(kinds=IMAGE_KINDS):
        names = list(kinds)
        family = rng.choices(names, weights=[kinds[name][0] for name in names])[0]
        width, height = rng.choice(kinds[family][1])
        jitter = rng.uniform(0.8, 1.2)
        size = (max(8, round(width * jitter * side_scale)), max(8, round(height * jitter * side_scale)))
        if sizes_only:
            return np.broadcast_to(np.zeros(3, np.uint8), (size[1], size[0], 3))
        return Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))

    def turns(first_user, turns_count, answer_median):
        messages = [{"role": "user", "content": first_user + [{"type": "text", "text": say(40)}]}]
        messages.append({"role": "assistant", "content": [{"type": "text", "text": say(answer_median)}]})
        for _ in range(turns_count - 1):
            messages.append({"role": "user", "content": [{"type": "text", "text": say(30)}]})
            messages.append({"role": "assistant", "content": [{"type": "text", "text": say(answer_median)}]})
        return messages

    image_block, video_block = {"type": "image"}, {"type": "video"}
    row = {"id": f"{kind}-{index}", "images": [], "videos": []}
    if kind == "text":
        row["messages"] = turns([], rng.choice([1, 1, 2, 3]), 220)
        row["messages"][0]["content"][0]["text"] = say(150)
    elif kind == "caption":
        row["images"] = [picture({"photo": IMAGE_KINDS["photo"]})]
        row["messages"] = turns([image_block], 1, 200)
    elif kind == "vqa":
        row["images"] = [picture()]
        row["messages"] = turns([image_block], rng.choice([1, 1, 2, 3]), 12)
    elif kind == "multi_image":
        row["images"] = [picture() for _ in range(rng.randint(2, 4))]
        row["messages"] = turns([image_block] * len(row["images"]), 1, 30)
    else:
        frames = np.zeros((4, round(360 * side_scale), round(640 * side_scale), 3), np.uint8)
        row["videos"] = [frames]
        row["messages"] = turns([video_block], rng.choice([1, 2]), 60)
    return row


def draw_mix(count: int, seed: int, scale: float, side_scale: float, kinds=tuple(SHARES), sizes_only=False):
    rng = random.Random(seed)
    weights = [SHARES[kind] for kind in kinds]
    return [
        draw_row(rng, rng.choices(kinds, weights=weights)[0], scale, side_scale, i, sizes_only) for i in range(count)
    ]


def build_config(args, tokenizer, max_tiles: int = 6) -> TowerVisionConfig:
    vision_config = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=args.tile,
        patch_size=args.patch,
        vision_use_head=False,
    )
    text_config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        query_pre_attn_scalar=64,
        sliding_window=256,
        max_position_embeddings=16384,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<end_of_turn>"),
    )
    return TowerVisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.image_token_id,
        video_token_id=tokenizer.video_token_id,
        max_tiles=max_tiles,
        num_frames=args.frames,
        image_grid_pinpoints=default_grid_pinpoints(max_tiles, args.tile),
    )


def length_grouped(order: list[int], lengths: list[int], batch: int, rng: random.Random) -> list[list[int]]:
    """transformers' `get_length_grouped_indices`: megabatches of 50 batches, each sorted by length, longest first."""
    megabatch = 50 * batch
    grouped = []
    for start in range(0, len(order), megabatch):
        grouped += sorted(order[start : start + megabatch], key=lambda i: -lengths[i])
    batches = [grouped[i : i + batch] for i in range(0, len(grouped), batch)]
    rng.shuffle(batches)
    return batches


def batch_stats(batches: list[dict]) -> tuple[int, int]:
    """(real tokens, tokens of the input tensors) over collated batches."""
    real = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else int(b[PACKING_KEY][2]) for b in batches)
    return real, sum(b["input_ids"].numel() for b in batches)


def train_step(model, optimizer, batch: dict) -> float:
    """CPU seconds (process time: steadier than wall time on a shared machine) of forward + backward on `batch`; the
    AdamW step follows, untimed (its cost does not depend on the batch layout, and on CPU it would dwarf the tiny
    model's per-step compute)."""
    inputs = {k: v for k, v in batch.items() if k not in (SKIPPED_KEY, PACKING_KEY)}
    start = time.process_time()
    logits, targets = labelled_logits(model, inputs)
    loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100)
    loss.backward()
    seconds = time.process_time() - start
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return seconds


def train_interleaved(initial, strategies: dict[str, list[dict]], attention: dict[str, str]) -> dict[str, float]:
    """Seconds per strategy for one step per batch, each on its own copy of `initial` with the language model's
    attention `attention[name]`; the strategies take turns step by step, so that a change in machine load hits them
    alike. One untimed warm-up step each."""
    runs = {}
    for name, batches in strategies.items():
        model = copy.deepcopy(initial)
        model.set_attn_implementation({"text_config": attention[name]})
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        train_step(model, optimizer, batches[0])
        runs[name] = (model, optimizer, iter(batches))
    seconds = dict.fromkeys(strategies, 0.0)
    while runs:
        for name in list(runs):
            model, optimizer, batches = runs[name]
            batch = next(batches, None)
            if batch is None:
                del runs[name]
            else:
                seconds[name] += train_step(model, optimizer, batch)
    return seconds


def speed_part(args) -> None:
    tokenizer = build_tiny_tokenizer()
    config = build_config(args, tokenizer)
    tile_tokens = (args.tile // args.patch) ** 2
    scale = (REAL_TILE // REAL_PATCH) ** 2 / tile_tokens
    max_length = round(REAL_MAX_LENGTH / scale)
    # frames per video such that a video keeps its real length (6,273 tokens) at this scale
    per_frame = pooled_side(args.tile // args.patch, config.video_pool_size) ** 2
    real_per_frame = pooled_side(REAL_TILE // REAL_PATCH, config.video_pool_size) ** 2
    frames = max(1, round(args.frames * real_per_frame / (scale * per_frame)))
    config.num_frames = frames
    processor = TowerVisionProcessor.from_model_config(config, tokenizer)
    kinds = tuple(SHARES) if args.mix == "all" else STAGES[args.mix]
    rows = draw_mix(args.samples, args.seed, scale, args.tile / REAL_TILE, kinds)
    measure = SampleMeasure(processor, frames)
    lengths = [measure(row)[0] for row in rows]
    keep = [i for i, n in enumerate(lengths) if n <= max_length]
    rng = random.Random(args.seed)
    order = keep[:]
    rng.shuffle(order)

    padded = TowerVisionCollator(processor, num_frames=frames)
    random_batches = [order[i : i + args.batch] for i in range(0, len(order), args.batch)]
    grouped_batches = length_grouped(order, lengths, args.batch, rng)
    packs = [pack for pack, _ in Packer(measure, max_length, buffer_size=len(order)).pack([rows[i] for i in order])]
    packed = TowerVisionPackedCollator(processor, max_length=max_length, num_frames=frames)
    packed_batches = [
        packed([{"packed_rows": p, SKIPPED_KEY: 0} for p in packs[i : i + args.rows]])
        for i in range(0, len(packs), args.rows)
    ]
    strategies = {
        "packed": packed_batches,
        "packed_row": packed_batches,
        "padded_random": [padded([rows[i] for i in b]) for b in random_batches],
        "padded_grouped": [padded([rows[i] for i in b]) for b in grouped_batches],
    }
    print(
        f"[speed] mix {args.mix}: {len(keep)} samples ({len(rows) - len(keep)} over max_length={max_length} "
        "skipped), tile "
        f"{args.tile} px / patch {args.patch} ({tile_tokens} tokens per tile, {frames} frames per video: lengths "
        f"scaled 1/{scale:.2f}); vision 2x64, text 4x128 eager; {args.batch} samples per padded batch, {args.rows} "
        f"packed row(s) of {max_length} per step; "
        f"mean length {statistics.mean(lengths[i] for i in keep):.0f}, max {max(lengths[i] for i in keep)}"
    )
    torch.manual_seed(args.seed)
    initial = TowerVisionForConditionalGeneration._from_config(config, attn_implementation="eager").train()
    attention = dict.fromkeys(strategies, "eager") | {"packed": SAMPLE_EAGER}
    timings = train_interleaved(initial, strategies, attention)
    results = {}
    for name, batches in strategies.items():
        real, total = batch_stats(batches)
        seconds = timings[name]
        results[name] = real / seconds
        extra = ""
        if name.startswith("packed"):
            efficiency = real / (sum(int(b[PACKING_KEY][1]) for b in batches) * max_length)
            extra = f", pack efficiency {efficiency:.3f}, {len(keep) / len(packs):.2f} samples per row"
        print(
            f"  {name:15s} {len(batches):4d} steps {seconds:7.1f} CPU s {results[name]:8.0f} tokens/s  padding "
            f"{1 - real / total:.3f} of {total} input tokens{extra}"
        )
    for baseline in ("padded_random", "padded_grouped", "packed_row"):
        print(f"  ratio packed/{baseline}: {results['packed'] / results[baseline]:.2f}x tokens/s")


def real_part(args) -> None:
    """Length statistics of the mix at the real model's scale, per stage."""
    tokenizer = build_tiny_tokenizer()
    args_real = argparse.Namespace(**{**vars(args), "tile": REAL_TILE, "patch": REAL_PATCH})
    for stage, kinds in {"all": tuple(SHARES), **STAGES}.items():
        max_tiles = 1 if stage == "stage1" else 6
        processor = TowerVisionProcessor.from_model_config(build_config(args_real, tokenizer, max_tiles), tokenizer)
        measure = SampleMeasure(processor, args.frames)
        costs = [measure(row) for row in draw_mix(args.real_samples, args.seed, 1.0, 1.0, kinds, sizes_only=True)]
        kept = [cost for cost in costs if cost[0] <= REAL_MAX_LENGTH]
        packs = [p for p, _ in Packer(lambda cost: cost, REAL_MAX_LENGTH, buffer_size=1000).pack(kept)]
        tokens = sum(t for t, _ in kept)
        rng = random.Random(args.seed)
        lengths = [t for t, _ in kept]
        order = list(range(len(kept)))
        rng.shuffle(order)
        padded = {}
        for batch in (2, 8):
            random_batches = [order[i : i + batch] for i in range(0, len(order), batch)]
            for name, batches in (("random", random_batches), ("grouped", length_grouped(order, lengths, batch, rng))):
                capacity = sum(len(b) * max(lengths[i] for i in b) for b in batches)
                padded[f"{name} b{batch}"] = 1 - tokens / capacity
        print(
            f"[real] {stage:6s} {len(kept)} samples (mean {tokens / len(kept):.0f} tokens, {len(costs) - len(kept)} "
            f"over {REAL_MAX_LENGTH}): pack efficiency {tokens / (len(packs) * REAL_MAX_LENGTH):.3f}, "
            f"{len(kept) / len(packs):.2f} samples per row, max {max(t for _, t in kept)} tiles+frames in a sample; "
            "padding fraction " + ", ".join(f"{k} {v:.3f}" for k, v in padded.items())
        )


def main(argv=None):
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part in ("all", "real"):
        real_part(args)
    if args.part in ("all", "speed"):
        speed_part(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
