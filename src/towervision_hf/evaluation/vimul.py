"""ViMUL-Bench: culturally diverse video QA in 14 languages (multiple choice, short and long open-ended).

The released schema is UNCONFIRMED (data-and-eval.md §2.10): configs are believed to be `vimulmcq_<language>` and
`vimuloe_<language>`. Columns are therefore resolved from candidate names (override with `--columns
role=column,...`): video (a path relative to `--video-root`, bytes or a `{"bytes", "path"}` dict), question, answer,
and optionally options, language, category and question type. A row is multiple choice when it has options (or its
config / question type says so); the gold answer is an option letter or the option text. Videos are sampled to the
model's `num_frames` uniformly spaced frames.

Scoring: multiple choice is accuracy on the option (letter or text, see `metrics.match_option`); open-ended answers
are graded 0-10 by a judge model when `--judge-endpoint` is given, otherwise counted under `open_ended_unjudged`.
"""

import json
import os

from .languages import language_code
from .media import load_video_frames
from .metrics import match_option, normalize_answer
from .prompts import multiple_choice_prompt, open_ended_prompt, option_letters
from .results import RunResult
from .scoring import generate, user_prompt
from .sources import iter_rows, load_splits


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

    names = [name.strip() for name in configs.split(",")] if configs else get_dataset_config_names(data, revision=revision)
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
    """"mcq", "long" or "short" from the row's question type and config name (`declared`) and its options."""
    declared = declared.lower()
    if has_options or "mcq" in declared or "multiple" in declared:
        return "mcq"
    return "long" if "long" in declared else "short"


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
        config_name = label.split("/")[0]
        config_language = config_name.split("_", 1)[1] if "_" in config_name else None
        for rows in iter_rows(split, chunk_size=2 * batch_size, limit=limit):
            prompts, pending = [], []
            for row in rows:
                language = (row.get(columns["language"]) if columns["language"] else None) or config_language or ""
                code = language_code(language)
                if languages is not None and code not in languages:
                    if code is None:
                        result.skip("unknown_language")
                    continue
                question, answer = str(row[columns["question"]] or "").strip(), str(row[columns["answer"]] or "").strip()
                if not question or not answer:
                    result.skip("empty_question_or_answer")
                    continue
                options = _options(row[columns["options"]]) if columns["options"] else []
                declared = row.get(columns["question_type"]) if columns["question_type"] else None
                kind = _kind(f"{declared or ''} {config_name}", bool(options))
                gold = None
                if kind == "mcq":
                    gold = _gold_index(answer, options) if options else None
                    if gold is None:
                        result.skip("unparsable_mcq_answer")
                        continue
                frames = load_video_frames(row[columns["video"]], num_frames, root=video_root)
                if frames is None:
                    result.skip("missing_video")
                    continue
                name = language.strip().capitalize() if language else "the question's language"
                text = multiple_choice_prompt(question, options, letters=True) if kind == "mcq" else open_ended_prompt(question, name, long=kind == "long")
                prompts.append(user_prompt(text, videos=[frames]))
                category = (row.get(columns["category"]) if columns["category"] else None) or "unknown"
                pending.append(
                    {
                        "config": label,
                        "language": language.strip().lower() or "unknown",
                        "category": category,
                        "question_type": kind,
                        "question": question,
                        "answer": answer,
                        "options": options,
                        "gold_index": gold,
                    }
                )
            outputs = generate(model, processor, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
            for record, prediction in zip(pending, outputs):
                record["prediction"] = prediction
                record["empty_output"] = not prediction
                if record["question_type"] == "mcq":
                    record["score"] = float(match_option(prediction, record["options"], letters=True) == record["gold_index"])
                elif judge is not None:
                    record["score"] = judge.score(record["question"], record["answer"], prediction)
                    if record["score"] is None:
                        result.skip("judge_failed")
                else:
                    record["score"] = None
                    result.skip("open_ended_unjudged")
                records.append(record)
    for name, key in (("language", "language"), ("category", "category"), ("question type", "question_type")):
        result.tables[name] = _summaries(records, key)
    if judge is None:
        result.notes.append("open-ended questions were not scored: no --judge-endpoint given")
    result.notes.append("mcq_accuracy: option letter or option text must match the gold option; judge_score: grade / 10")
    return records


def _summaries(records, key) -> dict[str, dict]:
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record[key], []).append(record)
    table = {}
    for group, items in sorted(groups.items()):
        mcq = [r["score"] for r in items if r["question_type"] == "mcq"]
        judged = [r["score"] for r in items if r["question_type"] != "mcq" and r["score"] is not None]
        table[group] = {
            "mcq_accuracy": sum(mcq) / len(mcq) if mcq else None,
            "judge_score": sum(judged) / len(judged) if judged else None,
            "n": len(items),
            "n_mcq": len(mcq),
            "n_judged": len(judged),
            "empty_outputs": sum(r["empty_output"] for r in items),
        }
    return table
