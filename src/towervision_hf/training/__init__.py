"""Training building blocks behind `towervision train`: the batch collator, the SFTTrainer subclass with per-module
learning rates, the stage-1 vision-feature cache and LoRA helpers. `towervision_hf.train` wires them together."""

from .collator import SKIPPED_KEY, TowerVisionCollator
from .feature_cache import VisionFeatureCache
from .trainer import MODULE_GROUPS, TowerVisionSFTTrainer, apply_module_learning_rates, module_group


__all__ = [
    "MODULE_GROUPS",
    "SKIPPED_KEY",
    "TowerVisionCollator",
    "TowerVisionSFTTrainer",
    "VisionFeatureCache",
    "apply_module_learning_rates",
    "module_group",
]
