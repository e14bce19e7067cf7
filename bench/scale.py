"""The tools around the model at real scale: wall time and peak RSS of each step, at the TowerVision-2B (or 9B)
geometry.

Builds random-weight stand-ins offline, streamed shard by shard (never the full model in memory): a SigLIP2-so400m
shaped `SiglipModel` (vision and text towers) and a Gemma2-2B / 9B shaped `Gemma2ForCausalLM` with a 256k-entry
tokenizer carrying Gemma's special tokens. Then, each step in its own process (peak RSS of the whole process tree,
sampled every 50 ms):

    init            `towervision init --vision SIGLIP --text GEMMA2 OUT` as the README writes it (no --dtype)
    export          `towervision export OUT NATIVE --format llava_next`
    convert         `towervision convert NATIVE CONVERTED`
    generate        load + greedy generation on a one-tile image prompt, ours then native LlavaNext (the export)
    push            `towervision push OUT --dry-run`, load check included
    lora            one LoRA (r=64, LM only) step, stage-2 style
    stage1          one stage-1 step (projector + newline trained) without, then with a warm feature cache

    PYTHONPATH=src python bench/scale.py --geometry 2b --workdir /tmp/scale-2b      # all steps
    PYTHONPATH=src python bench/scale.py --steps standins,init,generate,lora,stage1 --model-dtype float32  # CPU
    PYTHONPATH=src python bench/scale.py --geometry 9b --steps standins,init,export,convert  # 9B checkpoint tools
    PYTHONPATH=src python bench/scale.py --small                                     # toy widths, in-process (CI)

`--small` runs the same steps at toy widths in one process (the RSS column is then the process's, not the step's).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image
from transformers import Gemma2Config, Gemma2ForCausalLM, GemmaTokenizer, SiglipConfig, SiglipModel

from towervision_hf.checkpoint.weights import DTYPE_CODES, PlannedTensor, parse_size, write_shards


STEPS = ("standins", "init", "export", "convert", "generate", "push", "lora", "stage1")
GEOMETRIES = {
    "small": {
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
                   "image_size": 56, "patch_size": 8},
        "siglip_text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "vocab_size": 64},
        "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "num_key_value_heads": 1, "head_dim": 32, "query_pre_attn_scalar": 32},
        "vocab": 1024,
    },
    "2b": {  # google/siglip2-so400m-patch14-384, Unbabel/Tower-Plus-2B (Gemma2-2B)
        "vision": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
                   "image_size": 384, "patch_size": 14},
        "siglip_text": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                        "num_attention_heads": 16, "vocab_size": 256000, "max_position_embeddings": 64},
        "text": {"hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8,
                 "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256},
        "vocab": 256000,
    },
}  # fmt: skip
GEOMETRIES["9b"] = {  # Unbabel/Tower-Plus-9B (Gemma2-9B)
    **GEOMETRIES["2b"],
    "text": {"hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 256, "query_pre_attn_scalar": 256},
}  # fmt: skip
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
PROMPT = "Describe this image in one sentence."
NEW_TOKENS = 8


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", default="2b", choices=sorted(GEOMETRIES))
    parser.add_argument("--small", action="store_true", help="toy widths, every step in this process (CI)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--workdir", default=None, help="keep the checkpoints here (default: a temporary folder)")
    parser.add_argument(
        "--model-dtype",
        default="auto",
        help="dtype the generate / lora / stage1 steps load the model in (`auto`: the checkpoint's bf16; float32 is "
        "far faster on CPUs without bf16 matrix units)",
    )
    parser.add_argument(
        "--generate-order",
        default="towervision,llava_next",
        choices=["towervision,llava_next", "llava_next,towervision"],
        help="which model the generate step runs first (the first one also warms the machine up)",
    )
    parser.add_argument("--worker", choices=STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.small:
        args.geometry = "small"
    args.steps = [step for step in args.steps.split(",") if step]
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose among {', '.join(STEPS)}")
    return args


# ---- stand-ins --------------------------------------------------------------------------------------------------


def build_tokenizer(vocab_size: int) -> GemmaTokenizer:
    """A Gemma-style tokenizer of exactly `vocab_size` entries: Gemma's special tokens, bytes, filler pieces."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece in ["▁", *(chr(code) for code in range(33, 127))]:
        vocab.setdefault(piece, len(vocab))
    for index in range(vocab_size - len(vocab)):
        vocab[f"▁w{index}"] = len(vocab)
    tokenizer = GemmaTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    return tokenizer


def write_random_checkpoint(model_class, config, folder: Path, dtype: torch.dtype, seed: int) -> None:
    """`model_class(config)` with N(0, 0.02) weights, written tensor by tensor (never the whole model in memory).

    Each tensor is a window, at a random offset, of one pool of 1,000,003 normal values repeated: drawing billions
    of values would take longer than the steps measured, and the values only need to be non-degenerate.
    """
    with torch.device("meta"):
        model = model_class(config)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randn(1_000_003, generator=generator).mul_(0.02).to(dtype)

    def random(shape):
        def parts():
            remaining = int(np.prod(shape))
            offset = int(torch.randint(len(pool), (1,), generator=generator))
            while remaining:  # the tensor's bytes, pool window after pool window
                window = pool[offset : offset + remaining]
                yield window
                remaining, offset = remaining - len(window), 0

        return parts

    planned = [
        PlannedTensor(name, DTYPE_CODES[dtype], tuple(tensor.shape), random(tuple(tensor.shape)))
        for name, tensor in model.state_dict().items()
        if name not in tied
    ]
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    write_shards(planned, folder, parse_size("5GB"))


def step_standins(work: Path, geometry: dict) -> dict:
    siglip = SiglipConfig(vision_config=geometry["vision"], text_config=geometry["siglip_text"])
    write_random_checkpoint(SiglipModel, siglip, work / "siglip", torch.float32, seed=0)  # the Hub's so400m: F32
    tokenizer = build_tokenizer(geometry["vocab"])
    text = Gemma2Config(
        vocab_size=len(tokenizer),
        sliding_window=4096,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        **geometry["text"],
    )
    write_random_checkpoint(Gemma2ForCausalLM, text, work / "tower", torch.bfloat16, seed=1)  # Tower+: BF16
    tokenizer.save_pretrained(work / "tower")
    return {
        "vision parameters": count_parameters(work / "siglip"),
        "text parameters": count_parameters(work / "tower"),
    }


def count_parameters(folder: Path) -> str:
    from towervision_hf.checkpoint.weights import tensor_entries

    return f"{sum(entry.num_elements for entry in tensor_entries(folder)):,}"


# ---- checkpoint tools -------------------------------------------------------------------------------------------


def step_init(work: Path, geometry: dict) -> dict:
    from towervision_hf.checkpoint.cli import init_main

    init_main(["--vision", str(work / "siglip"), "--text", str(work / "tower"), str(work / "stage0")])
    return {"stage-0 parameters": count_parameters(work / "stage0")}


def step_export(work: Path, geometry: dict) -> dict:
    from towervision_hf.checkpoint.cli import export_main

    export_main([str(work / "stage0"), str(work / "native"), "--format", "llava_next"])
    return {}


def step_convert(work: Path, geometry: dict) -> dict:
    from towervision_hf.checkpoint.cli import convert_main

    convert_main([str(work / "native"), str(work / "converted")])
    return {}


def step_push(work: Path, geometry: dict) -> dict:
    from towervision_hf.hub.push import main as push_main

    stage_dir = work / "staged"
    if stage_dir.exists():
        import shutil

        shutil.rmtree(stage_dir)
    code = push_main([str(work / "stage0"), "--repo-id", "bench/scale", "--dry-run", "--stage-dir", str(stage_dir)])
    if code != 0:
        raise SystemExit(f"towervision push --dry-run exited with {code}")
    return {}


# ---- model steps ------------------------------------------------------------------------------------------------


def check_image(tile: int) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (tile * 3 // 4, tile - 5, 3), dtype=np.uint8)
    return Image.fromarray(pixels)  # one tile plus the thumbnail


def step_generate(work: Path, geometry: dict) -> dict:
    """Ours (trust_remote_code) and native LlavaNext on the export, in `--generate-order`: load, then greedy
    `NEW_TOKENS` tokens."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    image = check_image(geometry["vision"]["image_size"])
    results, tokens, generate_seconds = {}, {}, {}
    models = {"towervision": (work / "stage0", True), "llava_next": (work / "native", False)}
    for name in geometry["generate_order"]:
        folder, remote = models[name]
        start = time.perf_counter()
        model = AutoModelForImageTextToText.from_pretrained(
            folder, trust_remote_code=remote, dtype=geometry["model_dtype"]
        ).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=remote)
        loaded = time.perf_counter() - start
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=text, images=[image], return_tensors="pt")
        start = time.perf_counter()
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        results[f"{name} load s"] = round(loaded, 1)
        generate_seconds[name] = time.perf_counter() - start
        results[f"{name} generate s"] = round(generate_seconds[name], 1)
        results["prompt tokens"] = inputs["input_ids"].shape[1]
        tokens[name] = output[0, inputs["input_ids"].shape[1] :].tolist()
        del model
    # from the unrounded times: a small geometry generates in well under 0.1 s
    results["generate time native / ours"] = round(generate_seconds["llava_next"] / generate_seconds["towervision"], 3)
    results["same tokens"] = tokens["towervision"] == tokens["llava_next"]  # native merges features unscaled
    return results


def training_batch(folder: Path) -> dict:
    from transformers import AutoProcessor

    from towervision_hf.training import SKIPPED_KEY, TowerVisionCollator

    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    row = {
        "images": [check_image(processor.image_processor.tile_size)],
        "videos": [],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A photo of noise, " * 8}]},
        ],
    }
    batch = TowerVisionCollator(processor)([row])
    batch.pop(SKIPPED_KEY)
    return batch


def train_step(model, batch) -> float:
    """One step as `towervision train` computes the loss (logits at the labelled positions only); seconds."""
    from towervision_hf.training.trainer import labelled_logits

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    start = time.perf_counter()
    logits, targets = labelled_logits(model, batch)
    torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def load_stage0(work: Path, dtype: str):
    """The stage-0 model with activation checkpointing, as the recipes train it (`activation_checkpointing: true`)."""
    from towervision_hf import TowerVisionForConditionalGeneration

    model = TowerVisionForConditionalGeneration.from_pretrained(work / "stage0", dtype=dtype)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def step_lora(work: Path, geometry: dict) -> dict:
    from peft import LoraConfig, get_peft_model

    batch = training_batch(work / "stage0")
    model = load_stage0(work, geometry["model_dtype"])
    targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    model = get_peft_model(model, LoraConfig(r=64, lora_alpha=128, target_modules=targets))
    return {"LoRA step s": round(train_step(model, batch), 1), "tokens": batch["input_ids"].shape[1]}


def step_stage1(work: Path, geometry: dict) -> dict:
    from towervision_hf.training import VisionFeatureCache

    batch = training_batch(work / "stage0")
    model = load_stage0(work, geometry["model_dtype"])
    for name, param in model.named_parameters():
        param.requires_grad_("multi_modal_projector" in name or name.endswith("image_newline"))
    plain = train_step(model, batch)
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = VisionFeatureCache(cache_dir).attach(model)
        with torch.no_grad():
            model.model.get_image_features(batch["pixel_values"], batch["image_sizes"])  # warm the cache
        cached = train_step(model, batch)
    return {
        "stage-1 step s (no cache)": round(plain, 1),
        "stage-1 step s (warm cache)": round(cached, 1),
        "speed-up": round(plain / cached, 2),
        "cache hits": cache.hits,
    }


STEP_FUNCTIONS = {
    "standins": step_standins, "init": step_init, "export": step_export, "convert": step_convert,
    "generate": step_generate, "push": step_push, "lora": step_lora, "stage1": step_stage1,
}  # fmt: skip


# ---- measurement ------------------------------------------------------------------------------------------------


class PeakRSS:
    """Peak RSS of a process and all its descendants, sampled in a thread every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.process, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        try:
            for process in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its waited-for descendants."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_step(step: str, work: Path, geometry: str, options: dict, in_process: bool) -> dict:
    """Run one step; its wall time, the CPU time of its process tree (a fair figure on a busy machine) and peak RSS."""
    start, cpu_start = time.perf_counter(), cpu_seconds()
    if in_process:
        with PeakRSS(os.getpid()) as rss:
            info = STEP_FUNCTIONS[step](work, {**GEOMETRIES[geometry], **options})
    else:
        command = [sys.executable, __file__, "--worker", step, "--geometry", geometry, "--workdir", str(work)]
        command += ["--model-dtype", options["model_dtype"], "--generate-order", ",".join(options["generate_order"])]
        process = subprocess.Popen(command)
        with PeakRSS(process.pid) as rss:
            code = process.wait()
        if code != 0:
            raise SystemExit(f"step {step} failed (exit {code})")
        info = json.loads((work / f"{step}.json").read_text())
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    return {"wall s": wall, "CPU s": cpu, "peak RSS GiB": rss.peak / 2**30, **info}


def step_options(args) -> dict:
    """What the model steps read besides the geometry."""
    return {"model_dtype": args.model_dtype, "generate_order": args.generate_order.split(",")}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        geometry = {**GEOMETRIES[args.geometry], **step_options(args)}
        info = STEP_FUNCTIONS[args.worker](Path(args.workdir), geometry)
        (Path(args.workdir) / f"{args.worker}.json").write_text(json.dumps(info))
        return 0
    with tempfile.TemporaryDirectory(prefix="towervision-scale-") as temporary:
        work = Path(args.workdir or temporary)
        work.mkdir(parents=True, exist_ok=True)
        print(
            f"geometry {args.geometry}, {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"load average {os.getloadavg()[0]:.1f}, model steps in {args.model_dtype}, {work}"
        )
        results = {}
        for step in args.steps:
            results[step] = run_step(step, work, args.geometry, step_options(args), in_process=args.small)
            measured = results[step]
            extra = ", ".join(f"{k} {v}" for k, v in measured.items() if k not in ("wall s", "CPU s", "peak RSS GiB"))
            print(
                f"[{step:8s}] wall {measured['wall s']:7.1f} s   CPU {measured['CPU s']:7.1f} s   "
                f"peak RSS {measured['peak RSS GiB']:6.2f} GiB   {extra}",
                flush=True,
            )
        (work / "scale.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
