"""Evaluation of TowerVision / TowerVideo: the paper's benchmarks (CoMMuTE, Multi30K, ALM-Bench, ViMUL-Bench),
the shared scoring API, an lmms-eval model plugin and lmms-eval tasks built from the same code (`harness`).

Scores from `score_continuations` are log-probabilities (higher is better); see `scoring` for the exact definitions.
"""

from .. import lazy_exports


__all__ = ["ContinuationScore", "Prompt", "generate", "load_model_and_processor", "score_continuations", "user_prompt"]

__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "scoring"))
