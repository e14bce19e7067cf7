"""VisionBlocks data: the sample schema, source adapters, mixture recipes, Tower+ translation, COMETKiwi filtering,
the paper's prompts, synthetic VQA answers and the embedded sample. `towervision data ...` is the command line."""

from .. import lazy_exports


__all__ = [
    "CORE_LANGUAGES",
    "LANGUAGES",
    "LANGUAGE_CODES",
    "load_images",
    "load_sample",
    "load_video_frames",
    "normalize_language",
    "to_features",
    "to_trl_example",
    "validate_sample",
]

__getattr__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(("CORE_LANGUAGES", "LANGUAGES", "LANGUAGE_CODES", "normalize_language"), "languages"),
        "load_sample": "sample",
        **dict.fromkeys(
            ("load_images", "load_video_frames", "to_features", "to_trl_example", "validate_sample"), "schema"
        ),
    },
)
