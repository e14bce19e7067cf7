"""Training building blocks behind `towervision train`: the batch collator, the SFTTrainer subclass with per-module
learning rates and the labelled-position loss, and the stage-1 vision-feature cache. `towervision_hf.train` wires them
together (model loading, LoRA, data). Beside them: packing (`packing`, `attention`), FSDP2 sharding at load time
(`fsdp`), what ZeRO-3 and QLoRA did (`zero3`, `qlora`) and a pure-torch reference of FlashAttention's varlen kernel
(`varlen`, for CPU checks)."""

from .collator import SKIPPED_KEY, SKIPPED_UNTRAINABLE_KEY, TowerVisionCollator
from .feature_cache import VisionFeatureCache
from .trainer import (
    MODULE_GROUPS,
    TowerVisionSFTTrainer,
    apply_module_learning_rates,
    labelled_logits,
    module_group,
    trainable_parameters,
)

__all__ = [
    "MODULE_GROUPS",
    "SKIPPED_KEY",
    "SKIPPED_UNTRAINABLE_KEY",
    "TowerVisionCollator",
    "TowerVisionSFTTrainer",
    "VisionFeatureCache",
    "apply_module_learning_rates",
    "labelled_logits",
    "module_group",
    "trainable_parameters",
]
