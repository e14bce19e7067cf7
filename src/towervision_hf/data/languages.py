"""The languages and dialects of TowerVision: one canonical code per language, reused by data, eval and cards.

The released model cards tag 18 ISO codes (en de nl es fr pt uk hi zh ru cs ko ja it pl ro nb nn) and the paper
claims "20 languages and dialects". Tower+ distinguishes the dialects pt-PT / pt-BR, zh-Hans / zh-Hant and
es / es-LATAM, so all three splits are kept here: 21 codes. The paper's exact list could not be checked offline;
a recipe that needs exactly the paper's set restricts `languages:` explicitly.
`CORE_LANGUAGES` (the 10-language ablation) is inferred to be the original Tower language set.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str  # canonical code used in every `language` column
    name: str  # English name, exactly as the Tower translation prompt spells the target
    native: str  # endonym
    card_code: str  # ISO 639-1 code for model-card metadata


LANGUAGES: dict[str, Language] = {
    language.code: language
    for language in (
        Language("en", "English", "English", "en"),
        Language("de", "German", "Deutsch", "de"),
        Language("nl", "Dutch", "Nederlands", "nl"),
        Language("es", "Spanish", "Español", "es"),
        Language("es-LATAM", "Spanish (Latin America)", "Español (Latinoamérica)", "es"),
        Language("fr", "French", "Français", "fr"),
        Language("it", "Italian", "Italiano", "it"),
        Language("pt-PT", "Portuguese (Portugal)", "Português (Portugal)", "pt"),
        Language("pt-BR", "Portuguese (Brazil)", "Português (Brasil)", "pt"),
        Language("uk", "Ukrainian", "Українська", "uk"),
        Language("ru", "Russian", "Русский", "ru"),
        Language("pl", "Polish", "Polski", "pl"),
        Language("cs", "Czech", "Čeština", "cs"),
        Language("ro", "Romanian", "Română", "ro"),
        Language("nb", "Norwegian Bokmål", "Norsk bokmål", "nb"),
        Language("nn", "Norwegian Nynorsk", "Norsk nynorsk", "nn"),
        Language("zh-Hans", "Chinese (Simplified)", "简体中文", "zh"),
        Language("zh-Hant", "Chinese (Traditional)", "繁體中文", "zh"),
        Language("ja", "Japanese", "日本語", "ja"),
        Language("ko", "Korean", "한국어", "ko"),
        Language("hi", "Hindi", "हिन्दी", "hi"),
    )
}
LANGUAGE_CODES: tuple[str, ...] = tuple(LANGUAGES)
CORE_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "nl", "it", "es", "pt-PT", "ko", "ru", "zh-Hans")
LANGUAGE_SETS: dict[str, tuple[str, ...]] = {"all": LANGUAGE_CODES, "core": CORE_LANGUAGES}

# Codes seen in the sources (case-insensitive, "_" read as "-"). Bare "pt", "zh" and "no" are ambiguous: they map to
# pt-PT, zh-Hans and nb; a recipe overrides that per source with `language_map`.
_ALIASES = {
    "es-419": "es-LATAM", "es-latam": "es-LATAM", "es-mx": "es-LATAM", "es-ar": "es-LATAM", "es-co": "es-LATAM",
    "pt": "pt-PT", "por": "pt-PT", "pt-pt": "pt-PT", "pt-br": "pt-BR",
    "zh": "zh-Hans", "zho": "zh-Hans", "zh-cn": "zh-Hans", "zh-sg": "zh-Hans", "zh-hans": "zh-Hans",
    "zh-tw": "zh-Hant", "zh-hk": "zh-Hant", "zh-mo": "zh-Hant", "zh-hant": "zh-Hant",
    "no": "nb", "nob": "nb", "nno": "nn",
    "eng": "en", "deu": "de", "ger": "de", "nld": "nl", "dut": "nl", "spa": "es", "fra": "fr", "fre": "fr",
    "ita": "it", "ukr": "uk", "rus": "ru", "pol": "pl", "ces": "cs", "cze": "cs", "ron": "ro", "rum": "ro",
    "jpn": "ja", "kor": "ko", "hin": "hi",
}
_BY_NAME = {language.name.lower(): code for code, language in LANGUAGES.items()} | {
    "portuguese": "pt-PT", "chinese": "zh-Hans", "norwegian": "nb", "brazilian portuguese": "pt-BR",
}


def normalize_language(value: str) -> str:
    """Return the canonical code for `value` (a code, a regional variant or an English name); ValueError otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"language {value!r} is not a non-empty string")
    key = value.strip().replace("_", "-").lower()
    for code in LANGUAGES:
        if code.lower() == key:
            return code
    if key in _ALIASES:
        return _ALIASES[key]
    if key in _BY_NAME:
        return _BY_NAME[key]
    for prefix in ("zh-hans", "zh-hant", "pt-br", "pt-pt"):
        if key.startswith(prefix + "-"):
            return _ALIASES[prefix]
    base, _, region = key.partition("-")
    if region and base in _ALIASES:
        return _ALIASES[base]
    if region and base in LANGUAGES:
        return base
    raise ValueError(f"language {value!r} is not a TowerVision language: {', '.join(LANGUAGE_CODES)}")


def resolve_language_set(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """`"all"`, `"core"` or a list / comma-separated string of codes -> canonical codes, in the order given."""
    if isinstance(spec, str) and spec in LANGUAGE_SETS:
        return LANGUAGE_SETS[spec]
    codes = spec.split(",") if isinstance(spec, str) else list(spec)
    resolved = [normalize_language(code) for code in codes if str(code).strip()]
    if not resolved:
        raise ValueError(f"language set {spec!r} is empty")
    return tuple(dict.fromkeys(resolved))


def language_name(code: str) -> str:
    """English name of a canonical code, as used in the Tower translation prompt."""
    return LANGUAGES[normalize_language(code)].name
