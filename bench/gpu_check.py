"""One command for the day a GPU is lent: the scale-out paths CI cannot run, at the TowerVision-2B geometry with random
weights (SigLIP2-so400m/14@384, Gemma2-2B, 256k vocabulary), offline, in about 5 minutes on one H100.

    train       stage-2 training steps (vision tower, projector and LM trained; AdamW; activation checkpointing) in
                bf16, padded batches vs the same samples packed into one row, under FlashAttention 2 (flattened
                varlen row; only where `flash_attn` installs) and eager (packed: sample-wise eager), the SigLIP tower
                under SDPA (transformers refuses SDPA for Gemma2, which softcaps its scores): tokens/s (real tokens)
                and peak memory
    qlora       `towervision train --use_peft true --load_in_4bit true`, 2 steps: 4-bit LM layers asserted
    engines     `towervision train` on one GPU process under accelerate's FSDP2 (recipes/accelerate/fsdp2.yaml) and
                DeepSpeed ZeRO-3 (recipes/accelerate/deepspeed_zero3.yaml, when deepspeed is installed), 2 steps each
    generate    greedy tokens/s of TowerVision vs transformers' LlavaOnevisionForConditionalGeneration with the same
                weights on a 6-tile image prompt (whether they generate the same tokens, and how far apart their
                prefill logits are: random weights give near-ties that rounding can flip)

    PYTHONPATH=src python bench/gpu_check.py                          # H100: every part, JSON in --workdir
    PYTHONPATH=src python bench/gpu_check.py --device cpu --tiny      # CPU smoke run at the tiny geometry (float32;
                                                                      # the reference varlen attention stands in
                                                                      # for FlashAttention, engines need a GPU)
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import Gemma2Config, LlavaOnevisionForConditionalGeneration, SiglipVisionConfig

from towervision_hf import TowerVisionConfig, TowerVisionForConditionalGeneration, train
from towervision_hf.checkpoint.convert import native_config_from_towervision
from towervision_hf.checkpoint.tiny import build_tiny_tokenizer, tiny_config
from towervision_hf.model.processing_towervision import TowerVisionProcessor
from towervision_hf.model.tiling_towervision import default_grid_pinpoints
from towervision_hf.training import SKIPPED_KEY, TowerVisionCollator
from towervision_hf.training.attention import SAMPLE_EAGER
from towervision_hf.training.packing import PACKING_KEY, TowerVisionPackedCollator
from towervision_hf.training.trainer import labelled_logits
from towervision_hf.training.varlen import REFERENCE_FLASH_VARLEN


ROOT = Path(__file__).resolve().parents[1]
PARTS = ("train", "qlora", "engines", "generate")
SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16}
GEMMA2_2B = {"hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8,
             "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256}  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny test geometry in float32 (CPU smoke run)")
    parser.add_argument("--samples", type=int, default=2, help="train: samples per step (one image each)")
    parser.add_argument("--steps", type=int, default=3, help="train: timed steps after a warm-up step")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--workdir", default=None, help="where the random checkpoint and results.json go")
    return parser.parse_args(argv)


def build_config(tiny: bool) -> TowerVisionConfig:
    tokenizer = build_tiny_tokenizer()
    if tiny:
        return tiny_config(tokenizer)
    text = Gemma2Config(
        vocab_size=256000, sliding_window=4096, max_position_embeddings=8192, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.convert_tokens_to_ids("<end_of_turn>"),
        **GEMMA2_2B,
    )  # fmt: skip
    vision = SiglipVisionConfig(image_size=384, patch_size=14, vision_use_head=False, **SO400M)
    return TowerVisionConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id,
        video_token_id=tokenizer.video_token_id, max_tiles=6, image_grid_pinpoints=default_grid_pinpoints(6, 384),
    )  # fmt: skip


def sample_rows(count: int, tile: int, seed: int = 0) -> list[dict]:
    """Caption rows of one random image each (2x3 tiles and a thumbnail) and answers of random lengths."""
    rng = np.random.default_rng(seed)
    return [
        {
            "images": [Image.fromarray(rng.integers(0, 256, (2 * tile, 3 * tile, 3), dtype=np.uint8))],
            "videos": [],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Noise. " * int(rng.integers(8, 80))}]},
            ],
        }
        for _ in range(count)
    ]  # fmt: skip


def peak_memory_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_part(args, config, processor, dtype) -> dict:
    """Stage-2 steps, padded vs packed, per attention implementation; one model, a fresh optimizer per variant."""
    torch.manual_seed(0)
    with torch.device(args.device):
        model = TowerVisionForConditionalGeneration._from_config(config, dtype=dtype)
    model.gradient_checkpointing_enable()
    model.train()
    flash = None
    if args.device.startswith("cuda"):
        try:
            import flash_attn  # noqa: F401

            flash = "flash_attention_2"
        except ImportError:
            print("[train] flash_attn is not installed: FlashAttention 2 left out")
    else:
        flash = REFERENCE_FLASH_VARLEN  # the pure-torch varlen reference: the flattened-row path, not its speed
    rows = [sample_rows(args.samples, config.tile_size, seed=step) for step in range(args.steps + 1)]
    results = {}
    for attention in [name for name in (flash, "eager") if name]:
        for layout in ("padded", "packed"):
            text_attention = SAMPLE_EAGER if (attention, layout) == ("eager", "packed") else attention
            model.set_attn_implementation({"text_config": text_attention, "vision_config": "sdpa"})
            if layout == "padded":
                collate = TowerVisionCollator(processor)
            else:
                collate = TowerVisionPackedCollator(processor, max_length=1 << 20, flatten="flash" in attention)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            times, tokens = [], 0
            try:
                for step, step_rows in enumerate(rows):
                    batch = (
                        collate(step_rows)
                        if layout == "padded"
                        else collate([{"packed_rows": step_rows, SKIPPED_KEY: 0}])
                    )
                    real = (
                        int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch[PACKING_KEY][2])
                    )
                    inputs = {k: v.to(args.device) for k, v in batch.items() if k not in (SKIPPED_KEY, PACKING_KEY)}
                    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
                    sync(args.device)
                    start = time.perf_counter()
                    logits, targets = labelled_logits(model, inputs)
                    loss = torch.nn.functional.cross_entropy(
                        logits.float().transpose(1, 2), targets, ignore_index=-100
                    )
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    sync(args.device)
                    if step:
                        times.append(time.perf_counter() - start)
                        tokens += real
                result = {
                    "tokens/s": tokens / sum(times),
                    "peak GiB": peak_memory_gib(args.device),
                    "loss": loss.item(),
                }
            except torch.OutOfMemoryError:
                result = {"error": "out of memory"}
            del optimizer
            results[f"{attention}/{layout}"] = result
            print(f"[train] {attention:34s} {layout:6s} {json.dumps(result)}")
    del model
    return results


def save_checkpoint(config, processor, folder: Path, dtype) -> None:
    torch.manual_seed(0)
    TowerVisionForConditionalGeneration._from_config(config, dtype=dtype).save_pretrained(folder)
    processor.save_pretrained(folder)


def train_argv(args, folder: Path, output_dir: Path, dtype) -> list[str]:
    bf16 = dtype == torch.bfloat16
    return [
        str(ROOT / "recipes/tiny/stage2_vision.yaml"), "--model_name_or_path", str(folder), "--output_dir",
        str(output_dir), "--max_steps", "2", "--logging_steps", "1", "--max_length", "8192", "--dtype",
        str(dtype).removeprefix("torch."), "--bf16", str(bf16).lower(), "--use_cpu", str(args.device == "cpu").lower(),
        "--disable_tqdm", "true", "--activation_checkpointing", "true",
    ]  # fmt: skip


def qlora_part(args, folder: Path, workdir: Path, dtype) -> dict:
    start = time.perf_counter()
    argv = [*train_argv(args, folder, workdir / "qlora", dtype), "--use_peft", "true", "--load_in_4bit", "true"]
    trainer = train.run(argv)
    import bitsandbytes as bnb

    quantized = sum(isinstance(module, bnb.nn.Linear4bit) for module in trainer.model.modules())
    summary = json.loads((workdir / "qlora" / "train_summary.json").read_text())
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = {"4-bit linear layers": quantized, "quantization": summary["quantization"], "losses": losses,
              "wall s": time.perf_counter() - start, "peak GiB": peak_memory_gib(args.device)}  # fmt: skip
    print(f"[qlora] {json.dumps(result)}")
    del trainer
    return result


def engines_part(args, folder: Path, workdir: Path, dtype) -> dict:
    """`towervision train` under accelerate's FSDP2 and DeepSpeed ZeRO-3 on one GPU process, each in its own launch."""
    results = {}
    for name, config_file in (("fsdp2", "fsdp2.yaml"), ("zero3", "deepspeed_zero3.yaml")):
        if name == "zero3" and importlib.util.find_spec("deepspeed") is None:
            results[name] = {"skipped": "deepspeed is not installed"}
            continue
        output_dir = workdir / name
        command = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(ROOT / "recipes/accelerate" / config_file),
            "--num_processes", "1", "-m", "towervision_hf.train", *train_argv(args, folder, output_dir, dtype),
            "--save_strategy", "no",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
        )
        if done.returncode:
            results[name] = {"error": done.stderr[-2000:]}
        else:
            summary = json.loads((output_dir / "train_summary.json").read_text())
            results[name] = {"wall s": time.perf_counter() - start, "steps": summary["global_step"],
                             "sharding": summary.get("fsdp2") or summary.get("zero3")}  # fmt: skip
        print(f"[engines] {name}: {json.dumps(results[name])[:2000]}")
    return results


def generate_part(args, folder: Path, processor, dtype) -> dict:
    # native llava classes do not scale image features (`scale_image_features`): compare like with like
    ours = TowerVisionForConditionalGeneration.from_pretrained(folder, dtype=dtype, scale_image_features=False)
    ours = ours.to(args.device).eval()
    native_config = native_config_from_towervision(ours.config, "llava_onevision")
    native = LlavaOnevisionForConditionalGeneration._from_config(native_config, dtype=dtype)
    native.load_state_dict(ours.state_dict())
    native = native.to(args.device).eval()
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    image = sample_rows(1, ours.config.tile_size)[0]["images"][0]
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(args.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    with torch.no_grad():
        prefill = {name: model(**inputs).logits.float() for name, model in (("ours", ours), ("native", native))}
    results, outputs = {}, {}
    for round_index in range(3):  # round 0 warms up
        for name, model in (("towervision", ours), ("llava_onevision", native)):
            sync(args.device)
            start = time.perf_counter()
            outputs[name] = model.generate(
                **inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False
            )
            sync(args.device)
            if round_index:
                rate = args.new_tokens / (time.perf_counter() - start)
                results[name] = max(results.get(name, 0.0), rate)
    result = {"tokens/s": results, "same tokens": torch.equal(outputs["towervision"], outputs["llava_onevision"]),
              "prefill logits max abs difference": (prefill["ours"] - prefill["native"]).abs().max().item(),
              "prompt tokens": inputs["input_ids"].shape[1]}  # fmt: skip
    print(f"[generate] {json.dumps(result)}")
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        raise SystemExit(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    config = build_config(args.tiny)
    processor = TowerVisionProcessor.from_model_config(config, build_tiny_tokenizer())
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{'tiny' if args.tiny else '2B'} geometry, {str(dtype).removeprefix('torch.')} on {device_name}")
    results = {"device": device_name, "geometry": "tiny" if args.tiny else "2b"}
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        folder = workdir / "checkpoint"
        if set(parts) - {"train"}:
            save_checkpoint(config, processor, folder, dtype)
        for part in parts:
            start = time.perf_counter()
            if part == "train":
                results[part] = train_part(args, config, processor, dtype)
            elif part == "qlora":
                results[part] = qlora_part(args, folder, workdir, dtype)
            elif part == "engines":
                if args.device == "cpu":
                    print("[engines] skipped: accelerate enables FSDP and DeepSpeed ZeRO-3 on GPUs only")
                    results[part] = {"skipped": "cpu"}
                else:
                    results[part] = engines_part(args, folder, workdir, dtype)
            else:
                results[part] = generate_part(args, folder, processor, dtype)
            print(f"[{part}] {time.perf_counter() - start:.1f} s")
        if args.workdir:
            (workdir / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
