"""Staging: build, from a checkpoint folder, exactly the folder that `towervision push` uploads.

The staged folder holds:

* the safetensors weights, linked as they are or re-sharded to `max_shard_size`, checked name by name and shape by
  shape against the model the config describes;
* `config.json` with the complete `auto_map` (AutoConfig, AutoModel, AutoModelForImageTextToText,
  AutoModelForMultimodalLM) and `generation_config.json`;
* the processor: `processor_config.json` (image / video processor with their `auto_map`), tokenizer files and
  `chat_template.jinja`;
* the remote-code files of the INSTALLED package (never stale copies from the checkpoint), audited by
  `remote_code.collect_remote_code_files`;
* `README.md`, the model card.

Nothing else is copied: optimizer, scheduler, RNG and trainer states only with `include_training_state`; token or
credential files never; sub-folders (intermediate `checkpoint-N/`, logs) never.
"""

import fnmatch
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoProcessor, GenerationConfig

from ..checkpoint.weights import DEFAULT_MAX_SHARD_SIZE, HEAD_KEY, read_json, stage_weights, tensor_entries
from ..model.configuration_towervision import TowerVisionConfig
from ..model.modeling_towervision import AUTO_MAP, TowerVisionForConditionalGeneration
from ..model.processing_towervision import TowerVisionProcessor
from .card import DEFAULT_LICENSE, is_hub_id, load_evaluations, read_card_metadata, render_model_card, training_summary
from .remote_code import collect_remote_code_files


TRAINING_STATE_PATTERNS = (
    "optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "rng_state.pth", "rng_state_*.pth",
    "trainer_state.json", "training_args.bin",
)  # fmt: skip
CREDENTIAL_PATTERNS = (
    "token", ".token", "hf_token", "*.token", ".env", ".netrc", ".git-credentials", "credentials*", "*.pem", "*.key",
)  # fmt: skip
# Written by staging itself from the loaded objects, so the checkpoint's own copies are not taken as they are.
REGENERATED_FILES = (
    "config.json", "generation_config.json", "README.md", "*.py", "model.safetensors", "model-*-of-*.safetensors",
    "model.safetensors.index.json", "processor_config.json", "preprocessor_config.json",
    "video_preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
    "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)  # fmt: skip


@dataclass
class StagedCheckpoint:
    """A staged folder: its path, the files in it with their sizes, and what was left out of it (and why)."""

    path: Path
    files: dict[str, int]
    skipped: dict[str, str] = field(default_factory=dict)

    def listing(self) -> str:
        width = max(len(name) for name in self.files)
        lines = [f"{name:<{width}}  {format_bytes(size):>10}" for name, size in sorted(self.files.items())]
        lines.append(f"{'total':<{width}}  {format_bytes(sum(self.files.values())):>10}")
        if self.skipped:
            lines += ["", "not staged:"] + [f"  {name}: {reason}" for name, reason in sorted(self.skipped.items())]
        return "\n".join(lines)


def format_bytes(size: int) -> str:
    for threshold, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if size >= threshold:
            return f"{size / threshold:.1f} {unit}"
    return f"{size} B"


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def read_checkpoint_config(checkpoint: Path) -> TowerVisionConfig:
    """The checkpoint's `TowerVisionConfig`, with a clear `ValueError` for folders that are not TowerVision models."""
    if not checkpoint.is_dir():
        raise ValueError(f"checkpoint {checkpoint} is not a directory")
    config_file = checkpoint / "config.json"
    if (checkpoint / "adapter_config.json").is_file():  # `towervision train --use_peft` also writes a config.json
        raise ValueError(
            f"{checkpoint} holds a LoRA adapter, not a model: merge it first with `towervision merge`, then push the "
            "merged folder"
        )
    if (checkpoint / "trained_modules.json").is_file():  # `towervision train --save_trained_only`
        raise ValueError(
            f"{checkpoint} holds only the tensors a stage trained, not a model: merge it first with "
            "`towervision merge`, then push the merged folder"
        )
    if not config_file.is_file():
        raise ValueError(f"{checkpoint} has no config.json")
    model_type = read_json(config_file).get("model_type")
    if model_type in ("llava_next", "llava_onevision"):
        raise ValueError(
            f"{checkpoint} is a native {model_type} checkpoint: run `towervision convert` first and push its output"
        )
    if model_type != TowerVisionConfig.model_type:
        raise ValueError(f"{config_file} has model_type {model_type!r}, expected {TowerVisionConfig.model_type!r}")
    return TowerVisionConfig.from_pretrained(checkpoint)


def check_weights(config: TowerVisionConfig, entries) -> None:
    """`ValueError` unless the stored tensors are exactly the parameters and buffers the config's model has."""
    with torch.device("meta"):
        model = TowerVisionForConditionalGeneration(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    stored = {entry.name: entry.shape for entry in entries}
    optional = {HEAD_KEY} if config.tie_word_embeddings else set()
    missing = sorted(set(expected) - set(stored) - optional)
    unexpected = sorted(set(stored) - set(expected))
    wrong_shape = sorted(
        f"{name} {stored[name]} (expected {expected[name]})"
        for name in set(stored) & set(expected)
        if stored[name] != expected[name]
    )
    problems = []
    if missing:
        problems.append(f"missing tensors: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if wrong_shape:
        problems.append(f"tensors with the wrong shape: {wrong_shape[:10]}")
    if problems:
        raise ValueError("the weights do not match config.json: " + "; ".join(problems))


def check_auto_maps(staged: Path, code_files: set[str]) -> None:
    """`ValueError` unless every Auto class a user needs is mapped, to a class defined in a shipped file."""
    config = json.loads((staged / "config.json").read_text())
    maps = {"config.json": config.get("auto_map") or {}}
    required = {"config.json": set(AUTO_MAP)}
    processor_config = json.loads((staged / "processor_config.json").read_text())
    maps["processor_config.json"] = processor_config.get("auto_map") or {}
    required["processor_config.json"] = {"AutoProcessor"}
    for key, auto_class in (("image_processor", "AutoImageProcessor"), ("video_processor", "AutoVideoProcessor")):
        if key in processor_config:
            maps[f"processor_config.json[{key}]"] = processor_config[key].get("auto_map") or {}
            required[f"processor_config.json[{key}]"] = {auto_class}
    problems = []
    for where, auto_map in maps.items():
        for auto_class in sorted(required[where] - set(auto_map)):
            problems.append(f"{where} auto_map lacks {auto_class}")
        for auto_class, reference in auto_map.items():
            references = reference if isinstance(reference, (list, tuple)) else [reference]
            for ref in filter(None, references):
                module, _, class_name = ref.rpartition(".")
                source = staged / f"{module}.py"
                if f"{module}.py" not in code_files or f"class {class_name}(" not in source.read_text(
                    encoding="utf-8"
                ):
                    problems.append(f"{where} maps {auto_class} to {ref}, which no shipped file defines")
    if problems:
        raise ValueError("incomplete auto_map: " + "; ".join(problems))


def stage_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path | None = None,
    *,
    repo_id: str,
    max_shard_size: int | str | None = DEFAULT_MAX_SHARD_SIZE,
    processor_source: str | Path | None = None,
    license: str = DEFAULT_LICENSE,
    base_models: list[str] | None = None,
    datasets: list[str] | None = None,
    pipeline_tag: str | None = None,
    eval_results: list[str | Path] = (),
    include_training_state: bool = False,
    card_template: str | Path | None = None,
) -> StagedCheckpoint:
    """Build the upload folder for `checkpoint` (a training output, a `towervision convert` output, ...).

    Args:
        checkpoint: folder with `config.json` (model_type "towervision"), safetensors weights and, unless
            `processor_source` is given, the processor files.
        output_dir: where to stage; must not exist or be empty (default: a new temporary folder).
        repo_id: the Hub repo the folder is meant for (used by the model card).
        max_shard_size: re-shard when a weight file is larger than this (`None`: keep the files as they are).
        processor_source: folder to take the processor from instead of `checkpoint`.
        license, base_models, datasets, pipeline_tag, eval_results, card_template: model card inputs (see
            `card.render_model_card`); `base_models`, `datasets` and `pipeline_tag` default to the metadata of the
            checkpoint's own README.md when it has one (TRL writes one), else to the recognised building blocks,
            nothing and `"image-text-to-text"`.
        include_training_state: also stage optimizer / scheduler / RNG / trainer state files found in `checkpoint`.
    """
    checkpoint = Path(checkpoint).resolve()
    config = read_checkpoint_config(checkpoint)
    entries = tensor_entries(checkpoint)
    check_weights(config, entries)
    evaluations = load_evaluations([Path(path) for path in eval_results])
    metadata = read_card_metadata(checkpoint)
    if base_models is None:
        base_models = [m for m in _as_list(metadata.get("base_model")) if is_hub_id(m)]
    if datasets is None:
        datasets = [d for d in _as_list(metadata.get("datasets")) if is_hub_id(d)]
    pipeline_tag = pipeline_tag or metadata.get("pipeline_tag") or "image-text-to-text"

    processor_source = Path(processor_source).resolve() if processor_source is not None else checkpoint
    try:
        processor = AutoProcessor.from_pretrained(processor_source)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"{processor_source} holds no loadable TowerVision processor ({error}); pass the folder of the processor "
            "it was trained with as processor_source (--processor)"
        ) from None
    if not isinstance(processor, TowerVisionProcessor):
        raise ValueError(
            f"{processor_source} holds a {type(processor).__name__}, not a TowerVisionProcessor: pass a TowerVision "
            "processor folder as processor_source (--processor)"
        )

    if output_dir is None:
        staged = Path(tempfile.mkdtemp(prefix="towervision-stage-"))
    else:
        staged = Path(output_dir).resolve()
        if staged.exists() and any(staged.iterdir()):
            raise ValueError(f"staging folder {staged} is not empty")
        staged.mkdir(parents=True, exist_ok=True)
    try:
        skipped = _write_files(staged, checkpoint, config, processor, max_shard_size, include_training_state)
        card = render_model_card(
            config,
            repo_id=repo_id,
            num_parameters=sum(entry.num_elements for entry in entries),
            dtypes=[entry.dtype for entry in entries],
            pipeline_tag=pipeline_tag,
            license=license,
            base_models=base_models,
            datasets=datasets,
            evaluations=evaluations,
            training=training_summary(checkpoint, datasets),
            template_path=card_template,
        )
        (staged / "README.md").write_text(card, encoding="utf-8")
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    files = {path.name: path.stat().st_size for path in staged.iterdir() if path.is_file()}
    return StagedCheckpoint(staged, files, skipped)


def _write_files(staged, checkpoint, config, processor, max_shard_size, include_training_state) -> dict[str, str]:
    """Write config, generation config, processor, weights, code and training state; return what was left out."""
    config.auto_map = dict(AUTO_MAP)
    config.architectures = [TowerVisionForConditionalGeneration.__name__]
    config.save_pretrained(staged)
    if (checkpoint / "generation_config.json").is_file():
        generation_config = GenerationConfig.from_pretrained(checkpoint)
    else:
        text = config.text_config
        generation_config = GenerationConfig(
            bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id
        )
    generation_config.save_pretrained(staged)
    processor.save_pretrained(staged)
    stage_weights(checkpoint, staged, max_shard_size)

    code_files = collect_remote_code_files()
    for stale in staged.glob("*.py"):  # copies made by save_pretrained: replaced by the audited set below
        stale.unlink()
    for path in code_files:
        shutil.copyfile(path, staged / path.name)
    check_auto_maps(staged, {path.name for path in code_files})

    skipped = {}
    for path in sorted(checkpoint.iterdir()):
        name = path.name
        if path.is_dir():
            skipped[name + "/"] = "sub-folders are not uploaded"
        elif _matches(name, CREDENTIAL_PATTERNS):
            skipped[name] = "credentials are never uploaded"
        elif _matches(name, TRAINING_STATE_PATTERNS):
            if include_training_state:
                shutil.copy2(path, staged / name)
            else:
                skipped[name] = "training state (stage it with --include-training-state)"
        elif not _matches(name, REGENERATED_FILES):
            skipped[name] = "not part of a model checkpoint"
    return skipped


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
