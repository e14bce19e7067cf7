"""`towervision data {build,translate,filter,synth,merge,sample}`."""

import argparse
import json
import os
import sys
from pathlib import Path

from ..checkpoint.output import check_output, staged_output
from ..errors import COMMAND_ERRORS, report_error
from .report import BuildReport


DEFAULT_CONCURRENCY = 32  # `data synth` requests in flight


def _build(args) -> int:
    from .mixture import build, format_plan, load_recipe

    recipe = load_recipe(args.recipe, args.set)
    if args.dry_run:
        print(format_plan(recipe, args.stage))
        return 0
    if not args.out:
        raise SystemExit("towervision data build: --out is required (or --dry-run)")
    if args.cache_dir:
        recipe.media["cache_dir"] = args.cache_dir
    if args.no_fetch:
        recipe.media["fetch"] = False
    if args.workers is not None:
        recipe.media["workers"] = args.workers
    with staged_output(args.out, [args.recipe]) as out:
        build(recipe, out, stage=args.stage, streaming=args.streaming, limit=args.limit)
    return 0


def _read_rows(source: str, limit: int | None = None):
    """Schema rows from a local JSONL file/folder, a `save_to_disk` folder or a recipe input (`RECIPE.yaml#NAME`)."""
    from .jsonl import read_jsonl

    recipe_path, separator, input_name = source.partition("#")
    if separator and recipe_path.endswith((".yaml", ".yml")):
        from .mixture import input_samples, load_recipe

        report = BuildReport(source)
        rows = list(input_samples(load_recipe(recipe_path), input_name, report, limit=limit))
        print(report.format_table(), file=sys.stderr)
        return rows
    path = Path(source)
    if path.is_dir() and (path / "state.json").exists():
        from datasets import load_from_disk

        return list(load_from_disk(str(path)))
    return list(read_jsonl(path))


def _source_path(source: str) -> str:
    """The local path of a `--source` (the recipe file of `RECIPE.yaml#INPUT`)."""
    recipe_path, separator, _ = source.partition("#")
    return recipe_path if separator and recipe_path.endswith((".yaml", ".yml")) else source


# options that change how fast a run goes, not what it writes: a resumed run may change them
_RUN_ONLY = {
    "run",
    "command",
    "out",
    "shard_index",
    "chunk_size",
    "backend",
    "batch_size",
    "tensor_parallel_size",
    "max_num_seqs",
    "gpu_memory_utilization",
    "gpus",
    "endpoint",
    "api_key_env",
    "concurrency",
    "timeout",
    "max_retries",
}


def _run(args, units, process, report: BuildReport, key, files=("data",)) -> BuildReport:
    """`run_resumable` with the command's sharding and chunking options; prints the report and the runs."""
    from .resume import format_runs, run_resumable

    settings = {name: value for name, value in vars(args).items() if name not in _RUN_ONLY}
    report, resume = run_resumable(
        args.out,
        units,
        process,
        report=report,
        settings=settings,
        key=key,
        files=files,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        chunk_size=args.chunk_size,
        desc=args.command,
    )
    print(report.format_table())
    print(format_runs(resume))
    return report


def _row_key(row: dict, *extra) -> str:
    return json.dumps([row.get("id"), row.get("messages"), *extra], ensure_ascii=False, default=repr)


def _translate(args) -> int:
    from .translate import make_backend, plan_targets, translate_pairs

    check_output(args.out, [_source_path(args.source)])  # resumable: an earlier run's folder is continued
    rows = _read_rows(args.source, args.limit)[: args.limit]
    targets = plan_targets(
        len(rows), _target_languages(args.langs), assign=args.assign, seed=args.seed, keep_english=args.keep_english
    )
    report = BuildReport("translate", model=args.model, mode=args.mode, assign=args.assign, seed=args.seed)

    def process(chunks):  # the model loads only when rows are left to translate
        backend = make_backend(
            args.model,
            args.backend,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            tensor_parallel_size=args.tensor_parallel_size,
            max_num_seqs=args.max_num_seqs,
            gpu_memory_utilization=args.gpu_memory_utilization,
        )
        for chunk in chunks:
            yield {
                "data": list(
                    translate_pairs(
                        chunk,
                        backend,
                        mode=args.mode,
                        seed=args.seed,
                        model_name=args.model,
                        report=report,
                        chunk_size=None,
                    )
                )
            }

    _run(args, list(zip(rows, targets)), process, report, key=lambda unit: _row_key(*unit))
    return 0


def _target_languages(spec: str) -> list[str]:
    """`all` / `core`: the set's languages other than English; else a comma-separated list of codes."""
    from .languages import LANGUAGE_SETS, resolve_language_set

    codes = resolve_language_set(spec)
    return [code for code in codes if code != "en"] if spec in LANGUAGE_SETS else list(codes)


def _filter(args) -> int:
    from .jsonl import read_jsonl
    from .quality import CometKiwiScorer, score_rows, split_by_threshold

    source = Path(args.input)
    check_output(args.out, [source])  # resumable: an earlier run's folder is continued
    files = [source]
    if source.is_dir():  # a translate output, or a filter output (kept and rejected rows, to re-threshold)
        files = sorted(source.glob("data*.jsonl")) + sorted(source.glob("rejected*.jsonl"))
    rows = [row for file in files for row in read_jsonl(file)][: args.limit]
    report = BuildReport("filter", qe=args.qe, threshold=args.threshold)

    def process(chunks):
        scorer = None

        def score(sources, translations):  # loads COMET once, when some rows still need scores
            nonlocal scorer
            scorer = scorer or CometKiwiScorer(args.qe, batch_size=args.batch_size, gpus=args.gpus)
            return scorer(sources, translations)

        for chunk in chunks:
            kept, rejected = split_by_threshold(
                score_rows(chunk, score, args.qe, rescore=args.rescore), args.threshold, report
            )
            yield {"data": kept, "rejected": rejected}

    _run(
        args, rows, process, report, key=lambda row: _row_key(row, row.get("translation")), files=("data", "rejected")
    )
    return 0


def _synth(args) -> int:
    from .synth import ChatClient, answer_chunks

    check_output(args.out, [_source_path(args.source)])  # resumable: an earlier run's folder is continued
    client = ChatClient(
        args.endpoint, api_key=os.environ.get(args.api_key_env), timeout=args.timeout, max_retries=args.max_retries
    )
    report = BuildReport("synth", model=args.model, endpoint=args.endpoint)

    def process(chunks):
        answers = answer_chunks(
            chunks,
            client,
            args.model,
            seed=args.seed,
            report=report,
            families=args.families.split(",") if args.families else None,
            prompts_per_question=args.prompts_per_question,
            concurrency=args.concurrency,
            max_tokens=args.max_tokens,
        )
        for answered in answers:
            yield {"data": answered}

    rows = _read_rows(args.source, args.limit)[: args.limit]
    report = _run(args, rows, process, report, key=_row_key)
    examples = [example for examples in report.examples.values() for example in examples]
    failed = [example["detail"] for example in examples if example["reason"] == "request_failed"]
    if report.total == 0 and failed:
        print(
            f"towervision data synth: every request to {args.endpoint} failed; the first: {failed[0]}", file=sys.stderr
        )
        return 1
    return 0


def _merge(args) -> int:
    from .resume import merge_shards

    print(merge_shards(args.out).format_table())
    return 0


def _sample(args) -> int:
    from .sample import generate_sample_source, load_sample

    with staged_output(args.out) as out:
        counts = generate_sample_source(out)
        for stage in counts:
            report = BuildReport(f"sample/stage{stage}")
            load_sample(stage, root=out, report=report)
            print(report.format_table())
            skipped = {source: dict(reasons) for source, reasons in report.skipped.items() if reasons}
            if skipped:  # nothing is left behind
                raise ValueError(f"stage {stage}: rows did not load back: {json.dumps(skipped)}")
    return 0


def _add_run_options(command, chunk_size: int) -> None:
    command.add_argument(
        "--num-shards",
        type=int,
        default=1,
        help="split the input rows into N contiguous shards, as datasets' shard() (default: 1)",
    )
    command.add_argument(
        "--shard-index",
        type=int,
        default=0,
        help="the shard this run writes, 0..N-1, e.g. $SLURM_ARRAY_TASK_ID (default: 0)",
    )
    command.add_argument(
        "--chunk-size",
        type=int,
        default=chunk_size,
        help="input rows per checkpoint: re-running the command after a kill goes on from the last "
        "one (default: %(default)s)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="towervision data",
        description="Build, translate, filter and synthesise VisionBlocks-style training data.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build a mixture recipe into save_to_disk folders with counts")
    build.add_argument("recipe", help="recipe YAML, e.g. recipes/data/visionblocks.yaml")
    build.add_argument("--out", help="output folder (one sub-folder per stage when building several)")
    build.add_argument(
        "--dry-run",
        action="store_true",
        help="print every source's samples and shares (and the paper's rows) without reading data",
    )
    build.add_argument("--stage", help="build only this stage")
    build.add_argument("--streaming", action="store_true", help="stream Hub sources instead of downloading them")
    build.add_argument("--limit", type=int, help="stop each stage after this many rows")
    build.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. languages=core, switches.video=english (repeatable; the "
        "paper's ablations: recipes/README.md)",
    )
    build.add_argument("--cache-dir", help="URL media cache (default ~/.cache/towervision/media)")
    build.add_argument("--no-fetch", action="store_true", help="keep image URLs unresolved in the output")
    build.add_argument("--workers", type=int, help="threads fetching URL media")
    build.set_defaults(run=_build)

    translate = commands.add_parser("translate", help="translate rows with Tower+")
    translate.add_argument(
        "--source", required=True, help="local JSONL file/folder, save_to_disk folder or RECIPE.yaml#INPUT"
    )
    translate.add_argument(
        "--langs",
        required=True,
        help="all / core (their languages but English) or comma-separated codes, e.g. de,pt-PT",
    )
    translate.add_argument("--model", default="Unbabel/Tower-Plus-9B", help="Tower+ model (default: %(default)s)")
    translate.add_argument("--out", required=True, help="output folder (data.jsonl, media/, report.json)")
    translate.add_argument(
        "--mode",
        choices=("caption", "conversation"),
        default="conversation",
        help="caption: the caption, with a new prompt; conversation: every turn (default: %(default)s)",
    )
    translate.add_argument(
        "--assign",
        choices=("each", "uniform"),
        default="each",
        help="each: every row into every language; uniform: each row into one language",
    )
    translate.add_argument(
        "--keep-english",
        type=float,
        default=0.0,
        help="with --assign uniform, the fraction of rows kept in English (0.5 for video)",
    )
    translate.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    translate.add_argument(
        "--backend",
        choices=("auto", "transformers", "vllm"),
        default="auto",
        help="auto: vLLM when installed and a GPU is visible (default: %(default)s)",
    )
    translate.add_argument("--batch-size", type=int, default=16, help="default: %(default)s")
    translate.add_argument("--max-new-tokens", type=int, default=1024, help="default: %(default)s")
    translate.add_argument("--limit", type=int, help="translate only the first N rows")
    translate.add_argument("--tensor-parallel-size", type=int, help="vLLM: GPUs one model is split over")
    translate.add_argument("--max-num-seqs", type=int, help="vLLM: sequences batched per step (vLLM's default)")
    translate.add_argument("--gpu-memory-utilization", type=float, help="vLLM: share of GPU memory it may take")
    _add_run_options(translate, chunk_size=256)
    translate.set_defaults(run=_translate)

    quality = commands.add_parser("filter", help="score translations with COMETKiwi and keep those above a threshold")
    quality.add_argument("input", help="a translate or filter output folder (or one JSONL file)")
    quality.add_argument(
        "--qe", default="Unbabel/wmt22-cometkiwi-da", help="COMETKiwi quality-estimation model (default: %(default)s)"
    )
    quality.add_argument(
        "--threshold", type=float, default=0.85, help="keep rows scoring at least this (default: %(default)s)"
    )
    quality.add_argument("--out", required=True, help="output folder (data.jsonl, rejected.jsonl, report.json)")
    quality.add_argument("--rescore", action="store_true", help="score again even where scores are stored")
    quality.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    quality.add_argument("--gpus", type=int, help="GPUs for COMET (default: 1 if CUDA is available, else 0)")
    quality.add_argument("--limit", type=int, help="filter only the first N rows")
    _add_run_options(quality, chunk_size=4096)
    quality.set_defaults(run=_filter)

    synth = commands.add_parser(
        "synth",
        help="re-answer VQA questions through an OpenAI-compatible endpoint with "
        "the paper's A.5.2 answer-format system prompts",
    )
    synth.add_argument(
        "--source",
        required=True,
        help="question rows: RECIPE.yaml#INPUT (e.g. ...visionblocks.yaml#chartqa_questions), a local "
        "JSONL file/folder or a save_to_disk folder",
    )
    synth.add_argument("--endpoint", required=True, help="base URL, e.g. http://localhost:8000/v1")
    synth.add_argument("--model", required=True, help="model name served by the endpoint")
    synth.add_argument("--out", required=True, help="output folder (data.jsonl, media/, report.json)")
    synth.add_argument("--families", help="comma-separated A.5.2 prompt families (default: all)")
    synth.add_argument(
        "--prompts-per-question",
        type=int,
        default=1,
        help="requests per question, each with a different system prompt (default: %(default)s)",
    )
    synth.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    synth.add_argument("--seed", type=int, default=0, help="seeds the prompts drawn per row (default: %(default)s)")
    synth.add_argument("--limit", type=int, help="answer the questions of the first N rows only")
    synth.add_argument(
        "--max-tokens",
        type=int,
        default=1024,
        help="answer length limit; answers cut at it are dropped and counted (default: %(default)s)",
    )
    synth.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight (default: %(default)s)"
    )
    synth.add_argument(
        "--timeout", type=float, default=120.0, help="seconds one attempt of a request may take (default: %(default)s)"
    )
    synth.add_argument(
        "--max-retries",
        type=int,
        default=5,
        help="retries of a request after a 408/409/429/5xx answer, a timeout or a dropped connection, "
        "with backoff and jitter or after Retry-After (default: %(default)s)",
    )
    _add_run_options(synth, chunk_size=256)
    synth.set_defaults(run=_synth)

    merge = commands.add_parser(
        "merge",
        help="check that every shard of a translate / synth / filter output "
        "finished and sum their reports into report.json",
    )
    merge.add_argument("out", help="the output folder the shards wrote into")
    merge.set_defaults(run=_merge)

    sample = commands.add_parser("sample", help="generate the embedded multilingual sample")
    sample.add_argument("--out", required=True, help="output folder")
    sample.set_defaults(run=_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except COMMAND_ERRORS as error:  # a bad recipe, override, option or input path, the network, a missing extra
        return report_error(f"towervision data {args.command}", error)
