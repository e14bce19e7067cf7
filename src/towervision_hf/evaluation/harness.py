"""The functions of our lmms-eval tasks (`lmms_tasks/towervision_{commute,multi30k,alm_bench,vimul}`), built from the
rules of `towervision eval` so that a task scores exactly what the CLI scores on the same answers.

Each task's `process_docs` applies the CLI's row rule (the benchmark module's `prepare_item`) once: rows the CLI would
skip are dropped and counted in a warning naming the reasons, and every kept row gains `towervision_prompt` (the text
the CLI sends after the media) and `towervision_record` (the CLI's per-item record, as JSON). `process_results`
grades an answer with the CLI's `grade`, and the aggregations are the CLI's own (`metrics.contrastive_accuracy`,
`metrics.translation_metrics` and `comet_system_score`, `alm_bench.headline`, `vimul.summary`). A value the CLI
reports as empty (xCOMET without `unbabel-comet`, open-ended scores without a judge) is NaN here, with a warning.

Settings that lmms-eval cannot pass to a task come from the environment: `TOWERVISION_COMET_MODEL` (the xCOMET
checkpoint, default `Unbabel/XCOMET-XL`), `TOWERVISION_JUDGE_ENDPOINT` / `TOWERVISION_JUDGE_MODEL` (default `gpt-4o`)
/ `TOWERVISION_JUDGE_API_KEY_ENV` (default `OPENAI_API_KEY`) for ALM-Bench and ViMUL-Bench, as
`towervision eval --judge-endpoint` does.
"""

import ast
import json
import logging
import math
import os
import shutil
from collections import Counter
from functools import cache, partial
from pathlib import Path

import yaml

from ..data import loading
from . import alm_bench, commute, multi30k, vimul
from .cc_ocr import LMMS_TASKS_DIR
from .languages import ALM_BENCH_LANGUAGES
from .media import decode_image
from .metrics import comet_system_score, contrastive_accuracy, translation_metrics
from .results import RunResult
from .sources import undecoded


logger = logging.getLogger(__name__)
PROMPT, RECORD, SKIP = "towervision_prompt", "towervision_record", "towervision_skip"
DEFAULT_COMET_MODEL = "Unbabel/XCOMET-XL"


def _annotate(dataset, media_column: str | None, prepare, task: str):
    """`dataset` with PROMPT and RECORD columns from `prepare(row) -> (prompt, record) | skip reason | None` (None:
    a row the benchmark does not ask for), the skipped rows dropped and counted in a warning."""
    if media_column is not None:
        dataset = undecoded(dataset, media_column)

    def annotate(row):
        item = prepare(row)
        if item is None or isinstance(item, str):
            return {PROMPT: None, RECORD: None, SKIP: item or "not_requested"}
        return {PROMPT: item[0], RECORD: json.dumps(item[1], ensure_ascii=False), SKIP: ""}

    dataset = dataset.map(annotate, desc=f"{task}: applying towervision eval's row rule")
    skipped = Counter(reason for reason in dataset[SKIP] if reason and reason != "not_requested")
    if skipped:
        listing = ", ".join(f"{reason}: {count}" for reason, count in skipped.most_common())
        logger.warning(
            "%s: %d of %d rows skipped as towervision eval skips them (%s)",
            task,
            sum(skipped.values()),
            dataset.num_rows,
            listing,
        )
    kept = dataset.filter(lambda reason: reason == "", input_columns=SKIP).remove_columns(SKIP)
    if kept.num_rows == 0:
        raise ValueError(f"{task}: no row of the data can be scored (skipped: {dict(skipped) or 'none requested'})")
    return kept


def doc_to_text(doc) -> str:
    return doc[PROMPT]


def doc_to_image(doc):
    """The row's `image` (CoMMuTE, Multi30K), decoded as `towervision eval` decodes it."""
    return [decode_image(doc["image"])]


def _record(doc) -> dict:
    return json.loads(doc[RECORD])


def _graded(items) -> list[dict]:
    """The graded records of `process_results` (wrapped: lmms-eval reads a top-level `score` as a 0/1 item score)."""
    return [item["graded"] for item in items]


def _number(value) -> float:
    """lmms-eval needs a number: what the CLI reports as empty (None) is NaN."""
    return math.nan if value is None else float(value)


@cache
def _judge():
    endpoint = os.environ.get("TOWERVISION_JUDGE_ENDPOINT")
    if not endpoint:
        return None
    from .judge import OpenAICompatibleJudge

    api_key = os.environ.get(os.environ.get("TOWERVISION_JUDGE_API_KEY_ENV", "OPENAI_API_KEY"))
    return OpenAICompatibleJudge(endpoint, os.environ.get("TOWERVISION_JUDGE_MODEL", "gpt-4o"), api_key=api_key)


# CoMMuTE: one subtask per pair (the split named by its target language), multiple choice over the two translations.
def commute_docs(dataset, target: str):
    return _annotate(dataset, "image", lambda row: _commute_item(row, target), f"towervision_commute_en_{target}")


def _commute_item(row, target):
    item = commute.prepare_item(row, target)
    return item if isinstance(item, str) else (item[0], {"pair": f"en-{target}"})


commute_docs_de, commute_docs_fr = partial(commute_docs, target="de"), partial(commute_docs, target="fr")
commute_docs_ru, commute_docs_zh = partial(commute_docs, target="ru"), partial(commute_docs, target="zh")


def commute_doc_to_choice(doc) -> list[str]:
    return [doc["correct_translation"], doc["incorrect_translation"]]


def commute_process_results(doc, results):
    """lmms-eval's loglikelihood convention: each choice's score is its mean negative log-likelihood (the loss of
    lmms-eval's HF models, and the default of `--model towervision`); the CLI compares mean log-probabilities."""
    correct, incorrect = (_loss(response) for response in results)
    return {"accuracy": {"correct": -correct, "incorrect": -incorrect}}


def _loss(response) -> float:
    """The score of a `(score, is_greedy)` response; lmms-eval 0.7.3 hands it over as its `str()` (its
    `unwrap_generation_output` stringifies non-text outputs), which reads back exactly."""
    return float((ast.literal_eval(response) if isinstance(response, str) else response)[0])


def commute_accuracy(items) -> float:
    scores = contrastive_accuracy([item["correct"] for item in items], [item["incorrect"] for item in items])
    return scores["accuracy"]


# Multi30K: one subtask per pair of the test split.
def multi30k_docs(dataset, target: str):
    return _annotate(dataset, "image", lambda row: _multi30k_item(row, target), f"towervision_multi30k_en_{target}")


def _multi30k_item(row, target):
    item = multi30k.prepare_item(row, "en", target)
    if isinstance(item, str):
        return item
    return item[0], {"source": row["en"], "reference": row[target], "target": target}


multi30k_docs_cs, multi30k_docs_de = partial(multi30k_docs, target="cs"), partial(multi30k_docs, target="de")
multi30k_docs_fr = partial(multi30k_docs, target="fr")


def multi30k_doc_to_target(doc) -> str:
    return _record(doc)["reference"]


def multi30k_process_results(doc, results):
    item = _record(doc) | {"translation": results[0]}
    return {"xcomet": item, "chrf": item, "bleu": item}


def _translation_scores(items) -> dict:
    return translation_metrics([i["translation"] for i in items], [i["reference"] for i in items], items[0]["target"])


def multi30k_chrf(items) -> float:
    return _translation_scores(items)["chrf"]


def multi30k_bleu(items) -> float:
    return _translation_scores(items)["bleu"]


def multi30k_xcomet(items) -> float:
    """xCOMET system score x 100 (Table 2), with `$TOWERVISION_COMET_MODEL`; NaN and a warning when it cannot run."""
    model = os.environ.get("TOWERVISION_COMET_MODEL", DEFAULT_COMET_MODEL)
    columns = ([i["source"] for i in items], [i["translation"] for i in items], [i["reference"] for i in items])
    try:
        return 100 * comet_system_score(*columns, model)
    except Exception as error:  # noqa: BLE001 (unbabel-comet missing, checkpoint unreachable: keep chrF and BLEU)
        logger.warning(
            "xcomet is NaN: COMET (%s) failed: %s: %s (pip install 'towervision-hf[comet]')",
            model,
            type(error).__name__,
            error,
        )
        return math.nan


# ALM-Bench: the test split in footnote 4's 23 languages, the authors' prompts.
def alm_bench_docs(dataset):
    return _annotate(dataset, "file_name", _alm_bench_item, "towervision_alm_bench")


def _alm_bench_item(row):
    item = alm_bench.prepare_item(row, ALM_BENCH_LANGUAGES)
    return item if item is None or isinstance(item, str) else (item[0], item[2])


def alm_bench_doc_to_visual(doc):
    return [decode_image(doc["file_name"])]


def alm_bench_doc_to_target(doc) -> str:
    return _record(doc)["answer"]


def alm_bench_process_results(doc, results):
    graded = {"graded": alm_bench.grade(_record(doc), results[0], RunResult("alm-bench", "", {}, {}), _judge())}
    return {"en": graded, "multilingual": graded, "multilingual_all": graded}


def alm_bench_en(items) -> float:
    return _number(alm_bench.headline(_graded(items))["en"])


def alm_bench_multilingual(items) -> float:
    return _number(alm_bench.headline(_graded(items))["multilingual"])


def alm_bench_multilingual_all(items) -> float:
    return _number(alm_bench.headline(_graded(items))["multilingual_all"])


# ViMUL-Bench: every row of the test split; videos are files (`towervision eval lmms-tasks` makes paths absolute).
def vimul_docs(dataset):
    columns = vimul.resolve_columns(dataset.column_names, what="towervision_vimul")
    return _annotate(dataset, None, partial(_vimul_item, columns=columns), "towervision_vimul")


def _vimul_item(row, columns):
    item = vimul.prepare_item(row, columns, row.get("towervision_label") or "test", None)
    if item is None or isinstance(item, str):
        return item
    text, video, record = item
    if not isinstance(video, str):
        return "embedded_video"  # the task reads video files; `towervision eval vimul` decodes embedded ones
    if not os.path.isfile(video):
        return "missing_video"
    return text, record | {"video": video}


def vimul_doc_to_visual(doc):
    return [_record(doc)["video"]]


def vimul_doc_to_target(doc) -> str:
    return _record(doc)["answer"]


def vimul_process_results(doc, results):
    graded = {"graded": vimul.grade(_record(doc), results[0], RunResult("vimul", "", {}, {}), _judge())}
    return {"mcq_accuracy": graded, "judge_score": graded, "score": graded}


def vimul_mcq_accuracy(items) -> float:
    return _number(vimul.summary(_graded(items))["mcq_accuracy"])


def vimul_judge_score(items) -> float:
    return _number(vimul.summary(_graded(items))["judge_score"])


def vimul_score(items) -> float:
    return _number(vimul.summary(_graded(items))["score"])


# `towervision eval lmms-tasks`: a copy of the tasks that reads local copies of the benchmarks.
BENCHMARKS = ("commute", "multi30k", "alm_bench", "vimul")


def write_local_tasks(out, data: dict[str, str], video_root: str | None = None, log=print) -> Path:
    """Copy our lmms-eval tasks to `out`, with each benchmark of `data` (`{"commute": PATH, ...}`) reading `PATH`: a
    folder in the Hub's layout, a `save_to_disk` DatasetDict, a single data file (split `test`; not CoMMuTE, whose
    splits are its pairs) or a Hub id. CoMMuTE and Multi30K keep the paper's pairs the copy has. ViMUL-Bench rows are
    copied to `out/data/towervision_vimul` with their video paths resolved against `video_root`.

    Files of `out` other than the tasks' are left alone. ValueError names a copy that cannot be read.
    """
    unknown = set(data) - set(BENCHMARKS)
    if unknown:
        raise ValueError(f"unknown benchmark(s) {sorted(unknown)}; known: {list(BENCHMARKS)}")
    out = Path(out)
    shutil.copytree(LMMS_TASKS_DIR, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    for benchmark, path in data.items():
        folder = out / f"towervision_{benchmark}"
        if benchmark == "vimul":
            path = str(_vimul_copy(path, video_root, out / "data" / "towervision_vimul"))
        settings = _data_settings(path, benchmark)
        if benchmark in ("commute", "multi30k"):
            _keep_present_pairs(folder / f"towervision_{benchmark}.yaml", benchmark, path)
        header = f"# Written by `towervision eval lmms-tasks`: towervision_{benchmark} reads {path}\n"
        (folder / "_default_template_yaml").write_text(header + yaml.safe_dump(settings, sort_keys=False))
        log(f"towervision_{benchmark}: {settings['dataset_path']}")
    log(f"tasks: {out}; run e.g. lmms-eval --include_path {out} --tasks towervision_commute ...")
    return out


def _data_settings(path: str, benchmark: str) -> dict:
    kind = loading.source_kind(path)
    if kind == "file":
        if benchmark == "commute":
            raise ValueError(
                f"CoMMuTE {path!r}: a single file has no per-language splits; use a folder in the Hub's "
                "layout (DIR/data/de-00000-of-00001.parquet, ...) or a save_to_disk DatasetDict"
            )
        extension = os.path.splitext(path)[1].lower()
        if extension not in loading.FILE_BUILDERS:
            raise ValueError(f"{path!r}: unsupported file type {extension!r} ({sorted(loading.FILE_BUILDERS)})")
        return {
            "dataset_path": loading.FILE_BUILDERS[extension],
            "dataset_kwargs": {"data_files": {"test": os.path.abspath(path)}},
        }
    if kind == "save_to_disk":
        if not (Path(path) / "dataset_dict.json").is_file():
            raise ValueError(f"{path!r} is a saved Dataset without splits; save a DatasetDict (split 'test')")
        return {"dataset_path": os.path.abspath(path), "dataset_kwargs": {"load_from_disk": True}}
    return {"dataset_path": os.path.abspath(path) if kind == "directory" else path}


def _keep_present_pairs(group_yaml: Path, benchmark: str, path: str) -> None:
    """Rewrite the group's task list to the paper's pairs present in the copy (CoMMuTE: splits; Multi30K: columns)."""
    splits, _ = loading.load_splits(path, single_split="test")
    if benchmark == "commute":
        present = set(splits)
    else:
        present = set(splits["test"].column_names) if "test" in splits else set()
    group = yaml.safe_load(group_yaml.read_text())
    tasks = [task for task in group["task"] if task.rsplit("_", 1)[1] in present]
    if not tasks:
        wanted = [task.rsplit("_", 1)[1] for task in group["task"]]
        raise ValueError(
            f"{benchmark} {path!r}: none of the paper's pairs en-{', en-'.join(wanted)} is in the data "
            f"(splits / columns: {sorted(present) or list(splits)})"
        )
    group_yaml.write_text(yaml.safe_dump(group | {"task": tasks}, sort_keys=False))


def _absolute_video(value, column: str, root: str) -> dict:
    return {column: value and os.path.abspath(os.path.join(root, value))}


def _vimul_copy(path: str, video_root: str | None, target: Path) -> Path:
    """The rows of every split of a local ViMUL-Bench copy as one split `test` (`towervision_label`: the split, which
    `towervision eval vimul` reads for the language / question type), video paths made absolute."""
    from datasets import DatasetDict, concatenate_datasets

    splits, _ = vimul.load_vimul(path, None, "test")
    parts = []
    for label, split in splits.items():
        video = vimul.resolve_columns(split.column_names, what=f"ViMUL-Bench {label!r}")["video"]
        split = undecoded(split, video).add_column("towervision_label", [label] * split.num_rows)
        if getattr(split.features[video], "dtype", None) == "string":  # a path, relative to video_root as in the CLI
            split = split.map(partial(_absolute_video, column=video, root=video_root or ""), input_columns=video)
        parts.append(split)
    DatasetDict({"test": concatenate_datasets(parts)}).save_to_disk(str(target))
    return target
