"""`towervision` command line: each sub-command lives in its own module of `towervision_hf` and is imported only
when used, so that `towervision --help` and `--version` import nothing of the package, and `towervision COMMAND
--help` only the command's light front end (its arguments), never torch or transformers."""

import importlib
import sys
from importlib.metadata import PackageNotFoundError, version


# sub-command -> (module, function taking argv, one-line help)
COMMANDS = {
    "init": (
        "towervision_hf.checkpoint.cli",
        "init_main",
        "compose a stage-0 model from a SigLIP and a Tower+ checkpoint (or --tiny)",
    ),
    "convert": (
        "towervision_hf.checkpoint.cli",
        "convert_main",
        "turn a released llava_next / llava_onevision checkpoint into TowerVision",
    ),
    "export": (
        "towervision_hf.checkpoint.cli",
        "export_main",
        "export a TowerVision checkpoint back to transformers' native classes",
    ),
    "train": ("towervision_hf.cli", "train_main", "train one stage from a recipe YAML (TRL SFTTrainer)"),
    "merge": (
        "towervision_hf.checkpoint.cli",
        "merge_main",
        "merge a LoRA adapter or a stage's trained modules into a plain trust_remote_code checkpoint",
    ),
    "demo": ("towervision_hf.demo", "main", "run the embedded end-to-end demo on CPU"),
    "data": ("towervision_hf.data.cli", "main", "build, translate, filter and synthesise training data"),
    "eval": ("towervision_hf.evaluation.cli", "main", "run the paper's benchmarks"),
    "push": ("towervision_hf.hub.push", "main", "stage, check and upload a checkpoint to the Hugging Face Hub"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: towervision [--version] COMMAND [ARGS ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, _, help_text) in COMMANDS.items()]
    lines += ["", "`towervision COMMAND --help` describes a command's arguments."]
    return "\n".join(lines)


def package_version() -> str:
    try:
        return version("towervision-hf")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"towervision-hf {package_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"towervision: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            print(f"towervision: command {name!r} is not available in this installation ({error})", file=sys.stderr)
            return 2
        raise
    return getattr(module, function_name)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
