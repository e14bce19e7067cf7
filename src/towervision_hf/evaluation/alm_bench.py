"""ALM-Bench: culturally diverse VQA in 100 languages (multiple choice, true/false, short and long answers).

Prompts and grading are the benchmark authors' (mbzuai-oryx/ALM-Bench: the per-model scripts under
`Evaluation/scripts/` and `Evaluation/GPTScoring.py`):
- prompts (`alm_prompt`): multiple choice asks to "answer strictly from one of the options below" followed by the
  question and the bracketed options of `Translated_Answer` (`"<answer> (Options: a, b, c)"`, the label and the
  brackets may be localized / full-width); true/false asks for "one word in <language>"; long questions for a
  detailed answer, short ones for a brief one, both "in <language> language".
- grading with a judge (`--judge-endpoint`, the authors used GPT-4o): every answer is graded 0-10 with the authors'
  judge prompt for its question type (`alm_judge_prompt`: meaning match scored 10 or 0 for multiple choice and
  true/false; consistency, fluency and relevance for long answers; accuracy for short ones), scaled to 0-1.
- grading without a judge (ours, deterministic, no network): multiple choice is right when `metrics.match_option`
  maps the answer to the gold option (normalized exact match, or exactly one option named in the answer);
  true/false when the normalized answer equals, or starts with, the normalized gold answer; open-ended answers are
  counted under `open_ended_unjudged`. The notes of a run say which grading it used.

The headline is closed-form accuracy (multiple choice + true/false; the paper's Table 1 reports "final accuracy"
and §3 says its assessment "relies primarily on closed-form tasks"; open-ended grades are reported apart as
`judge_score`) in three columns: `en` (English), `multilingual` (unweighted mean of the per-language accuracies of
every non-English language evaluated) and `multilingual_all` (the same mean with English included: footnote 4's 23
languages, the paper's default `languages.PAPER_LANGUAGES`, include English). The paper does not say which of the
last two its "ALM-Bench (multi)" column is (docs/evaluation.md quotes both readings), so both are reported.

Data: `MBZUAI/ALM-Bench`, split `test`, columns `file_name` (the image), `ID`, `Language` (English name),
`Category`, `Question_Type`, `English_Question`, `English_Answer`, `Translated_Question`, `Translated_Answer`,
`Image_Url`.
"""

import re

from .judge import judge_open_ended
from .languages import language_code
from .media import decode_image
from .metrics import group_by, match_option, mean_or_none, normalize_answer
from .results import RunResult
from .scoring import generate, user_prompt
from .sources import iter_rows, require_columns, undecoded


COLUMNS = ("file_name", "Language", "Category", "Question_Type", "Translated_Question", "Translated_Answer")
_OPTIONS = re.compile(r"^(?P<answer>.*?)\s*[(（](?P<options>[^()（）]*)[)）]\s*$", re.DOTALL)
CLOSED_FORM = ("mcq", "tf")


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
    parsed = _split_options(answer)
    return None if parsed is None else parsed[:2]


def _split_options(answer: str) -> tuple[str, list[str], str] | None:
    """(gold answer, options, the bracket's text as written, e.g. "Options: Paris, Rome, Oslo") or None."""
    match = _OPTIONS.match((answer or "").strip())
    if match is None:
        return None
    bracket = match.group("options").strip()
    listed = re.split(r"[:：]", bracket, maxsplit=1)[-1]  # drop the (localized) "Options:" label
    options = [option.strip() for option in re.split(r"[,，、،]", listed) if option.strip()]
    gold = match.group("answer").strip()
    return (gold, options, bracket) if gold and len(options) >= 2 else None


def alm_prompt(kind: str, question: str, language: str, bracket: str = "") -> str:
    """The ALM-Bench authors' instruction for a question of `kind` (their `Evaluation/scripts/*.py`); `bracket` is
    the option list of a multiple-choice answer as written in the data."""
    if kind == "mcq":
        return (
            "For the given Multiple Choice Question, analyze the question and answer strictly from one of the options "
            f"below. Strictly answer the choice only. No additional text.\n{question}\n{bracket}"
        )
    if kind == "tf":
        return (
            f"{question}\nThe above question is a True/False question. Please provide the answer as one word in "
            f"{language}"
        )
    if kind == "long":
        return f"{question}\nAnswer the question in detail in {language} language."
    return f"{question}\nPlease provide brief, clear responses in {language} language."


def alm_judge_prompt(kind: str, question: str, reference: str, prediction: str) -> str:
    """The ALM-Bench authors' grading instruction for a question of `kind` (their `Evaluation/GPTScoring.py`); the
    reference of a multiple-choice question is the gold option alone."""
    score_only = "Strictly return only the numeric score, without any additional commentary."
    if kind in CLOSED_FORM:
        return (
            f"Evaluate the following answer based on Accuracy:\n\nQuestion: {question}\nGround Truth: {reference}\n"
            f"Model Prediction: {prediction}\n\nMatch the meaning of the ground truth with the model prediction and "
            f"if it matches give a 10. Otherwise 0.\n{score_only}"
        )
    criteria = "Consistency, Fluency, and Relevance" if kind == "long" else "accuracy and correctness"
    return (
        f"Evaluate the following answer based on {criteria} based on the Ground Truth answer.\n"
        "A high score example will be where the predicted response matches closely with the ground truth and a low "
        "score example will be where the predicted response lacks knowledge or is not related to the ground truth:"
        f"\n\nQuestion: {question}\nGround Truth: {reference}\nModel Prediction: {prediction}\n\n"
        f"Provide a single overall score out of 10 based on these three criteria.\n{score_only}"
    )


def is_correct(kind, prediction, gold, options) -> bool:
    """Our judge-free grading of a closed-form answer (see the module docstring)."""
    if kind == "mcq":
        normalized = [normalize_answer(option) for option in options]
        if normalize_answer(gold) in normalized:
            return match_option(prediction, options) == normalized.index(normalize_answer(gold))
        return normalize_answer(prediction) == normalize_answer(gold)
    prediction, gold = normalize_answer(prediction), normalize_answer(gold)
    return bool(gold) and (prediction == gold or prediction.startswith(gold + " "))


def prepare_item(row, languages) -> tuple | str | None:
    """`(prompt text, image, record)` for a row to evaluate, a skip reason, or None for a row outside the requested
    languages. One rule for `towervision eval alm-bench` and the lmms-eval task."""
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
    options, bracket = [], ""
    if kind == "mcq":
        parsed = _split_options(answer)
        if parsed is None:
            return "unparsable_mcq_answer"
        answer, options, bracket = parsed
    image = decode_image(row["file_name"])
    if image is None:
        return "missing_image"
    text = alm_prompt(kind, question, language or "the question's language", bracket)
    record = {"id": row.get("ID"), "language": language or "unknown", "category": row["Category"] or "unknown"}
    return text, image, record | {"question_type": kind, "question": question, "answer": answer, "options": options}


def grade(record: dict, prediction: str, result: RunResult, judge=None) -> dict:
    """`record` with the model's `prediction` and its `score` (0-1, None when not graded), graded as the module
    docstring says; skips (`open_ended_unjudged`, `judge_failed`) are counted in `result`."""
    record = record | {"prediction": prediction, "empty_output": not prediction}
    kind = record["question_type"]
    if judge is None and kind in CLOSED_FORM:
        record["score"] = float(is_correct(kind, prediction, record["answer"], record["options"]))
    else:
        prompt = alm_judge_prompt(kind, record["question"], record["answer"], prediction)
        record["score"] = judge_open_ended(judge, record, result, prompt=prompt)
    return record


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
            item = prepare_item(row, languages)
            if isinstance(item, str):
                result.skip(item)
            elif item is not None:
                prompts.append(user_prompt(item[0], [item[1]]))
                pending.append(item[2])
        outputs = generate(model, processor, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        records += [grade(record, prediction, result, judge) for record, prediction in zip(pending, outputs)]
    result.tables["headline"] = {"closed-form accuracy": headline(records)}
    for name, key in (("language", "language"), ("category", "category"), ("question type", "question_type")):
        result.tables[name] = {group: _summary(items) for group, items in group_by(records, key).items()}
    grading = (
        "every answer graded by the judge with the ALM-Bench authors' prompt for its type (grade / 10)"
        if judge is not None
        else "no judge: multiple choice by normalized match on the option, true/false by normalized match on the "
        "answer (ours, not the authors' GPT-4o grading); open-ended questions not scored (no --judge-endpoint)"
    )
    result.notes.append(
        "headline: closed-form accuracy (multiple choice + true/false); en = English, multilingual = unweighted mean "
        "over the other languages' accuracies, multilingual_all = the same with English (footnote 4's 23 languages); "
        f"judge_score: open-ended grades, reported apart; prompts: the ALM-Bench authors'; grading: {grading}"
    )
    return records


def headline(records: list[dict]) -> dict:
    """Closed-form accuracy: `en`, `multilingual` (mean of the non-English languages' accuracies) and
    `multilingual_all` (mean of every language's accuracy, English included); None where no language is scored."""
    closed = [r for r in records if r["question_type"] in CLOSED_FORM and r["score"] is not None]
    per_language = {
        language: mean_or_none(r["score"] for r in items) for language, items in group_by(closed, "language").items()
    }
    english = [language for language in per_language if language_code(language) == "en"]
    others = [value for language, value in per_language.items() if language not in english]
    return {
        "en": mean_or_none(per_language[language] for language in english),
        "multilingual": mean_or_none(others),
        "multilingual_all": mean_or_none(per_language.values()),
        "languages": len(per_language),
    }


def _summary(items: list[dict]) -> dict:
    def scores(kinds):
        return [r["score"] for r in items if r["question_type"] in kinds and r["score"] is not None]

    return {
        "accuracy": mean_or_none(scores(CLOSED_FORM)),
        "mcq_accuracy": mean_or_none(scores(("mcq",))),
        "tf_accuracy": mean_or_none(scores(("tf",))),
        "judge_score": mean_or_none(scores(("short", "long"))),
        "n": len(items),
        "n_closed": len(scores(CLOSED_FORM)),
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
