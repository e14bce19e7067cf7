"""Prompt texts: the Tower+ translation prompt, our ViMUL-Bench question prompts and our judge prompt (ALM-Bench's
prompts are its authors', in `alm_bench`)."""

import string

from ..data.translate import TOWER_PROMPT


def translation_prompt(text: str, target: str, source: str = "English") -> str:
    """The Tower+ translation instruction (the data pipeline's `TOWER_PROMPT`, data/translate.py) with English
    language names, sent as the user turn after the image."""
    return TOWER_PROMPT.format(source=source, target=target, text=text)


def option_letters(count: int) -> str:
    return string.ascii_uppercase[:count]


def multiple_choice_prompt(question: str, options: list[str]) -> str:
    """A question followed by its options labelled A., B., ...; the model is asked for the letter."""
    listed = "\n".join(f"{letter}. {option}" for letter, option in zip(option_letters(len(options)), options))
    return f"{question}\n{listed}\nAnswer with the letter of the correct option only."


def open_ended_prompt(question: str, language: str, long: bool) -> str:
    if long:
        return f"{question}\nAnswer the question in detail in {language}."
    return f"{question}\nAnswer briefly and clearly in {language}."


def judge_prompt(question: str, reference: str, prediction: str) -> str:
    """The 0-10 grading instruction sent to the judge model for open-ended answers."""
    return (
        "You grade answers to questions about an image or a video against a reference answer.\n"
        "Rate how well the model answer matches the reference in meaning, correctness and relevance, "
        "on a scale from 0 (wrong or unrelated) to 10 (fully correct).\n\n"
        f"Question: {question}\nReference answer: {reference}\nModel answer: {prediction}\n\n"
        "Reply with the number only."
    )
