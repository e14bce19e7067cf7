"""Load check: does a staged folder load and generate like the in-process model, with nothing but its own code?

The in-process side loads the folder with the installed package (`TowerVisionForConditionalGeneration`, the
registered processor) and records, for a generated image of one tile (and, for checkpoints with a video token, a
short generated clip), the processor outputs and a few greedy tokens with their logits. `remote_worker.py` then runs
in a fresh interpreter (`python -I`: PYTHONPATH ignored; an empty working directory; HF_HUB_OFFLINE=1; a private
HF_MODULES_CACHE) where `towervision_hf` cannot be imported, and loads the same folder through AutoConfig,
AutoProcessor, AutoModelForImageTextToText and `pipeline("image-text-to-text")` with `trust_remote_code=True`.
Both sides must agree: same processor outputs, logits within tolerance, identical greedy tokens (model and
pipeline). Each side prefills each prompt once (the pipeline once more), and both load with `device_map="auto"`,
so a 9B check runs on a GPU when there is one and offloads to CPU and disk otherwise, in the dtype of
[`check_dtype`] (float32 on a CPU when it fits: CPUs without bfloat16 matrix units multiply float32 far faster).

`extra_sys_path` runs the remote side under another transformers (a side install, see `versions.py`).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from .remote_worker import release_memory


WORKER = Path(__file__).resolve().with_name("remote_worker.py")
PROMPTS = {"image": "Describe this image in one sentence.", "video": "What happens in this video?"}
MAX_VIDEO_FRAMES = 2  # frames are pooled one by one: two show their order; each costs 196 tokens at 384 px
MAX_NEW_TOKENS = 4


@dataclass
class LoadCheckResult:
    """Outcome of `run_load_check`; `problems` is empty when the folder passed."""

    problems: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)  # transformers version and classes seen by the remote side
    max_logit_diff: dict[str, float] = field(default_factory=dict)  # per modality, over the generated positions
    tokens: dict[str, list[int]] = field(default_factory=dict)  # new greedy tokens of the in-process model
    remote: dict[str, torch.Tensor] = field(default_factory=dict)  # everything the remote side computed
    seconds: float = 0.0  # wall time of the check (the in-process reference included when it computed it)

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        version = self.report.get("transformers_version", "?")
        if not self.passed:
            return f"load check FAILED under transformers {version} after {self.seconds:.0f} s:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        checks = ", ".join(
            f"{modality}: max |Δlogits| {diff:.3g}, {len(self.tokens[modality])} greedy tokens identical"
            for modality, diff in self.max_logit_diff.items()
        )
        where = f"{self.report.get('dtype', '?')} on {self.report.get('device', '?')}"
        return (
            f"load check passed under transformers {version} in {self.seconds:.0f} s ({where}; {checks}; pipeline "
            "identical)"
        )


def staged_tile_size(staged_dir: Path) -> int:
    """Tile side of a saved TowerVision config (`tile_size` is left out of config.json when it is the default)."""
    config = json.loads((Path(staged_dir) / "config.json").read_text())
    return config.get("tile_size") or config["vision_config"]["image_size"]


def check_image(tile_size: int) -> Image.Image:
    """A deterministic RGB image that fits one tile (one tile plus the thumbnail: the cheapest prompt that still
    goes through tiling); a wide strip with odd sides, so resizing, padding and unpadding are exercised, and
    unpadding keeps a quarter of the tile's features (897 image tokens at 384 px / 14 px patches instead of 1,289
    for a 4:3 image)."""
    height, width = tile_size // 4 + 1, tile_size - 3
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack([rows * 255 // height, cols * 255 // width, ((rows // 7 + cols // 5) % 2) * 255], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def check_video(num_frames: int, tile_size: int) -> np.ndarray:
    """`(num_frames, H, W, 3)` uint8 frames of a square moving across a gradient, not tile-sized."""
    height, width = tile_size + 5, tile_size + tile_size // 3
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    frames[..., 0] = np.arange(width, dtype=np.uint8)[None, None, :] * 2
    for index in range(num_frames):
        top = index * (height // (num_frames + 1))
        frames[index, top : top + height // 4, : width // 4, 1:] = 255
    return frames


def check_inputs(staged_dir: Path) -> dict:
    """The check's media: always an image; a short clip when the checkpoint has a video token."""
    config = json.loads((Path(staged_dir) / "config.json").read_text())
    tile_size = staged_tile_size(staged_dir)
    media = {"image": check_image(tile_size)}
    if config.get("video_token_id") is not None:
        media["video"] = check_video(min(config.get("num_frames", 32), MAX_VIDEO_FRAMES), tile_size)
    return media


def check_dtype(staged_dir: Path) -> str:
    """The dtype both sides load `staged_dir` in: its own (`"auto"`) on a GPU, and on a CPU when the check's process
    tree would exceed 60 % of the memory it can use; float32 otherwise, for a half-precision checkpoint on a CPU, where
    bfloat16 matrix products are emulated (on a 2-core AVX2 machine, a 256x2304 @ 2304x9216 product ran at 95 GFLOP/s
    in float32 and 0.3 GFLOP/s in bfloat16). The check then compares the remote code with the installed one at a
    higher precision than the checkpoint's.

    The tree counted is this process and its children as they are now, plus one float32 copy of the model and the
    half-precision files it is converted from (memory-mapped, so resident, while it loads): the two sides load one
    after the other (the in-process reference, then the remote worker's model, then its pipeline), each releasing its
    copy (`release_memory`) before the next load starts. The memory the tree can use is what it holds now plus what
    the system has available."""
    import psutil

    config = json.loads((Path(staged_dir) / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or config.get("text_config", {}).get("dtype")
    if torch.cuda.is_available() or dtype not in ("bfloat16", "float16"):
        return "auto"
    stored_bytes = sum(path.stat().st_size for path in Path(staged_dir).glob("*.safetensors"))
    process = psutil.Process()
    tree = sum(member.memory_info().rss for member in (process, *process.children(recursive=True)))
    peak = tree + 2 * stored_bytes + stored_bytes  # the float32 copy and the files it is read from
    return "float32" if peak <= 0.6 * (tree + psutil.virtual_memory().available) else "auto"


def greedy_with_logits(model, batch: dict, max_new_tokens: int) -> dict[str, torch.Tensor]:
    """Greedy tokens of `batch` (`generated`: prompt + new tokens) and the logits that chose them (`logits`:
    `(1, new_tokens, vocab)`), from one prefill. Every position attends to the image / video features, so the
    logits see any difference in them."""
    batch = {key: value.to(model.device) for key, value in batch.items()}
    with torch.no_grad():
        output = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    return {"generated": output.sequences.cpu(), "logits": torch.stack(output.logits, dim=1).float().cpu()}


def reference_outputs(
    staged_dir: Path, max_new_tokens: int = MAX_NEW_TOKENS, dtype: str | None = None
) -> dict[str, torch.Tensor]:
    """Processor outputs, greedy tokens and their logits of the folder loaded with the installed package's classes,
    in `dtype` (`"auto"`: the checkpoint's; default: [`check_dtype`])."""
    from transformers import AutoProcessor

    import towervision_hf.model  # noqa: F401  (registers the local classes with the Auto API)

    from ..model.modeling_towervision import TowerVisionForConditionalGeneration

    media = check_inputs(staged_dir)
    processor = AutoProcessor.from_pretrained(staged_dir)
    offload = tempfile.mkdtemp(prefix="towervision-offload-")
    model = TowerVisionForConditionalGeneration.from_pretrained(
        staged_dir, dtype=dtype or check_dtype(staged_dir), device_map="auto", offload_folder=offload
    ).eval()
    image_chat = [
        {
            "role": "user",
            "content": [{"type": "image", "image": media["image"]}, {"type": "text", "text": PROMPTS["image"]}],
        }
    ]
    inputs = {
        "image": processor.apply_chat_template(
            image_chat, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
    }
    if "video" in media:
        video_chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPTS["video"]}]}]
        text = processor.apply_chat_template(video_chat, add_generation_prompt=True, tokenize=False)
        inputs["video"] = processor(text=text, videos=[media["video"]], do_sample_frames=False, return_tensors="pt")
    tensors = {}
    for modality, batch in inputs.items():
        batch = {key: value for key, value in batch.items() if isinstance(value, torch.Tensor)}
        tensors.update({f"{modality}.inputs.{key}": value.contiguous() for key, value in batch.items()})
        tensors.update(
            {f"{modality}.{key}": value for key, value in greedy_with_logits(model, batch, max_new_tokens).items()}
        )
    del model
    release_memory()  # before the remote side loads its own copy
    shutil.rmtree(offload, ignore_errors=True)
    return tensors


def _remote_env(modules_cache: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_MODULES_CACHE=str(modules_cache),
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def run_load_check(
    staged_dir: Path,
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
    extra_sys_path: list[Path] | None = None,
    expected_transformers: str | None = None,
    logits_atol: float = 1e-4,
    reference: dict[str, torch.Tensor] | None = None,
    python: str | None = None,
    timeout: float = 3600,
    dtype: str | None = None,
) -> LoadCheckResult:
    """Load `staged_dir` without the towervision_hf package and compare it with the in-process model.

    `result.seconds` is the check's wall time (the in-process side included when `reference` is not given).

    Args:
        staged_dir: the folder that would be uploaded.
        max_new_tokens: length of the greedy generations compared token by token.
        extra_sys_path: folders put first on the remote side's `sys.path` (e.g. an older transformers).
        expected_transformers: fail unless the remote side runs exactly this transformers version.
        logits_atol: largest allowed |Δ| between in-process and remote logits.
        reference: precomputed `reference_outputs` (reused when checking several transformers versions).
        python: interpreter for the remote side (default: this one).
        timeout: seconds before the remote side is stopped and the check fails.
        dtype: what both sides load the folder in (`"auto"`: the checkpoint's dtype; default: [`check_dtype`]); a
            given `reference` must have been computed in it.
    """
    staged_dir = Path(staged_dir).resolve()
    dtype = dtype or check_dtype(staged_dir)
    start = time.perf_counter()
    if reference is None:
        reference = reference_outputs(staged_dir, max_new_tokens, dtype)
    media = check_inputs(staged_dir)
    result = LoadCheckResult()
    with tempfile.TemporaryDirectory(prefix="towervision-load-check-") as work:
        work = Path(work)
        media["image"].save(work / "image.png")
        if "video" in media:
            np.save(work / "video.npy", media["video"], allow_pickle=False)
        (work / "prompts.json").write_text(json.dumps({modality: PROMPTS[modality] for modality in media}))
        (work / "cwd").mkdir()
        command = [python or sys.executable, "-I", str(WORKER), "--model", str(staged_dir), "--work", str(work)]
        command += ["--max-new-tokens", str(max_new_tokens), "--dtype", dtype]
        for folder in extra_sys_path or []:
            command += ["--sys-path", str(Path(folder).resolve())]
        try:
            process = subprocess.run(
                command,
                check=False,
                cwd=work / "cwd",
                env=_remote_env(work / "modules"),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            result.problems.append(f"the remote load did not finish within {timeout:.0f} s")
        else:
            if process.returncode != 0:
                result.problems.append(
                    f"the remote load failed (exit {process.returncode}):\n{process.stderr[-6000:]}"
                )
            else:
                result.report = json.loads((work / "report.json").read_text())
                result.remote = load_file(work / "remote.safetensors")
    result.seconds = time.perf_counter() - start
    if not result.problems:
        _compare(result, reference, sorted(media), logits_atol, expected_transformers)
    return result


def _compare(
    result: LoadCheckResult, reference: dict, modalities: list[str], logits_atol: float, expected_transformers
):
    problems, remote = result.problems, result.remote
    version = result.report["transformers_version"]
    if result.report.get("towervision_hf_importable", True):
        problems.append("towervision_hf was importable on the remote side: the check did not isolate the checkpoint")
    if expected_transformers is not None and version != expected_transformers:
        problems.append(f"the remote side ran transformers {version}, expected {expected_transformers}")
    for role, name in result.report["classes"].items():
        if not name.startswith("transformers_modules."):
            problems.append(f"{role} class {name} does not come from the checkpoint's remote code")

    for modality in modalities:
        prefix = f"{modality}.inputs."
        for key in sorted(k for k in reference if k.startswith(prefix)):
            name, ours, theirs = key.removeprefix(prefix), reference[key], remote.get(key)
            if theirs is None:
                problems.append(f"{modality}: the remote processor does not return {name}")
            elif ours.shape != theirs.shape:
                problems.append(
                    f"{modality}: processor output {name} has shape {tuple(theirs.shape)}, expected "
                    f"{tuple(ours.shape)}"
                )
            elif ours.is_floating_point():
                diff = (ours.float() - theirs.float()).abs().max().item() if ours.numel() else 0.0
                if diff > 1e-5:
                    problems.append(f"{modality}: processor output {name} differs by up to {diff:.3g}")
            elif not torch.equal(ours, theirs):
                problems.append(f"{modality}: processor output {name} differs")

        logits, remote_logits = reference[f"{modality}.logits"], remote[f"{modality}.logits"]
        if logits.shape != remote_logits.shape:
            problems.append(f"{modality}: logits shape {tuple(remote_logits.shape)}, expected {tuple(logits.shape)}")
        else:
            diff = (logits - remote_logits).abs().max().item()
            result.max_logit_diff[modality] = diff
            if not diff <= logits_atol:
                problems.append(f"{modality}: logits differ by up to {diff:.3g} (tolerance {logits_atol:g})")

        expected = reference[f"{modality}.generated"]
        result.tokens[modality] = expected[0, reference[f"{prefix}input_ids"].shape[1] :].tolist()
        generated = {"the remote model": remote[f"{modality}.generated"]}
        if modality == "image":
            generated["the pipeline"] = remote["image.pipeline_generated"]
        for source, sequence in generated.items():
            if not torch.equal(sequence, expected):
                problems.append(
                    f"{modality}: {source} generated {sequence[0].tolist()} instead of {expected[0].tolist()}"
                )
