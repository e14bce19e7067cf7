"""`towervision eval {commute,multi30k,alm-bench,vimul} --model DIR ...`: run a benchmark, write JSON + Markdown;
`towervision eval lmms-tasks --out DIR --commute PATH ...`: our lmms-eval tasks reading local copies.

Exit status: 0 when items were scored, 1 when none was (the results are still written, and the message names the
skip reasons), 2 for bad arguments or data that lacks the benchmark's columns. Data layouts: docs/evaluation.md.
"""

import argparse
import importlib.util
import os
import sys

from ..errors import COMMAND_ERRORS, report_error
from .languages import PAPER_LANGUAGES, parse_language_list
from .results import RunResult


EXIT_NOTHING_SCORED = 1
LOCAL_DATA = (
    "--data takes a Hub dataset id, a local directory in the Hub's parquet layout (DIR/data/<split>-00000-of-00001"
    ".parquet, one file per split) or a single .parquet / .jsonl / .json / .csv file, which is read as split 'test'. "
    "Images may be datasets Image values, {'bytes', 'path'} dicts, bytes or file paths."
)
DATA_LAYOUTS = {
    "commute": "Splits are named by target language (de, fr, ru, zh, ar, cs): a local copy is a directory "
    "DIR/data/de-00000-of-00001.parquet, DIR/data/fr-00000-of-00001.parquet, ... (a single file reads as split "
    "'test', which is not a language, and scores nothing). Columns: image, source (English), correct_translation, "
    "incorrect_translation; image_name optional.",
    "multi30k": "Columns: en, de, fr, cs (one column per language of --pairs) and image; splits train, validation, "
    "test (--split).",
    "alm-bench": "Split test (--split). Columns: file_name (the image), Language (English name, e.g. German), "
    "Category, Question_Type (multiple choice / true-false / short / long), Translated_Question, Translated_Answer; "
    "ID optional. Multiple-choice answers read '<answer> (Options: a, b, c)'.",
    "vimul": "Hub: one config per language and question kind (--configs), split --split. Local: every split of the "
    "directory or file. Columns (renamed with --columns role=column): video (a path relative to --video-root, bytes "
    "or a {'bytes', 'path'} dict), question, answer; optional options (a list, JSON or one per line), language, "
    "category, question_type. Rows with options are multiple choice (answer: option letter or text).",
}
# What to do about the most frequent skip reason of a run that scored few or no items.
SKIP_HINTS = {
    "unknown_language": "split names (CoMMuTE) or Language values must name a language, e.g. de or German",
    "missing_video": "relative video paths are resolved against --video-root: pass the folder that holds the videos",
    "missing_image": "the images are missing or cannot be decoded",
    "pair_not_in_data": "--pairs names languages that have no column in the data",
    "open_ended_unjudged": "open-ended questions are scored only with --judge-endpoint",
    "unknown_requested_language": "--langs names no known language",
}


def _task(tasks, name: str, help_text: str, data: str) -> argparse.ArgumentParser:
    parser = tasks.add_parser(
        name,
        help=help_text,
        description=f"{help_text}.",
        epilog=f"data layout: {DATA_LAYOUTS[name]}\n\n{LOCAL_DATA}\n\nMore: docs/evaluation.md",
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "--model", required=True, help="checkpoint directory or Hub id (loaded with trust_remote_code)"
    )
    parser.add_argument("--data", default=data, help="Hub dataset id, local directory or file (default: %(default)s)")
    parser.add_argument("--revision", default=None, help="dataset revision on the Hub (default: main)")
    parser.add_argument(
        "--output-dir", default="results", help="folder of <task>.json, .md, .predictions.jsonl (default: %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="items per forward pass (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many rows per split (smoke runs)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="auto", help="torch dtype for the model weights (default: checkpoint's)")
    parser.add_argument("--attn-implementation", default=None, help="e.g. sdpa (default: the checkpoint's)")
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's paragraphs, wrapped to the terminal."""

    def _fill_text(self, text, width, indent):
        import textwrap

        return "\n\n".join(
            textwrap.fill(part, width, initial_indent=indent, subsequent_indent=indent) for part in text.split("\n\n")
        )


def _judge_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--judge-endpoint", default=None, help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    parser.add_argument("--judge-model", default="gpt-4o", help="judge model name served by the endpoint")
    parser.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable with the API key")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="towervision eval",
        description="Run the TowerVision paper's benchmarks. `towervision eval TASK --help` gives the task's data "
        "layout; docs/evaluation.md has all of them.",
        epilog="exit status: 0 items were scored, 1 no item was scored (results still written), 2 bad arguments",
    )
    tasks = parser.add_subparsers(dest="task", required=True)

    commute_data = "Unbabel/commute_multimodal_mt"
    commute = _task(tasks, "commute", "CoMMuTE contrastive accuracy per language pair", commute_data)
    commute.add_argument(
        "--langs",
        default="paper",
        help="target languages: 'paper' (Table 2: de,fr,ru,zh), 'all' (every split: ar, cs are opt-in) or codes "
        "(default: %(default)s)",
    )

    multi30k = _task(
        tasks, "multi30k", "Multi30K translation: xCOMET (headline), chrF and BLEU per pair", "romrawinjp/multi30k"
    )
    multi30k.add_argument("--split", default="test", help="split to translate (default: %(default)s, Flickr 2016)")
    multi30k.add_argument(
        "--pairs", default="en-cs,en-de,en-fr", help="SRC-TGT pairs, comma-separated (default: %(default)s, Table 2)"
    )
    multi30k.add_argument("--max-new-tokens", type=int, default=256, help="default: %(default)s")
    multi30k.add_argument(
        "--comet-model",
        default="Unbabel/XCOMET-XL",
        help="xCOMET checkpoint (needs the `comet` extra, unbabel-comet) (default: %(default)s)",
    )
    multi30k.add_argument("--no-comet", action="store_true", help="skip xCOMET even when it is installed")

    alm = _task(tasks, "alm-bench", "ALM-Bench accuracy per language and category (+ bar plot)", "MBZUAI/ALM-Bench")
    alm.add_argument("--split", default="test", help="default: %(default)s")
    alm.add_argument(
        "--langs",
        default="paper",
        help="'paper' (footnote 4's 23 languages), 'all', 'towervision', 'core' or codes / English names, e.g. de,fr",
    )
    alm.add_argument("--plot", default=None, help="write a per-language bar plot (PNG) here")
    alm.add_argument("--max-new-tokens", type=int, default=512, help="default: %(default)s")
    _judge_args(alm)

    vimul = _task(tasks, "vimul", "ViMUL-Bench video QA: MCQ accuracy (+ judged open-ended)", "MBZUAI/ViMUL-Bench")
    vimul.add_argument("--configs", default=None, help="Hub configs, comma-separated (default: all of them)")
    vimul.add_argument("--split", default="test", help="split of each Hub config (default: %(default)s)")
    vimul.add_argument("--langs", default="all", help="'all', 'towervision', 'core' or codes / English names")
    vimul.add_argument("--video-root", default=None, help="directory that relative video paths are resolved against")
    vimul.add_argument("--num-frames", type=int, default=None, help="frames per video (default: the processor's)")
    vimul.add_argument("--columns", default=None, help="column overrides, e.g. video=clip,answer=gt")
    vimul.add_argument("--max-new-tokens", type=int, default=512, help="default: %(default)s")
    _judge_args(vimul)

    local = tasks.add_parser(
        "lmms-tasks",
        help="write a copy of our lmms-eval tasks that reads local copies of the benchmarks",
        description="Copy the lmms-eval tasks towervision_{commute,multi30k,alm_bench,vimul} (and the CC-OCR one) to "
        "--out, each named benchmark reading the given local copy (the layouts of `towervision eval TASK --help`); "
        "then run `lmms-eval --include_path OUT --tasks ...` with any model.",
    )
    local.add_argument("--out", required=True, help="folder to write the tasks to (other files there are kept)")
    for benchmark in ("commute", "multi30k", "alm-bench", "vimul"):
        local.add_argument(f"--{benchmark}", default=None, help="local copy (folder, save_to_disk folder or file)")
    local.add_argument("--video-root", default=None, help="folder that ViMUL-Bench's relative video paths are in")
    return parser


def _judge(args):
    if not args.judge_endpoint:
        return None
    from .judge import OpenAICompatibleJudge

    return OpenAICompatibleJudge(args.judge_endpoint, args.judge_model, api_key=os.environ.get(args.judge_api_key_env))


def _languages(args, result: RunResult):
    value = ",".join(PAPER_LANGUAGES[args.task]) if args.langs == "paper" else args.langs
    languages, unknown = parse_language_list(value)
    for entry in unknown:
        result.notes.append(f"--langs entry {entry!r} is not a known language; ignored")
        result.skip("unknown_requested_language")
    return languages


def _settings(args) -> dict:
    hidden = {"task", "model", "data", "revision", "output_dir", "judge_api_key_env"}
    return {key: value for key, value in vars(args).items() if key not in hidden and value is not None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.task == "lmms-tasks":
            return _write_lmms_tasks(args)
        return run(args)
    except COMMAND_ERRORS as error:  # data without the benchmark's layout, bad options, the network, a missing extra
        return report_error(f"towervision eval {args.task}", error)


def _write_lmms_tasks(args) -> int:
    from .harness import write_local_tasks

    data = {name: getattr(args, name) for name in ("commute", "multi30k", "alm_bench", "vimul") if getattr(args, name)}
    if not data:
        raise ValueError("name at least one local copy: --commute, --multi30k, --alm-bench or --vimul")
    write_local_tasks(args.out, data, video_root=args.video_root)
    return 0


def run(args) -> int:
    """Run the task of parsed `args`; returns the exit status (`check_coverage`)."""
    from ..checkpoint.output import check_model_folder, check_output
    from ..checkpoint.trained_modules import require_full_model
    from .scoring import default_num_frames, load_model_and_processor
    from .sources import load_splits

    check_model_folder(args.model)
    require_full_model(args.model)
    inputs = [args.model, args.data]
    for output in (os.path.join(args.output_dir, f"{args.task}.json"), getattr(args, "plot", None)):
        if output is not None:
            check_output(output, inputs)

    # everything that can be wrong with the inputs is checked before the model is loaded
    if args.task == "vimul":
        from .vimul import load_vimul

        splits, provenance = load_vimul(args.data, args.configs, args.split, args.revision)
        column_overrides = _column_overrides(args.columns)
    else:
        splits, provenance = load_splits(args.data, revision=args.revision)
    if args.task in ("multi30k", "alm-bench"):
        if args.split not in splits:
            raise ValueError(f"--split {args.split!r} is not in {args.data!r}; available splits: {list(splits)}")
        split = splits[args.split]
    if args.task == "multi30k":
        from .multi30k import check_pairs, parse_pairs

        pairs = parse_pairs(args.pairs)
        check_pairs(split, pairs)
    result = RunResult(task=args.task, model=args.model, data=provenance, settings=_settings(args))
    languages = _languages(args, result) if hasattr(args, "langs") else None
    if args.task == "commute":
        from .commute import check_pairs

        check_pairs(splits, languages)
    comet = args.task == "multi30k" and not args.no_comet
    if comet and importlib.util.find_spec("comet") is None:
        raise ImportError(
            f"multi30k's headline metric, xCOMET ({args.comet_model}), needs unbabel-comet: pip install "
            "'towervision-hf[comet]', or pass --no-comet to report chrF and BLEU only"
        )
    model, processor = load_model_and_processor(args.model, args.device, args.dtype, args.attn_implementation)

    if args.task == "commute":
        from .commute import evaluate_commute

        predictions = evaluate_commute(
            model, processor, splits, result, languages, batch_size=args.batch_size, limit=args.limit
        )
    elif args.task == "multi30k":
        from .multi30k import evaluate_multi30k

        predictions = evaluate_multi30k(
            model,
            processor,
            split,
            result,
            pairs,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            limit=args.limit,
            comet_model=None if args.no_comet else args.comet_model,
        )
    elif args.task == "alm-bench":
        from .alm_bench import evaluate_alm_bench, plot_languages

        predictions = evaluate_alm_bench(
            model,
            processor,
            split,
            result,
            languages,
            judge=_judge(args),
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            limit=args.limit,
        )
        if args.plot:
            os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
            plot_languages(result.tables["language"], args.plot)
            print(f"per-language plot: {args.plot}")
    else:
        from .vimul import evaluate_vimul

        predictions = evaluate_vimul(
            model,
            processor,
            splits,
            result,
            languages,
            judge=_judge(args),
            video_root=args.video_root,
            num_frames=args.num_frames or default_num_frames(model, processor),
            column_overrides=column_overrides,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            limit=args.limit,
        )
    paths = result.write(args.output_dir, predictions, inputs=inputs)
    print(result.to_markdown())
    print(f"results: {paths['json']}, {paths['md']}")
    status = check_coverage(result, predictions)
    headline = next(iter(result.tables.get("headline", {None: {}}).values()))
    if status == 0 and comet and all(value is None for value in headline.values()):
        reason = next((note for note in result.notes if note.startswith("COMET")), "see the notes")
        print(
            f"towervision eval multi30k: error: the headline metric was scored for no pair ({reason}); chrF and "
            "BLEU are in the results",
            file=sys.stderr,
        )
        return EXIT_NOTHING_SCORED
    return status


def check_coverage(result: RunResult, predictions: list[dict]) -> int:
    """The exit status of a run: an error naming the skip reasons when no item was scored, a warning when more
    than half of the items were skipped. An item is scored unless its `score` is None (unjudged open answers)."""
    scored = sum(record.get("score", 0) is not None for record in predictions)
    skipped = sum(result.skipped.values())
    reasons = sorted(result.skipped.items(), key=lambda item: -item[1])
    hint = f" ({SKIP_HINTS[reasons[0][0]]})" if reasons and reasons[0][0] in SKIP_HINTS else ""
    listing = ", ".join(f"{reason}: {count}" for reason, count in reasons) or "no rows were read"
    if scored == 0:
        print(
            f"towervision eval {result.task}: error: no item was scored; skipped {listing}{hint}. "
            f"See `towervision eval {result.task} --help` for the data layout.",
            file=sys.stderr,
        )
        return EXIT_NOTHING_SCORED
    if skipped > scored:
        print(
            f"towervision eval {result.task}: warning: {skipped} of {skipped + scored} items were skipped, most "
            f"as {reasons[0][0]} ({reasons[0][1]}){hint}",
            file=sys.stderr,
        )
    return 0


def _column_overrides(value: str | None) -> dict[str, str]:
    overrides = {}
    for entry in (part.strip() for part in (value or "").split(",") if part.strip()):
        role, separator, column = entry.partition("=")
        if not separator or not role or not column:
            raise ValueError(f"--columns entry {entry!r} is not of the form role=column")
        overrides[role] = column
    return overrides
