"""The languages and dialects of TowerVision: one canonical code per language, reused by data, eval and cards.

`LANGUAGE_CODES` are the paper's 20 languages and dialects (TowerVision, footnote 2), in its order. Spanish is only
Spanish (Latin America): there is no plain `es` code, and Spanish source data (`es`, `es-ES`, `spa`) maps to
`es-LATAM`. `CORE_LANGUAGES` are the 10 "core" languages of the 10-vs-20 ablation (Table 11 caption); the caption
says "Portuguese" and "Spanish", which are pt-PT (the Portuguese of the paper's A.5.1 prompts) and es-LATAM (the only
Spanish of the 20) here.
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
        Language("es-LATAM", "Spanish (Latin America)", "Español (Latinoamérica)", "es"),
        Language("fr", "French", "Français", "fr"),
        Language("pt-PT", "Portuguese (Portugal)", "Português (Portugal)", "pt"),
        Language("pt-BR", "Portuguese (Brazil)", "Português (Brasil)", "pt"),
        Language("uk", "Ukrainian", "Українська", "uk"),
        Language("hi", "Hindi", "हिन्दी", "hi"),
        Language("zh-Hans", "Chinese (Simplified)", "简体中文", "zh"),
        Language("zh-Hant", "Chinese (Traditional)", "繁體中文", "zh"),
        Language("ru", "Russian", "Русский", "ru"),
        Language("cs", "Czech", "Čeština", "cs"),
        Language("ko", "Korean", "한국어", "ko"),
        Language("ja", "Japanese", "日本語", "ja"),
        Language("it", "Italian", "Italiano", "it"),
        Language("pl", "Polish", "Polski", "pl"),
        Language("ro", "Romanian", "Română", "ro"),
        Language("nn", "Norwegian Nynorsk", "Norsk nynorsk", "nn"),
        Language("nb", "Norwegian Bokmål", "Norsk bokmål", "nb"),
    )
}
LANGUAGE_CODES: tuple[str, ...] = tuple(LANGUAGES)
CORE_LANGUAGES: tuple[str, ...] = ("en", "de", "nl", "pt-PT", "ru", "zh-Hans", "zh-Hant", "es-LATAM", "fr", "it")
LANGUAGE_SETS: dict[str, tuple[str, ...]] = {"all": LANGUAGE_CODES, "core": CORE_LANGUAGES}

# Codes seen in the sources (case-insensitive, "_" read as "-"). Bare "pt", "zh" and "no" are ambiguous: they map to
# pt-PT, zh-Hans and nb; a recipe overrides that per source with `language_map`. Every Spanish is es-LATAM.
_ALIASES = {
    "es": "es-LATAM",
    "spa": "es-LATAM",
    "es-419": "es-LATAM",
    "es-latam": "es-LATAM",
    "es-mx": "es-LATAM",
    "es-ar": "es-LATAM",
    "es-co": "es-LATAM",
    "pt": "pt-PT",
    "por": "pt-PT",
    "pt-pt": "pt-PT",
    "pt-br": "pt-BR",
    "zh": "zh-Hans",
    "zho": "zh-Hans",
    "zh-cn": "zh-Hans",
    "zh-sg": "zh-Hans",
    "zh-hans": "zh-Hans",
    "zh-tw": "zh-Hant",
    "zh-hk": "zh-Hant",
    "zh-mo": "zh-Hant",
    "zh-hant": "zh-Hant",
    "no": "nb",
    "nob": "nb",
    "nno": "nn",
    "eng": "en",
    "deu": "de",
    "ger": "de",
    "nld": "nl",
    "dut": "nl",
    "fra": "fr",
    "fre": "fr",
    "ita": "it",
    "ukr": "uk",
    "rus": "ru",
    "pol": "pl",
    "ces": "cs",
    "cze": "cs",
    "ron": "ro",
    "rum": "ro",
    "jpn": "ja",
    "kor": "ko",
    "hin": "hi",
}
_BY_NAME = {language.name.lower(): code for code, language in LANGUAGES.items()} | {
    "portuguese": "pt-PT",
    "chinese": "zh-Hans",
    "norwegian": "nb",
    "brazilian portuguese": "pt-BR",
    "spanish": "es-LATAM",
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
