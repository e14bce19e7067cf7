"""`towervision eval {commute,multi30k,alm-bench,vimul} --model DIR ...`: run a benchmark, write JSON + Markdown."""

import argparse
import os

from .languages import PAPER_LANGUAGES, parse_language_list
from .results import RunResult


def _common(parser: argparse.ArgumentParser, data: str) -> None:
    parser.add_argument(
        "--model", required=True, help="checkpoint directory or Hub id (loaded with trust_remote_code)"
    )
    parser.add_argument("--data", default=data, help=f"Hub dataset id, local directory or file (default: {data})")
    parser.add_argument("--revision", default=None, help="dataset revision on the Hub (default: main)")
    parser.add_argument("--output-dir", default="results", help="where <task>.json / .md / .predictions.jsonl go")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="read at most this many rows per split (smoke runs)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="auto", help="torch dtype for the model weights (default: checkpoint's)")
    parser.add_argument("--attn-implementation", default=None)


def _judge_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--judge-endpoint", default=None, help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    parser.add_argument("--judge-model", default="gpt-4o", help="judge model name served by the endpoint")
    parser.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable with the API key")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="towervision eval", description="Run the TowerVision paper's benchmarks.")
    tasks = parser.add_subparsers(dest="task", required=True)

    commute = tasks.add_parser("commute", help="CoMMuTE contrastive accuracy per language pair")
    _common(commute, "Unbabel/commute_multimodal_mt")
    commute.add_argument(
        "--langs",
        default="paper",
        help="target languages: 'paper' (Table 2: de,fr,ru,zh), 'all' (every split: ar, cs are opt-in) or codes",
    )

    multi30k = tasks.add_parser("multi30k", help="Multi30K translation: xCOMET (headline), chrF and BLEU per pair")
    _common(multi30k, "romrawinjp/multi30k")
    multi30k.add_argument("--split", default="test")
    multi30k.add_argument("--pairs", default="en-cs,en-de,en-fr", help="the paper's Table 2 pairs by default")
    multi30k.add_argument("--max-new-tokens", type=int, default=256)
    multi30k.add_argument(
        "--comet-model", default="Unbabel/XCOMET-XL", help="xCOMET checkpoint (needs the `comet` extra, unbabel-comet)"
    )
    multi30k.add_argument("--no-comet", action="store_true")

    alm = tasks.add_parser("alm-bench", help="ALM-Bench accuracy per language and category (+ bar plot)")
    _common(alm, "MBZUAI/ALM-Bench")
    alm.add_argument("--split", default="test")
    alm.add_argument(
        "--langs",
        default="paper",
        help="'paper' (footnote 4's 23 languages), 'all', 'towervision', 'core' or codes / English names, e.g. de,fr",
    )
    alm.add_argument("--plot", default=None, help="write a per-language bar plot (PNG) here")
    alm.add_argument("--max-new-tokens", type=int, default=512)
    _judge_args(alm)

    vimul = tasks.add_parser("vimul", help="ViMUL-Bench video QA: MCQ accuracy (+ judged open-ended)")
    _common(vimul, "MBZUAI/ViMUL-Bench")
    vimul.add_argument("--configs", default=None, help="Hub configs, comma-separated (default: all of them)")
    vimul.add_argument("--split", default="test")
    vimul.add_argument("--langs", default="all")
    vimul.add_argument("--video-root", default=None, help="directory that relative video paths are resolved against")
    vimul.add_argument("--num-frames", type=int, default=None, help="frames per video (default: the processor's)")
    vimul.add_argument("--columns", default=None, help="column overrides, e.g. video=clip,answer=gt")
    vimul.add_argument("--max-new-tokens", type=int, default=512)
    _judge_args(vimul)
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
    from .scoring import default_num_frames, load_model_and_processor
    from .sources import load_splits

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
        from .multi30k import parse_pairs

        pairs = parse_pairs(args.pairs)
    result = RunResult(task=args.task, model=args.model, data=provenance, settings=_settings(args))
    languages = _languages(args, result) if hasattr(args, "langs") else None
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
            result.notes.append(f"per-language plot: {args.plot}")
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
    paths = result.write(args.output_dir, predictions)
    print(result.to_markdown())
    print(f"results: {paths['json']}, {paths['md']}")
    return 0


def _column_overrides(value: str | None) -> dict[str, str]:
    overrides = {}
    for entry in (part.strip() for part in (value or "").split(",") if part.strip()):
        role, separator, column = entry.partition("=")
        if not separator or not role or not column:
            raise ValueError(f"--columns entry {entry!r} is not of the form role=column")
        overrides[role] = column
    return overrides
