"""Training-step time and peak memory of TowerVision vs transformers' LlavaOnevisionForConditionalGeneration, and the
stage-1 speed-up of the vision-feature cache. Random weights, offline; CUDA when available, else CPU.

Part `step`: one config, one set of weights, one batch (tiled images, labels on the answers only). A step is
forward + backward + AdamW step; each variant runs in its own process after a warm-up step, so that its peak memory
is its own (CUDA: `max_memory_allocated`; CPU: growth of the process's peak RSS over the steps, i.e. gradients,
optimizer states, activations and logits). Times are the best of `--repeats` steps.

    towervision            the loss as `towervision train` computes it: logits at the labelled positions only
    llava_onevision        `model(**batch, labels=labels)`: the loss a plain transformers Trainer computes
    llava_onevision_fused  theirs through TRL's fused LM head: the loss TRL's SFTTrainer computes
    towervision_logits     ours through the full logits (the same loss path as llava_onevision)

Part `cache`: a stage-1 step (SigLIP2-so400m-shaped tower and LM frozen, projector trained, each image encoded once
as one 384 px tile) without the feature cache and with a warm cache, alternating, best of `--repeats`.

    PYTHONPATH=src python bench/bench_train.py                     # both parts: ~25 min on 2 busy CPU cores, the
                                                                   # full-logit variants at 256k vocabulary dominate
    PYTHONPATH=src python bench/bench_train.py --part step --text-hidden 1024 --text-layers 8 --batch 2
    PYTHONPATH=src python bench/bench_train.py --part cache --cache-batch 4
"""

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import Gemma2Config, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, SiglipVisionConfig
from trl.trainer.utils import add_fused_lm_head

from towervision_hf import TowerVisionConfig, TowerVisionForConditionalGeneration
from towervision_hf.checkpoint.tiny import build_tiny_tokenizer
from towervision_hf.model.processing_towervision import TowerVisionProcessor
from towervision_hf.model.tiling_towervision import default_grid_pinpoints
from towervision_hf.training import SKIPPED_KEY, TowerVisionCollator, VisionFeatureCache
from towervision_hf.training.trainer import labelled_logits


VARIANTS = ("towervision", "llava_onevision", "llava_onevision_fused", "towervision_logits")
SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 26, "num_attention_heads": 16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all", choices=["all", "step", "cache"])
    parser.add_argument("--tile", type=int, default=384)
    parser.add_argument("--patch", type=int, default=14)
    parser.add_argument("--vision-hidden", type=int, default=384, help="step part: vision tower width")
    parser.add_argument("--vision-layers", type=int, default=4, help="step part: vision tower depth")
    parser.add_argument("--text-hidden", type=int, default=256)
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=256002, help="Tower+ / Gemma2 vocabulary by default")
    parser.add_argument("--batch", type=int, default=1, help="step part: samples per batch (one 640x480 image each)")
    parser.add_argument("--cache-batch", type=int, default=2, help="cache part: images per step")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_config(args, vision: dict, max_tiles: int = 6, image_aspect_ratio: str = "anyres") -> TowerVisionConfig:
    tokenizer = build_tiny_tokenizer()
    vision_config = SiglipVisionConfig(image_size=args.tile, patch_size=args.patch, vision_use_head=False, **vision)
    text_config = Gemma2Config(
        vocab_size=args.vocab,
        hidden_size=args.text_hidden,
        intermediate_size=4 * args.text_hidden,
        num_hidden_layers=args.text_layers,
        num_attention_heads=max(1, args.text_hidden // 128),
        num_key_value_heads=max(1, args.text_hidden // 256),
        head_dim=128,
        query_pre_attn_scalar=128,
        sliding_window=4096,
        max_position_embeddings=8192,
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
        image_grid_pinpoints=default_grid_pinpoints(max_tiles, args.tile),
        image_aspect_ratio=image_aspect_ratio,
    )


def make_batch(config, num_samples: int, size: tuple[int, int], seed: int = 0) -> dict:
    """Caption rows with one random image each, collated exactly as `towervision train` does."""
    tokenizer = build_tiny_tokenizer()
    processor = TowerVisionProcessor.from_model_config(config, tokenizer)
    rng = np.random.default_rng(seed)
    rows = [
        {
            "images": [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))],
            "videos": [],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A photo of noise, " * 8}]},
            ],
        }
        for _ in range(num_samples)
    ]
    batch = TowerVisionCollator(processor)(rows)
    batch.pop(SKIPPED_KEY)
    return batch


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def loss_fn(model, inputs, path: str):
    if path == "labelled":  # TowerVisionSFTTrainer.compute_loss
        logits, targets = labelled_logits(model, inputs)
        return torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100)
    if path == "fused":  # TRL's SFTTrainer.compute_loss with loss_type="nll"
        outputs = model(**inputs, fused_lm_head=True)
        return -outputs.log_probs.sum() / outputs.label_mask.sum().clamp(min=1)
    return model(**inputs).loss


def train_steps(model, inputs, path, args, repeats):
    """Warm-up step, then `repeats` timed steps; returns (best wall s, best process-CPU s, per-step wall times)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    walls, cpus = [], []
    for step in range(repeats + 1):
        sync(args.device)
        wall, cpu = time.perf_counter(), time.process_time()
        loss = loss_fn(model, inputs, path)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(args.device)
        if step:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), walls, loss.item()


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> None:
    """One variant in a fresh process; prints a JSON line."""
    config = TowerVisionConfig.from_pretrained(args.workdir)
    dtype = getattr(torch, args.dtype)
    if args.worker.startswith("towervision"):
        model = TowerVisionForConditionalGeneration.from_pretrained(args.workdir, dtype=dtype)
    else:
        native_config = LlavaOnevisionConfig(
            vision_config=config.vision_config.to_dict(),
            text_config=config.text_config.to_dict(),
            image_token_index=config.image_token_id,
            video_token_index=config.video_token_id,
            image_grid_pinpoints=config.image_grid_pinpoints,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            tie_word_embeddings=True,
        )
        model = LlavaOnevisionForConditionalGeneration._from_config(native_config, dtype=dtype)
        missing, unexpected = model.load_state_dict(
            load_file(os.path.join(args.workdir, "model.safetensors")), strict=False
        )
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise SystemExit(f"weights do not match LlavaOnevision: missing {missing}, unexpected {unexpected}")
        model.tie_weights()
    model.to(args.device).train()
    path = {"towervision": "labelled", "llava_onevision_fused": "fused"}.get(args.worker, "logits")
    if path == "fused":
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    inputs = {k: v.to(args.device) for k, v in load_file(os.path.join(args.workdir, "batch.safetensors")).items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    baseline = rss_mb()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    best_wall, best_cpu, walls, loss = train_steps(model, inputs, path, args, args.repeats)
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    print(
        json.dumps(
            {"wall": best_wall, "cpu": best_cpu, "median": statistics.median(walls), "peak_mb": peak, "loss": loss}
        )
    )


def step_part(args) -> None:
    config = build_config(
        args,
        {
            "hidden_size": args.vision_hidden,
            "intermediate_size": 4 * args.vision_hidden,
            "num_hidden_layers": args.vision_layers,
            "num_attention_heads": max(1, args.vision_hidden // 64),
        },
    )
    batch = make_batch(config, args.batch, (480, 640))
    tokens = batch["input_ids"].shape[1]
    print(
        f"[step] vision {args.vision_hidden}x{args.vision_layers}, text {args.text_hidden}x{args.text_layers}, vocab "
        f"{args.vocab}, {args.dtype} on {args.device}; batch {args.batch} x {tokens} tokens "
        f"({int((batch['input_ids'] == config.image_token_id).sum())} image tokens, "
        f"{int((batch['labels'] != -100).sum())} labelled)"
    )
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        torch.manual_seed(0)
        TowerVisionForConditionalGeneration(config).save_pretrained(workdir)
        save_file({k: v.contiguous() for k, v in batch.items()}, os.path.join(workdir, "batch.safetensors"))
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--worker", variant, "--workdir", workdir, *sys.argv[1:]]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[variant]
            print(
                f"  {variant:22s} step best {1e3 * r['wall']:8.1f} ms (median {1e3 * r['median']:8.1f}, "
                f"CPU {1e3 * r['cpu']:8.1f})  peak {r['peak_mb']:8.1f} MB  loss {r['loss']:.4f}"
            )
    for ours, theirs, what in (
        ("towervision", "llava_onevision", "towervision train vs a transformers Trainer"),
        ("towervision", "llava_onevision_fused", "towervision train vs TRL's SFTTrainer"),
        ("towervision_logits", "llava_onevision", "both through the full logits"),
    ):
        a, b = results[ours], results[theirs]
        print(
            f"  ratio {ours}/{theirs} ({what}): time {a['wall'] / b['wall']:.3f}x, memory "
            f"{a['peak_mb'] / b['peak_mb']:.3f}x"
        )


def cache_part(args) -> None:
    config = build_config(args, SO400M, image_aspect_ratio="square")  # stage 1: each image encoded once
    batch = make_batch(config, args.cache_batch, (args.tile, args.tile), seed=1)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    plain = TowerVisionForConditionalGeneration(config).to(args.device, dtype)
    for name, param in plain.named_parameters():
        param.requires_grad_("multi_modal_projector" in name)
    cached = copy.deepcopy(plain)
    inputs = {k: v.to(args.device) for k, v in batch.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    tiles = args.cache_batch
    print(
        f"[cache] stage 1: so400m-shaped frozen tower (1152x26), frozen text {args.text_hidden}x{args.text_layers} "
        f"(vocab {args.vocab}), {args.dtype} on {args.device}; {args.cache_batch} images x 1 tile = "
        f"{tiles} tiles per step, {batch['input_ids'].shape[1]} tokens per sample"
    )
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = VisionFeatureCache(cache_dir).attach(cached)
        with torch.no_grad():
            loss_fn(cached, inputs, "labelled")  # warm the cache
        timings = {"no cache": [], "warm cache": []}
        losses = {}
        optimizers = {
            name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
            for name, m in (("no cache", plain), ("warm cache", cached))
        }
        for round_index in range(args.repeats + 1):
            for name, model in (("no cache", plain), ("warm cache", cached)):
                sync(args.device)
                start = time.perf_counter()
                loss = loss_fn(model, inputs, "labelled")
                loss.backward()
                optimizers[name].step()
                optimizers[name].zero_grad(set_to_none=True)
                sync(args.device)
                if round_index:
                    timings[name].append(time.perf_counter() - start)
                losses.setdefault(name, []).append(loss.item())
    for name, values in timings.items():
        print(f"  {name:10s} step best {1e3 * min(values):9.1f} ms (median {1e3 * statistics.median(values):9.1f})")
    same = np.allclose(losses["no cache"], losses["warm cache"], rtol=1e-5)
    print(
        f"  losses {'identical' if same else 'DIFFER'} over {len(losses['no cache'])} steps; "
        f"cache hits {cache.hits}, misses {cache.misses}"
    )
    print(f"  speed-up with a warm cache: {min(timings['no cache']) / min(timings['warm cache']):.2f}x")


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return 0
    if args.part in ("all", "step"):
        step_part(args)
    if args.part in ("all", "cache"):
        cache_part(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
