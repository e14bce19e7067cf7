"""ALM-Bench: culturally diverse VQA in 100 languages (multiple choice, true/false, short and long answers).

Scoring:
- multiple choice: `Translated_Answer` reads `"<answer> (Options: a, b, c)"` (the word "Options" and the brackets
  may be localized / full-width); the model sees the question and the options and must reproduce one option. An
  answer is right when `metrics.match_option` maps it to the gold option (normalized exact match, or exactly one
  option named in the answer). This is the exact-match MCQ scoring the TowerVision authors used.
- true/false: right when the normalized answer equals, or starts with, the normalized gold answer.
- short / long open-ended: graded 0-10 by a judge model when `--judge-endpoint` is given (scaled to 0-1),
  otherwise counted under `open_ended_unjudged`. Judge grades are reported on their own (`judge_score`) and never
  enter the accuracies.
The headline is the paper's metric, closed-form accuracy (multiple choice + true/false), in the two columns of its
Table 1: `en` (English) and `multilingual` (unweighted mean of the per-language accuracies of every other evaluated
language; by default footnote 4's 23 languages, `languages.PAPER_LANGUAGES`). Per language, category and question
type the tables give `accuracy` (closed-form), `mcq_accuracy`, `tf_accuracy` and, separately, `judge_score`.

Data: `MBZUAI/ALM-Bench`, split `test`, columns `file_name` (the image), `ID`, `Language` (English name),
`Category`, `Question_Type`, `English_Question`, `English_Answer`, `Translated_Question`, `Translated_Answer`,
`Image_Url`.
"""

import re

from .judge import judge_open_ended
from .languages import language_code
from .media import decode_image
from .metrics import group_by, match_option, mean_or_none, normalize_answer
from .prompts import multiple_choice_prompt, open_ended_prompt, true_false_prompt
from .results import RunResult
from .scoring import generate, user_prompt
from .sources import iter_rows, require_columns, undecoded

COLUMNS = ("file_name", "Language", "Category", "Question_Type", "Translated_Question", "Translated_Answer")
_OPTIONS = re.compile(r"^(?P<answer>.*?)\s*[(（](?P<options>[^()（）]*)[)）]\s*$", re.DOTALL)


def question_kind(question_type) -> str | None:
    """ "mcq", "tf", "short" or "long" for ALM-Bench's `Question_Type` values; None if unrecognised."""
    text = (question_type or "").lower()
    if "multiple" in text or "mcq" in text:
        return "mcq"
    if "true" in text or "t/f" in text:
        return "tf"
    if "long" in text:
        return "long"
    if "short" in text:
        return "short"
    return None


def parse_multiple_choice(answer: str) -> tuple[str, list[str]] | None:
    """`"Paris (Options: Paris, Rome, Oslo)"` -> ("Paris", ["Paris", "Rome", "Oslo"]); None if not of that form."""
    match = _OPTIONS.match((answer or "").strip())
    if match is None:
        return None
    listed = match.group("options")
    listed = re.split(r"[:：]", listed, maxsplit=1)[-1]  # drop the (localized) "Options:" label
    options = [option.strip() for option in re.split(r"[,，、،]", listed) if option.strip()]
    gold = match.group("answer").strip()
    return (gold, options) if gold and len(options) >= 2 else None


def _prompt_text(kind, question, language, options):
    if kind == "mcq":
        return multiple_choice_prompt(question, options)
    if kind == "tf":
        return true_false_prompt(question, language)
    return open_ended_prompt(question, language, long=kind == "long")


def _is_correct(kind, prediction, gold, options) -> bool:
    if kind == "mcq":
        normalized = [normalize_answer(option) for option in options]
        if normalize_answer(gold) in normalized:
            return match_option(prediction, options) == normalized.index(normalize_answer(gold))
        return normalize_answer(prediction) == normalize_answer(gold)
    prediction, gold = normalize_answer(prediction), normalize_answer(gold)
    return bool(gold) and (prediction == gold or prediction.startswith(gold + " "))


def _prepare(row, languages) -> tuple | str | None:
    """`(prompt, record)` for a row to evaluate, a skip reason, or None for a row outside the requested languages."""
    language = (row["Language"] or "").strip()
    code = language_code(language)
    if languages is not None and code not in languages:
        return "unknown_language" if code is None else None
    kind = question_kind(row["Question_Type"])
    question, answer = (row["Translated_Question"] or "").strip(), (row["Translated_Answer"] or "").strip()
    if kind is None:
        return "unknown_question_type"
    if not question or not answer:
        return "empty_question_or_answer"
    options = []
    if kind == "mcq":
        parsed = parse_multiple_choice(answer)
        if parsed is None:
            return "unparsable_mcq_answer"
        answer, options = parsed
    image = decode_image(row["file_name"])
    if image is None:
        return "missing_image"
    prompt = user_prompt(_prompt_text(kind, question, language or "the question's language", options), [image])
    record = {"id": row.get("ID"), "language": language or "unknown", "category": row["Category"] or "unknown"}
    return prompt, record | {"question_type": kind, "question": question, "answer": answer, "options": options}


def evaluate_alm_bench(
    model,
    processor,
    split,
    result: RunResult,
    languages=None,
    judge=None,
    batch_size=8,
    max_new_tokens=512,
    limit=None,
):
    """Fill `result` with per-language / per-category / per-type tables; return the per-item predictions.

    `languages`: ISO codes to keep (None = every language in the data; the CLI defaults to the paper's 23);
    `judge`: an `OpenAICompatibleJudge` or None.
    `limit` caps the number of rows read.
    """
    require_columns(split, COLUMNS, "ALM-Bench")
    records = []
    for rows in iter_rows(undecoded(split, "file_name"), 4 * batch_size, limit, desc="alm-bench", result=result):
        prompts, pending = [], []
        for row in rows:
            item = _prepare(row, languages)
            if isinstance(item, str):
                result.skip(item)
            elif item is not None:
                prompts.append(item[0])
                pending.append(item[1])
        outputs = generate(model, processor, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        for record, prediction in zip(pending, outputs):
            record |= {"prediction": prediction, "empty_output": not prediction}
            if record["question_type"] in ("mcq", "tf"):
                correct = _is_correct(record["question_type"], prediction, record["answer"], record["options"])
                record["score"] = float(correct)
            else:
                record["score"] = judge_open_ended(judge, record, result)
            records.append(record)
    result.tables["headline"] = {"closed-form accuracy": headline(records)}
    for name, key in (("language", "language"), ("category", "category"), ("question type", "question_type")):
        result.tables[name] = {group: _summary(items) for group, items in group_by(records, key).items()}
    if judge is None:
        result.notes.append("open-ended questions were not scored: no --judge-endpoint given")
    result.notes.append(
        "headline: closed-form accuracy (multiple choice + true/false), en = English, multilingual = unweighted mean "
        "over the other languages' accuracies (the paper's Table 1 columns); judge_score: open-ended questions graded "
        "by the judge (grade / 10), reported apart and never part of an accuracy; mcq: normalized exact match on the "
        "option"
    )
    return records


def headline(records: list[dict]) -> dict:
    """`en` and `multilingual` closed-form accuracy (multilingual: mean of the non-English languages' accuracies)."""
    closed = [r for r in records if r["question_type"] in ("mcq", "tf")]
    per_language = {
        language: mean_or_none(r["score"] for r in items) for language, items in group_by(closed, "language").items()
    }
    english = [language for language in per_language if language_code(language) == "en"]
    others = [value for language, value in per_language.items() if language not in english]
    return {
        "en": mean_or_none(per_language[language] for language in english),
        "multilingual": mean_or_none(others),
        "languages": len(others),
    }


def _summary(items: list[dict]) -> dict:
    def scores(kinds):
        return [r["score"] for r in items if r["question_type"] in kinds and r["score"] is not None]

    return {
        "accuracy": mean_or_none(scores(("mcq", "tf"))),
        "mcq_accuracy": mean_or_none(scores(("mcq",))),
        "tf_accuracy": mean_or_none(scores(("tf",))),
        "judge_score": mean_or_none(scores(("short", "long"))),
        "n": len(items),
        "n_closed": len(scores(("mcq", "tf"))),
        "n_judged": len(scores(("short", "long"))),
        "empty_outputs": sum(r["empty_output"] for r in items),
    }


def plot_languages(table: dict[str, dict], path: str, metric: str = "accuracy", title: str = "ALM-Bench") -> None:
    """Per-language bar chart of `metric` (as %), best first -- the layout of the paper's per-language figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(
        ((lang, row[metric]) for lang, row in table.items() if row.get(metric) is not None), key=lambda x: -x[1]
    )
    figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * len(rows) + 2), 4.0))
    bars = axis.bar([lang for lang, _ in rows], [100 * value for _, value in rows], color="#2b6cb0")
    axis.bar_label(bars, fmt="%.1f", fontsize=7)
    axis.set_ylabel(f"{metric} (%)")
    axis.set_ylim(0, 100)
    axis.set_title(title)
    axis.tick_params(axis="x", labelrotation=60)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
