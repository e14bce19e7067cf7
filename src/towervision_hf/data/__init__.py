"""VisionBlocks data: the sample schema, source adapters, mixture recipes, Tower+ translation, COMETKiwi filtering,
the paper's prompts, synthetic VQA answers and the embedded sample. `towervision data ...` is the command line."""

from .languages import CORE_LANGUAGES, LANGUAGE_CODES, LANGUAGES, normalize_language
from .sample import load_sample
from .schema import load_images, load_video_frames, to_features, to_trl_example, validate_sample

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
