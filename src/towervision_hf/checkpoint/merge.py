"""`towervision merge`: fold what a stage saved beside its base (a LoRA adapter and its image newline, or the trained
tensors of a `--save_trained_only` run) into a plain checkpoint that loads with `AutoModelForImageTextToText` +
trust_remote_code."""

import argparse
import os
import tempfile
from pathlib import Path

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from .image_newline import restore_image_newline
from .tiny import TINY_MODEL
from .trained_modules import TRAINED_INDEX_NAME, is_trained_modules_folder, merge_trained_modules, read_trained_modules
from .weights import torch_dtype


def merge_main(argv: list[str] | None = None) -> int:
    """`towervision merge STAGE_DIR OUT [--base MODEL]`: fold a LoRA adapter (and its image newline), or the trained
    tensors of a `--save_trained_only` run, into its base: a plain checkpoint that loads with
    `AutoModelForImageTextToText` + trust_remote_code."""
    parser = argparse.ArgumentParser(prog="towervision merge", description=merge_main.__doc__)
    parser.add_argument(
        "adapter_dir",
        metavar="STAGE_DIR",
        help="output_dir of a --use_peft run (adapter_config.json) or a --save_trained_only run",
    )
    parser.add_argument("out", help="folder for the merged checkpoint")
    parser.add_argument(
        "--base", help="base model (default: the one the adapter config or trained_modules.json names; `tiny`)"
    )
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    try:
        if is_trained_modules_folder(args.adapter_dir):
            return merge_trained(args)
        return merge_adapter(args)
    except ValueError as error:
        parser.exit(2, f"towervision merge: error: {error}\n")


def merge_adapter(args: argparse.Namespace) -> int:
    """Fold the LoRA adapter in `args.adapter_dir` into its base model."""
    from peft import PeftConfig, PeftModel

    base = args.base or PeftConfig.from_pretrained(args.adapter_dir).base_model_name_or_path
    if not base or base == TINY_MODEL:
        raise ValueError(f"the adapter in {args.adapter_dir} names no loadable base model; pass --base")
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
    model.save_pretrained(args.out)
    processor_source = args.adapter_dir if (Path(args.adapter_dir) / "processor_config.json").is_file() else base
    AutoProcessor.from_pretrained(processor_source, trust_remote_code=True).save_pretrained(args.out)
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
    if os.path.isabs(name) or os.path.exists(name):
        raise ValueError(f"base {name} (named by {named_by}) is not a checkpoint folder; pass the base with --base")
    from .compose import resolve_folder

    try:
        return resolve_folder(name, revision=None if base else reference.get("revision"))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"base {name!r} (named by {named_by}) is neither a local folder nor fetchable from the Hub ({error}); "
            "pass the base with --base"
        ) from None
