"""`towervision init`, `convert`, `export` and `merge`: their command lines.

Light on purpose: the arguments are parsed and the output checked against the inputs (`output.check_new_folder`)
before torch and transformers are imported, so `--help` and a refused output answer at once.
"""

import argparse
from pathlib import Path

from ..errors import exits_on_error
from .output import check_model_folder, check_new_folder


DTYPE_NAMES = ("bfloat16", "float16", "float32")  # the names of `weights.DTYPES`
NATIVE_FORMATS = ("llava_next", "llava_onevision")  # `convert.SOURCE_MODEL_TYPES`


def init_parser() -> argparse.ArgumentParser:
    """The `towervision init` command line."""
    parser = argparse.ArgumentParser(
        prog="towervision init",
        description="Compose the stage-0 TowerVision checkpoint from a SigLIP(2) and a Tower+ (Gemma2) checkpoint.",
    )
    parser.add_argument("output_dir", help="folder to write the checkpoint to (missing or empty)")
    parser.add_argument(
        "--vision", default="google/siglip2-so400m-patch14-384", help="SigLIP(2) checkpoint: Hub id or local dir"
    )
    parser.add_argument(
        "--text", default="Unbabel/Tower-Plus-2B", help="Tower+ / Gemma2 checkpoint: Hub id or local dir"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="build a tiny random model and tokenizer instead (offline)"
    )
    parser.add_argument(
        "--max-tiles", type=int, default=6, help="most tiles per image + thumbnail (default: %(default)s)"
    )
    parser.add_argument("--num-frames", type=int, default=32, help="frames sampled per video (default: %(default)s)")
    parser.add_argument(
        "--dtype", choices=DTYPE_NAMES, help="weights dtype (default: the text checkpoint's, never upcast silently)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the randomly initialised projector and newline")
    return parser


@exits_on_error("towervision init")
def init_main(argv: list[str] | None = None) -> int:
    """`towervision init OUT [--vision ...] [--text ...] | --tiny`."""
    args = init_parser().parse_args(argv)
    inputs = [] if args.tiny else [args.vision, args.text]
    check_new_folder(args.output_dir, inputs)
    import torch

    from ..model.modeling_towervision import TowerVisionForConditionalGeneration
    from .compose import build_tiny, compose_checkpoint
    from .convert import meta_model
    from .output import staged_output

    if args.tiny:
        model, processor = build_tiny(args.seed)
        with staged_output(args.output_dir) as staging:
            model.save_pretrained(staging)
            processor.save_pretrained(staging)
    else:
        config = compose_checkpoint(
            args.vision, args.text, args.output_dir, args.max_tiles, args.num_frames, args.dtype, args.seed
        )
        model = meta_model(TowerVisionForConditionalGeneration, config, torch.float32)
    new = sum(p.numel() for p in model.model.multi_modal_projector.parameters()) + model.config.text_config.hidden_size
    print(
        f"wrote {'tiny ' if args.tiny else ''}TowerVision checkpoint to {args.output_dir}: "
        f"{model.num_parameters():,} parameters ({new:,} new: projector + image newline), "
        f"vision {model.config.vision_config.num_hidden_layers} layers, "
        f"tiles <= {model.config.max_tiles} x {model.config.tile_size}px"
    )
    return 0


def convert_parser() -> argparse.ArgumentParser:
    """The `towervision convert` command line."""
    parser = argparse.ArgumentParser(
        prog="towervision convert",
        description="Convert a released TowerVision / TowerVideo checkpoint (native llava_next / llava_onevision, "
        "e.g. a local copy of utter-project/TowerVision-2B) into a TowerVision trust_remote_code checkpoint that "
        "computes what the release was trained to compute under transformers 5.",
    )
    parser.add_argument("source", type=Path, help="released checkpoint folder")
    parser.add_argument("output", type=Path, help="folder to write the TowerVision checkpoint to (missing or empty)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="cast floating-point weights (default: keep)")
    parser.add_argument("--max-tiles", type=int, help="keep only the pinpoints of at most this many tiles")
    return parser


@exits_on_error("towervision convert")
def convert_main(argv: list[str] | None = None) -> int:
    """`towervision convert SRC OUT`: a released llava_next / llava_onevision checkpoint -> TowerVision."""
    args = convert_parser().parse_args(argv)
    check_new_folder(args.output, [args.source])
    from .convert import convert_checkpoint

    convert_checkpoint(args.source, args.output, dtype=args.dtype, max_tiles=args.max_tiles)
    return 0


def export_parser() -> argparse.ArgumentParser:
    """The `towervision export` command line."""
    parser = argparse.ArgumentParser(
        prog="towervision export",
        description="Export a TowerVision checkpoint as a native transformers llava_next / llava_onevision folder "
        "(weights bit-exact). Native classes of transformers >= 5.4 merge image features unscaled: read the "
        "caveat printed at the end.",
    )
    parser.add_argument("source", type=Path, help="TowerVision checkpoint folder")
    parser.add_argument("output", type=Path, help="folder to write the native checkpoint to (missing or empty)")
    parser.add_argument("--format", required=True, choices=NATIVE_FORMATS, help="native model type to write")
    return parser


@exits_on_error("towervision export")
def export_main(argv: list[str] | None = None) -> int:
    """`towervision export SRC OUT --format llava_next|llava_onevision`: TowerVision -> native transformers."""
    args = export_parser().parse_args(argv)
    check_new_folder(args.output, [args.source])
    from .convert import export_checkpoint

    export_checkpoint(args.source, args.output, args.format)
    return 0


def merge_parser() -> argparse.ArgumentParser:
    """The `towervision merge` command line."""
    parser = argparse.ArgumentParser(
        prog="towervision merge",
        description="Fold a LoRA adapter (and its image newline), or the trained tensors of a `--save_trained_only` "
        "run, into its base: a plain checkpoint that loads with AutoModelForImageTextToText + trust_remote_code.",
    )
    parser.add_argument(
        "adapter_dir",
        metavar="STAGE_DIR",
        help="output_dir of a --use_peft run (adapter_config.json) or a --save_trained_only run",
    )
    parser.add_argument("out", help="folder for the merged checkpoint (missing or empty)")
    parser.add_argument(
        "--base", help="base model (default: the one the adapter config or trained_modules.json names; `tiny`)"
    )
    parser.add_argument("--dtype", default="auto", choices=("auto", *DTYPE_NAMES))
    return parser


@exits_on_error("towervision merge")
def merge_main(argv: list[str] | None = None) -> int:
    """`towervision merge STAGE_DIR OUT [--base MODEL]`."""
    args = merge_parser().parse_args(argv)
    check_model_folder(args.adapter_dir, "it is the output_dir of a `towervision train` run")
    if args.base is not None:
        check_model_folder(args.base)
    check_new_folder(args.out, [args.adapter_dir, args.base])
    from .merge import merge_adapter, merge_trained
    from .trained_modules import is_trained_modules_folder

    return merge_trained(args) if is_trained_modules_folder(args.adapter_dir) else merge_adapter(args)
