"""The `towervision` command line. Its dispatcher is the top-level `towervision_cli` module (usage and `--version`
without importing torch or transformers); each command's front end lives with its concept (`checkpoint.cli`,
`data.cli`, `evaluation.cli`, `hub.push`, `demo`), and `towervision train`'s here: `--help` lists our own options,
grouped, without importing torch or TRL; `--help-all` lists every option TRL accepts as well; training itself
(`towervision_hf.train`) imports them."""

import argparse
import dataclasses
import sys

from towervision_cli import COMMANDS, main

from .errors import exits_on_error
from .training.arguments import DataArguments, StageArguments


__all__ = ["COMMANDS", "main", "train_main"]

DESCRIPTION = (
    "Train one TowerVision stage with TRL's SFTTrainer. A recipe is a flat YAML of the options below and of TRL's "
    "SFTConfig / ModelConfig fields; any of them can be overridden on the command line (--key value). A recipe "
    "shipped with the package is named by its path under recipes/, e.g. tiny/stage1_projector.yaml."
)
EPILOG = (
    "TRL's options are accepted the same way: SFTConfig (transformers' TrainingArguments and TRL's SFT fields: "
    "output_dir, learning_rate, per_device_train_batch_size, gradient_accumulation_steps, num_train_epochs, "
    "max_steps, max_length, packing, ...) and ModelConfig (model_name_or_path, dtype, attn_implementation, use_peft, "
    "lora_r, load_in_4bit, ...). `towervision train --help-all` lists all of them (it imports TRL)."
)


def train_help_parser() -> argparse.ArgumentParser:
    """A parser that documents `DataArguments` and `StageArguments`, one group each (it parses nothing)."""
    parser = argparse.ArgumentParser(
        prog="towervision train", usage="%(prog)s RECIPE [--key value ...]", description=DESCRIPTION, epilog=EPILOG
    )
    parser.add_argument("--help-all", action="store_true", help="also list TRL's options (imports TRL: seconds)")
    for arguments in (DataArguments, StageArguments):
        group = parser.add_argument_group(f"{arguments.__name__}", arguments.__doc__)
        for option in dataclasses.fields(arguments):
            kind = getattr(option.type, "__name__", None) or str(option.type).removesuffix(" | None")
            group.add_argument(
                f"--{option.name}",
                metavar=kind.upper(),
                choices=option.metadata.get("choices"),
                help=f"{option.metadata['help']} (default: {option.default})",
            )
    return parser


@exits_on_error("towervision train")
def train_main(argv: list[str] | None = None) -> int:
    """`towervision train RECIPE [--key value ...]`, `--help`, `--help-all`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        train_help_parser().print_help()
        return 0
    from .train import run

    if argv[0] == "--help-all":
        argv = ["--help"]  # TRL's parser prints every option (ours, SFTConfig's, ModelConfig's) and exits
    run(argv)
    return 0
