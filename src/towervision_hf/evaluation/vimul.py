"""ViMUL-Bench: culturally diverse video QA in 14 languages (multiple choice, short and long open-ended).

The released schema is UNCONFIRMED (see docs/evaluation.md): configs are believed to be `vimulmcq_<language>` and
`vimuloe_<language>`. Columns are therefore resolved from candidate names (override with `--columns
role=column,...`): video (a path relative to `--video-root`, bytes or a `{"bytes", "path"}` dict), question, answer,
and optionally options, language, category and question type. A row is multiple choice when it has options (or its
config / question type says so); the gold answer is an option letter or the option text. Videos are sampled to the
model's `num_frames` uniformly spaced frames.

Scoring: multiple choice is accuracy on the option (letter or text, see `metrics.match_option`); open-ended answers
are graded 0-10 by a judge model when `--judge-endpoint` is given, otherwise counted under `open_ended_unjudged`.
The headline `score` is the paper's Table 3 number: per language, the mean of the MCQ accuracy and the open-ended
judge score (empty until both are known); `all languages` gives the same over every row (what the lmms-eval task
`towervision_vimul` reports). ViMUL-Bench publishes no judge prompt of its own (its code repository holds only a
project page), so open answers are graded with ours (`prompts.judge_prompt`); the paper used "the same evaluation
prompt as Shafique et al. (2025)", which we could not read.
"""

import json
import os

from .judge import judge_open_ended
from .languages import language_code
from .media import load_video_frames
from .metrics import group_by, match_option, mean_or_none, normalize_answer
from .prompts import multiple_choice_prompt, open_ended_prompt, option_letters
from .results import RunResult
from .scoring import generate, user_prompt
from .sources import iter_rows, load_splits, undecoded


COLUMN_CANDIDATES = {
    "video": ("video", "video_path", "video_name", "video_file", "video_id"),
    "question": ("question", "Question", "Translated_Question"),
    "answer": ("answer", "Answer", "Translated_Answer", "ground_truth"),
    "options": ("options", "choices", "candidates", "Options"),
    "language": ("language", "Language", "lang"),
    "category": ("category", "Category"),
    "question_type": ("question_type", "Question_Type", "type"),
}
REQUIRED = ("video", "question", "answer")


def load_vimul(data: str, configs: str | None, split: str, revision: str | None = None) -> tuple[dict, dict]:
    """`{label: Dataset}` and provenance. Hub: the `split` of each config (default: every config), labelled
    `<config>/<split>`; local directory or file: each of its splits, labelled by split name."""
    if os.path.exists(data):
        splits, provenance = load_splits(data)
        return dict(splits), provenance
    from datasets import get_dataset_config_names

    names = (
        [name.strip() for name in configs.split(",")] if configs else get_dataset_config_names(data, revision=revision)
    )
    selected = {}
    for name in names:
        config_splits, _ = load_splits(data, config=name, revision=revision)
        if split not in config_splits:
            raise ValueError(f"config {name!r} of {data!r} has no split {split!r} (it has {list(config_splits)})")
        selected[f"{name}/{split}"] = config_splits[split]
    provenance = {"source": data, "kind": "hub", "config": names, "revision": revision or "main"}
    provenance["rows"] = {label: dataset.num_rows for label, dataset in selected.items()}
    return selected, provenance


def resolve_columns(column_names, overrides: dict[str, str] | None = None, what: str = "ViMUL-Bench") -> dict:
    """Map each role (video, question, ...) to a column of the data; ValueError when a required role has none."""
    overrides = overrides or {}
    unknown_roles = set(overrides) - set(COLUMN_CANDIDATES)
    if unknown_roles:
        raise ValueError(f"--columns: unknown role(s) {sorted(unknown_roles)}; roles are {list(COLUMN_CANDIDATES)}")
    resolved = {}
    for role, candidates in COLUMN_CANDIDATES.items():
        if role in overrides:
            if overrides[role] not in column_names:
                raise ValueError(f"--columns {role}={overrides[role]}: no such column in {what} ({column_names})")
            resolved[role] = overrides[role]
            continue
        resolved[role] = next((name for name in candidates if name in column_names), None)
    missing = [role for role in REQUIRED if resolved[role] is None]
    if missing:
        raise ValueError(
            f"{what}: no column for {missing} among {column_names}; pass --columns "
            + ",".join(f"{role}=<column>" for role in missing)
        )
    return resolved


def _options(value) -> list[str]:
    """Options stored as a list, a dict (letter -> text), a JSON string or one option per line."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = value.splitlines()
    if isinstance(value, dict):
        value = list(value.values())
    return [str(option).strip() for option in value or () if str(option).strip()]


def _gold_index(answer: str, options: list[str]) -> int | None:
    letters = option_letters(len(options))
    stripped = answer.strip().rstrip(".):").lstrip("(")
    if len(stripped) == 1 and stripped.upper() in letters:
        return letters.index(stripped.upper())
    normalized = [normalize_answer(option) for option in options]
    return normalized.index(normalize_answer(answer)) if normalize_answer(answer) in normalized else None


def _kind(declared: str, has_options: bool) -> str:
    """ "mcq", "long" or "short" from the row's question type and config name (`declared`) and its options."""
    declared = declared.lower()
    if has_options or "mcq" in declared or "multiple" in declared:
        return "mcq"
    return "long" if "long" in declared else "short"


def prepare_item(row, columns, label, languages) -> tuple | str | None:
    """`(prompt text, video value, record)` for a row to evaluate (the video not decoded yet), a skip reason, or None
    for a row outside the requested languages. One rule for `towervision eval vimul` and the lmms-eval task."""

    def value(role):
        return row.get(columns[role]) if columns[role] else None

    config_name = label.split("/")[0]
    config_language = config_name.split("_", 1)[1] if "_" in config_name else None
    language = str(value("language") or config_language or "").strip()
    code = language_code(language)
    if languages is not None and code not in languages:
        return "unknown_language" if code is None else None
    question, answer = str(value("question") or "").strip(), str(value("answer") or "").strip()
    if not question or not answer:
        return "empty_question_or_answer"
    options = _options(value("options"))
    kind = _kind(f"{value('question_type') or ''} {config_name}", bool(options))
    gold = _gold_index(answer, options) if kind == "mcq" and options else None
    if kind == "mcq" and gold is None:
        return "unparsable_mcq_answer"
    if kind == "mcq":
        text = multiple_choice_prompt(question, options)
    else:
        text = open_ended_prompt(question, language.capitalize() or "the question's language", long=kind == "long")
    record = {
        "config": label,
        "language": language.lower() or "unknown",
        "category": value("category") or "unknown",
        "question_type": kind,
        "question": question,
        "answer": answer,
        "options": options,
        "gold_index": gold,
    }
    return text, value("video"), record


def grade(record: dict, prediction: str, result: RunResult, judge=None) -> dict:
    """`record` with the model's `prediction` and its `score`: multiple choice 1 / 0 on the picked option, open-ended
    the judge's grade (None without a judge, counted in `result`)."""
    record = record | {"prediction": prediction, "empty_output": not prediction}
    if record["question_type"] == "mcq":
        picked = match_option(prediction, record["options"], letters=True)
        record["score"] = float(picked == record["gold_index"])
    else:
        record["score"] = judge_open_ended(judge, record, result)
    return record


def evaluate_vimul(
    model,
    processor,
    splits: dict,
    result: RunResult,
    languages=None,
    judge=None,
    video_root=None,
    num_frames=32,
    column_overrides=None,
    batch_size=4,
    max_new_tokens=512,
    limit=None,
):
    """Fill `result` with per-language / per-category / per-type tables; return the per-item predictions.

    `splits` maps a config / split label (e.g. "vimulmcq_english/test") to a Dataset; the config part of the label is
    used for the language and question type when the rows do not carry them.
    """
    records = []
    for label, split in splits.items():
        columns = resolve_columns(split.column_names, column_overrides, f"ViMUL-Bench {label!r}")
        video_split = undecoded(split, columns["video"])
        for rows in iter_rows(video_split, 2 * batch_size, limit, desc=f"vimul {label}", result=result):
            prompts, pending = [], []
            for row in rows:
                item = prepare_item(row, columns, label, languages)
                if item is None:
                    continue
                frames = None if isinstance(item, str) else load_video_frames(item[1], num_frames, root=video_root)
                if frames is None:
                    result.skip(item if isinstance(item, str) else "missing_video")
                    continue
                prompts.append(user_prompt(item[0], videos=[frames]))
                pending.append(item[2])
            outputs = generate(model, processor, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
            records += [grade(record, prediction, result, judge) for record, prediction in zip(pending, outputs)]
    for name, key in (("language", "language"), ("category", "category"), ("question type", "question_type")):
        result.tables[name] = {group: summary(items) for group, items in group_by(records, key).items()}
    if judge is None:
        result.notes.append("open-ended questions were not scored: no --judge-endpoint given")
    result.tables["headline"] = {
        "score": {name: row["score"] for name, row in result.tables["language"].items()},
        "all languages": summary(records),
    }
    result.notes.append(
        "score: mean of mcq_accuracy and judge_score (the paper's Table 3: MCQ and open-ended averaged per language), "
        "empty unless both are known; mcq_accuracy: option letter or option text must match the gold option; "
        "judge_score: grade / 10 with our judge prompt (ViMUL-Bench publishes none)"
    )
    return records


def summary(items: list[dict]) -> dict:
    """`score` (the mean of `mcq_accuracy` and `judge_score`, None unless both are known), the two parts and counts."""
    mcq = [r["score"] for r in items if r["question_type"] == "mcq"]
    judged = [r["score"] for r in items if r["question_type"] != "mcq" and r["score"] is not None]
    parts = [mean_or_none(mcq), mean_or_none(judged)]
    return {
        "score": None if None in parts else sum(parts) / 2,
        "mcq_accuracy": mean_or_none(mcq),
        "judge_score": mean_or_none(judged),
        "n": len(items),
        "n_mcq": len(mcq),
        "n_judged": len(judged),
        "empty_outputs": sum(r["empty_output"] for r in items),
    }
