"""towervision-hf: TowerVision / TowerVideo as transformers-native models, with their processors, training
recipes, data pipeline and evaluation.

The model classes are imported on first use (`from towervision_hf import TowerVisionConfig`), which also registers
them with transformers' Auto API (`towervision_hf.model`); importing the package alone imports neither torch nor
transformers, so the command line answers `--help` at once.
"""

import importlib


__all__ = [
    "TowerVisionConfig",
    "TowerVisionForConditionalGeneration",
    "TowerVisionImageProcessor",
    "TowerVisionModel",
    "TowerVisionPreTrainedModel",
    "TowerVisionProcessor",
    "TowerVisionVideoProcessor",
]


def lazy_exports(package: str, exports: dict[str, str]):
    """A module-level `__getattr__` for `package` that imports each name of `exports` (name -> sub-module) on first
    use, so that importing the package itself stays light."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "model"))
