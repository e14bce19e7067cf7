"""CoMMuTE: contrastive multimodal translation of lexically ambiguous English sentences.

Each item is an ambiguous English source, an image that disambiguates it, a correct and an incorrect translation.
The model scores both translations as its answer to the Tower+ translation prompt (image first); the item is right
when the correct translation scores strictly higher (ties are errors).

Which score is compared. `accuracy` compares the **mean per-token log-probability** of the two translations (the
end-of-turn marker included). This is exactly the CoMMuTE convention: its `evaluate.py` counts
`ppl_correct < ppl_incorrect`, and perplexity is `exp(-mean log-prob)`, so the two orderings coincide. Length
normalisation matters here because the two translations often differ in length (e.g. "banque" vs "rive").
`accuracy_sum` compares summed log-probabilities (the total probability of each translation) and is reported
alongside. Both are log-probabilities, higher is better -- never the lmms-eval loss convention.

Pairs: the paper's Table 2 reports en→de, fr, ru, zh (`languages.COMMUTE_LANGUAGES`, the default); the data's
other splits (ar, cs) are opt-in (`languages=None` / `--langs all` evaluates every split). `average` is the
unweighted mean over the evaluated pairs.

Data: `Unbabel/commute_multimodal_mt` (gated; splits named by target language `de`, `fr`, `ru`, `zh`, `ar`, `cs`;
columns `image`, `source`, `correct_translation`, `incorrect_translation`), or a local copy in that layout.
"""

from .languages import COMMUTE_LANGUAGES, language_code, language_name
from .media import decode_image
from .metrics import contrastive_accuracy
from .prompts import translation_prompt
from .results import RunResult
from .scoring import score_continuations, user_prompt
from .sources import iter_rows, require_columns, undecoded


COLUMNS = ("image", "source", "correct_translation", "incorrect_translation")


def check_pairs(splits, languages=None) -> None:
    """`ValueError` when no split of `splits` is a requested target language (`None`: any known language)."""
    present = {language_code(name) for name in splits} - {None}
    if not (present & set(languages) if languages is not None else present):
        wanted = "any known target language" if languages is None else f"en-{', en-'.join(sorted(languages))}"
        raise ValueError(
            f"CoMMuTE: no split of the data matches {wanted}; its splits are {list(splits)} (splits are named by "
            "target language, e.g. de, fr, ru)"
        )


def prepare_item(row, code: str) -> tuple[str, object] | str:
    """`(prompt text, image)` for a CoMMuTE row translated into language `code`, or the reason it is skipped
    (`missing_image`, `empty_text`). One rule for `towervision eval commute` and the lmms-eval task."""
    image = decode_image(row["image"])
    if image is None:
        return "missing_image"
    texts = [row["source"], row["correct_translation"], row["incorrect_translation"]]
    if not all(isinstance(text, str) and text.strip() for text in texts):
        return "empty_text"
    return translation_prompt(row["source"], language_name(code)), image


def evaluate_commute(
    model, processor, splits, result: RunResult, languages=COMMUTE_LANGUAGES, batch_size=8, limit=None
):
    """Fill `result` with per-pair accuracies; return the per-item predictions.

    `languages`: target codes to evaluate (default: the paper's de, fr, ru, zh; None = every split whose name is a
    known language).
    """
    predictions = []
    table = {}
    present = {language_code(name) for name in splits}
    check_pairs(splits, languages)
    for code in sorted(set(languages or ()) - present):
        result.notes.append(f"requested pair en-{code} is not in the data")
    for split_name, split in splits.items():
        code = language_code(split_name)
        if code is None:
            result.skip("unknown_language", split.num_rows)
            result.notes.append(f"split {split_name!r} is not a known target language; its rows were skipped")
            continue
        if languages is not None and code not in languages:
            result.notes.append(f"split {split_name!r} (en-{code}) not evaluated: not requested (opt-in, --langs)")
            continue
        require_columns(split, COLUMNS, f"CoMMuTE split {split_name!r}")
        correct_mean, incorrect_mean, correct_sum, incorrect_sum = [], [], [], []
        images = undecoded(split, "image")
        for rows in iter_rows(images, 4 * batch_size, limit, desc=f"commute en-{code}", result=result):
            prompts, candidates, kept = [], [], []
            for row in rows:
                item = prepare_item(row, code)
                if isinstance(item, str):
                    result.skip(item)
                    continue
                prompt = user_prompt(item[0], [item[1]])
                prompts += [prompt, prompt]
                candidates += [row["correct_translation"], row["incorrect_translation"]]
                kept.append(row)
            scores = score_continuations(model, processor, prompts, candidates, batch_size=batch_size)
            for row, correct, incorrect in zip(kept, scores[0::2], scores[1::2]):
                correct_mean.append(correct.mean_logprob)
                incorrect_mean.append(incorrect.mean_logprob)
                correct_sum.append(correct.sum_logprob)
                incorrect_sum.append(incorrect.sum_logprob)
                predictions.append(
                    {
                        "pair": f"en-{code}",
                        "image_name": row.get("image_name"),
                        "source": row["source"],
                        "correct": {"mean_logprob": correct.mean_logprob, "sum_logprob": correct.sum_logprob},
                        "incorrect": {"mean_logprob": incorrect.mean_logprob, "sum_logprob": incorrect.sum_logprob},
                    }
                )
        by_mean = contrastive_accuracy(correct_mean, incorrect_mean)
        by_sum = contrastive_accuracy(correct_sum, incorrect_sum)
        table[f"en-{code}"] = {
            "accuracy": by_mean["accuracy"],
            "accuracy_sum": by_sum["accuracy"],
            "ties": by_mean["ties"],
            "n": by_mean["n"],
        }
    scored = [row for row in table.values() if row["n"]]
    if scored:
        table["average"] = {
            "accuracy": sum(row["accuracy"] for row in scored) / len(scored),
            "accuracy_sum": sum(row["accuracy_sum"] for row in scored) / len(scored),
            "n": sum(row["n"] for row in scored),
        }
    result.tables["language pair"] = table
    result.notes.append(
        "accuracy: share of items whose correct translation has the higher mean per-token log-probability "
        "(= lower perplexity, the CoMMuTE convention); accuracy_sum: same with summed log-probabilities; "
        "ties count as errors; average: unweighted mean over pairs"
    )
    return predictions
