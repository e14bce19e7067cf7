"""`towervision merge`: fold what a stage saved beside its base (a LoRA adapter and its image newline, or the trained
tensors of a `--save_trained_only` run) into a plain checkpoint that loads with `AutoModelForImageTextToText` +
trust_remote_code."""

import argparse
import os
import tempfile
from pathlib import Path

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from .image_newline import restore_image_newline
from .output import check_model_folder, staged_output
from .tiny import TINY_MODEL
from .trained_modules import TRAINED_INDEX_NAME, merge_trained_modules, read_trained_modules
from .weights import read_header, tensor_entries, torch_dtype


def merge_adapter(args: argparse.Namespace) -> int:
    """Fold the LoRA adapter in `args.adapter_dir` into its base model."""
    from peft import PeftConfig, PeftModel

    base = args.base or PeftConfig.from_pretrained(args.adapter_dir).base_model_name_or_path
    if not base or base == TINY_MODEL:
        raise ValueError(f"the adapter in {args.adapter_dir} names no loadable base model; pass --base")
    check_model_folder(base, f"the base named by {args.adapter_dir}; pass another with --base")
    adapter_weights = Path(args.adapter_dir) / "adapter_model.safetensors"
    if adapter_weights.is_file():
        read_header(adapter_weights)  # a truncated or corrupt file is named here, not deep in the loaders
    if os.path.isdir(base):
        tensor_entries(Path(base))
    # the stage's config (saved beside the adapter) carries its image grid and frame count
    config_dir = args.adapter_dir if (Path(args.adapter_dir) / "config.json").is_file() else base
    config = AutoConfig.from_pretrained(config_dir, trust_remote_code=True)
    # a QLoRA adapter trained over the 4-bit base: it merges into the base's full-precision weights
    config.__dict__.pop("quantization_config", None)
    model = AutoModelForImageTextToText.from_pretrained(
        base, config=config, dtype=torch_dtype(args.dtype), trust_remote_code=True
    )
    model = PeftModel.from_pretrained(model, args.adapter_dir).merge_and_unload()
    restore_image_newline(model, args.adapter_dir)
    processor_source = args.adapter_dir if (Path(args.adapter_dir) / "processor_config.json").is_file() else base
    processor = AutoProcessor.from_pretrained(processor_source, trust_remote_code=True)
    with staged_output(args.out, [args.adapter_dir, base]) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
    print(f"merged {args.adapter_dir} into {base}: {os.path.abspath(args.out)}")
    return 0


def merge_trained(args: argparse.Namespace) -> int:
    """Compose the base of a `--save_trained_only` run and its trained tensors into a full checkpoint, streamed."""
    if args.dtype != "auto":
        raise ValueError("--dtype casts a merged LoRA model; trained modules merge in the dtype their run trained in")
    index, _ = read_trained_modules(args.adapter_dir)
    reference = index["base"]
    with tempfile.TemporaryDirectory() as scratch:
        base = resolve_trained_base(reference, args.base, scratch, Path(args.adapter_dir) / TRAINED_INDEX_NAME)
        files = merge_trained_modules(args.adapter_dir, base, args.out)
    name = args.base or reference["model_name_or_path"]
    print(f"merged {args.adapter_dir} into {name}: {os.path.abspath(args.out)} ({', '.join(files)})")
    return 0


def resolve_trained_base(reference: dict, base: str | None, scratch: str, index_path: Path) -> Path:
    """The checkpoint folder of a trained-modules base: `base` when given, else the one `reference` names (`tiny`
    is rebuilt from its seed into `scratch`, a Hub id is fetched at its revision)."""
    name = base or reference["model_name_or_path"]
    if name == TINY_MODEL:
        from .compose import build_tiny

        build_tiny(seed=reference.get("seed", 0))[0].save_pretrained(scratch)
        return Path(scratch)
    if os.path.isdir(name):
        return Path(name)
    named_by = "--base" if base else str(index_path)
    check_model_folder(name, f"the base named by {named_by}; pass the base with --base")
    from .compose import resolve_folder

    try:
        return resolve_folder(name, revision=None if base else reference.get("revision"))
    except (OSError, ValueError) as error:
        raise ValueError(f"the base named by {named_by}: {error}; pass the base with --base") from None
