"""Benchmark metrics: contrastive accuracy, corpus BLEU/chrF (sacrebleu), optional COMET, answer matching."""

import re
import unicodedata
from collections.abc import Sequence

from .prompts import option_letters


def contrastive_accuracy(correct_scores: Sequence[float], incorrect_scores: Sequence[float]) -> dict:
    """Share of pairs whose correct candidate scores strictly higher (scores are log-probs, higher is better).

    Ties count as errors, like `ppl_correct < ppl_incorrect` in CoMMuTE's `evaluate.py`.
    """
    if len(correct_scores) != len(incorrect_scores):
        raise ValueError(f"{len(correct_scores)} correct scores but {len(incorrect_scores)} incorrect scores")
    wins = sum(c > i for c, i in zip(correct_scores, incorrect_scores))
    ties = sum(c == i for c, i in zip(correct_scores, incorrect_scores))
    total = len(correct_scores)
    return {"accuracy": wins / total if total else None, "ties": ties, "n": total}


def translation_metrics(hypotheses: list[str], references: list[str], target_language: str) -> dict:
    """Corpus BLEU and chrF with sacrebleu's defaults; BLEU tokenizes Chinese with its `zh` tokenizer and Japanese /
    Korean per character (the mecab tokenizers need extra packages)."""
    from sacrebleu.metrics import BLEU, CHRF

    tokenize = {"zh": "zh", "ja": "char", "ko": "char"}.get(target_language, "13a")
    bleu = BLEU(tokenize=tokenize).corpus_score(hypotheses, [references])
    chrf = CHRF().corpus_score(hypotheses, [references])
    return {"bleu": bleu.score, "chrf": chrf.score}


def comet_system_score(sources, hypotheses, references, model_name: str, batch_size: int = 16) -> float:
    """COMET / xCOMET system score with `unbabel-comet` (an optional extra); raises if it cannot run."""
    import torch
    from comet import download_model, load_from_checkpoint

    model = load_from_checkpoint(download_model(model_name))
    samples = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hypotheses, references)]
    # one device only: with gpus > 1 COMET launches DDP and non-zero ranks exit
    output = model.predict(
        samples, batch_size=batch_size, gpus=1 if torch.cuda.is_available() else 0, progress_bar=True
    )
    return float(output.system_score)


def normalize_answer(text: str) -> str:
    """Case-folded, NFKC-normalized text without punctuation and with single spaces (for exact-match scoring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(char).startswith("P") else char for char in text)
    return " ".join(text.split())


def match_option(prediction: str, options: Sequence[str], letters: bool = False) -> int | None:
    """Index of the option a free-text `prediction` picks, or None when it picks none or several.

    Accepted, in order: the prediction equals an option (normalized); with `letters`, a leading option letter
    ("B", "B.", "(B) ..."); exactly one option occurs in the prediction as a whole phrase.
    """
    normalized = normalize_answer(prediction)
    normalized_options = [normalize_answer(option) for option in options]
    if not normalized:
        return None
    if normalized in normalized_options:
        return normalized_options.index(normalized)
    if letters:
        match = re.match(r"^\W*([A-Za-z])(?:\W|$)", prediction.strip())
        if match and match.group(1).upper() in option_letters(len(options)):
            return option_letters(len(options)).index(match.group(1).upper())
    found = [i for i, option in enumerate(normalized_options) if option and f" {option} " in f" {normalized} "]
    return found[0] if len(found) == 1 else None


def group_by(records: list[dict], key: str) -> dict[str, list[dict]]:
    """Records grouped by `str(record[key])`, groups in sorted order."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(str(record[key]), []).append(record)
    return dict(sorted(groups.items()))


def mean_or_none(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None
