"""Benchmark languages: ISO 639-1 codes and the English names used in prompts and in benchmark `Language` columns.

The benchmarks reach well beyond TowerVision's own languages (CoMMuTE has Arabic, ViMUL-Bench Sinhala, Tamil,
Urdu, ...), so evaluation keeps its own table of ISO 639-1 codes; `--langs towervision` / `core` select the model's
languages from `towervision_hf.data.languages` (their ISO codes: pt-PT and pt-BR are both `pt`, zh-Hans and zh-Hant
both `zh`). Unknown codes or names map to None and are reported, never guessed.
"""

from ..data.languages import CORE_LANGUAGES, LANGUAGE_CODES, LANGUAGES


LANGUAGE_NAMES = {
    "ar": "Arabic",
    "bn": "Bengali",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fa": "Persian",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "hu": "Hungarian",
    "id": "Indonesian",
    "is": "Icelandic",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nb": "Norwegian Bokmål",
    "nl": "Dutch",
    "nn": "Norwegian Nynorsk",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "si": "Sinhala",
    "sv": "Swedish",
    "sw": "Swahili",
    "ta": "Tamil",
    "te": "Telugu",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "vi": "Vietnamese",
    "zh": "Chinese",
}
_EXTRA_NAMES = {"norwegian": "nb", "bangla": "bn", "sinhalese": "si", "mandarin": "zh", "farsi": "fa"}
_CODE_BY_NAME = {name.lower(): code for code, name in LANGUAGE_NAMES.items()} | _EXTRA_NAMES


def language_code(value) -> str | None:
    """The ISO 639-1 code for a code (`"de"`, `"zh-Hans"`, `"pt_BR"`) or an English name (`"German"`,
    `"Chinese (Simplified)"`, `"english"`); None when unknown."""
    if not isinstance(value, str) or not value.strip():
        return None
    key = value.strip().lower()
    base_code = key.replace("_", "-").split("-")[0]
    if base_code in LANGUAGE_NAMES:
        return base_code
    if key in _CODE_BY_NAME:
        return _CODE_BY_NAME[key]
    base_name = key.split("(")[0].strip()  # "chinese (simplified)" -> "chinese"
    return _CODE_BY_NAME.get(base_name)


def language_name(code: str) -> str | None:
    """English name for a code or name accepted by `language_code`; None when unknown."""
    code = language_code(code)
    return LANGUAGE_NAMES.get(code) if code else None


MODEL_LANGUAGE_SETS = {"towervision": LANGUAGE_CODES, "core": CORE_LANGUAGES}

# The paper's evaluation languages (`--langs paper`, the default). CoMMuTE: Table 2's targets. ALM-Bench: footnote 4's
# 23 languages; Chinese counts twice there (Simplified and Traditional, both `zh` rows of the data), and the paper's
# "Norwegian (Nynorsk)" is matched by either Norwegian code, since ALM-Bench labels it plain "Norwegian".
PAPER_LANGUAGES = {
    "commute": ("de", "fr", "ru", "zh"),
    "alm-bench": (
        "de", "es", "fr", "it", "ko", "nl", "ru", "en", "pt", "zh", "is", "cs", "uk", "hi", "ja", "pl", "sv", "hu",
        "ro", "da", "nn", "nb", "fi",
    ),
}  # fmt: skip
COMMUTE_LANGUAGES = PAPER_LANGUAGES["commute"]
ALM_BENCH_LANGUAGES = PAPER_LANGUAGES["alm-bench"]
# CC-OCR multilingual text reading (footnote 5), as the `split` values of CC-OCR's `multi_lan_ocr` rows.
CC_OCR_LANGUAGES = ("German", "French", "Italian", "Russian", "Spanish", "Korean", "Portuguese")


def parse_language_list(value: str) -> tuple[list[str] | None, list[str]]:
    """`--langs` parsing: `"all"` -> (None, []) (every language in the data); `"towervision"` / `"core"` -> the
    model's 20 / 10 core languages; else (known codes, unknown entries) from a comma-separated list."""
    key = value.strip().lower()
    if key == "all":
        return None, []
    if key in MODEL_LANGUAGE_SETS:
        return list(dict.fromkeys(LANGUAGES[code].card_code for code in MODEL_LANGUAGE_SETS[key])), []
    known, unknown = [], []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        code = language_code(entry)
        if code is None:
            unknown.append(entry)
        elif code not in known:
            known.append(code)
    return known, unknown
