"""Training building blocks behind `towervision train`: the stage's config (`TowerVisionSFTConfig`), model loading
(LoRA / QLoRA), the batch collators and packing (`packing`, `attention`), the SFTTrainer subclass with per-module
learning rates and the labelled-position loss, and the stage-1 vision-feature cache. `towervision_hf.train` wires
them together. Beside them: FSDP2 sharding at load time (`fsdp`), what ZeRO-3 and QLoRA did (`zero3`, `qlora`) and a
pure-torch reference of FlashAttention's varlen kernel (`varlen`, for CPU checks)."""

from .. import lazy_exports


__all__ = [
    "MODULE_GROUPS",
    "SKIPPED_KEY",
    "SKIPPED_UNTRAINABLE_KEY",
    "TowerVisionCollator",
    "TowerVisionSFTConfig",
    "TowerVisionSFTTrainer",
    "VisionFeatureCache",
    "apply_module_learning_rates",
    "labelled_logits",
    "module_group",
    "trainable_parameters",
]

__getattr__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(("SKIPPED_KEY", "SKIPPED_UNTRAINABLE_KEY", "TowerVisionCollator"), "collator"),
        "TowerVisionSFTConfig": "config",
        "VisionFeatureCache": "feature_cache",
        **dict.fromkeys(
            (
                "MODULE_GROUPS",
                "TowerVisionSFTTrainer",
                "apply_module_learning_rates",
                "labelled_logits",
                "module_group",
                "trainable_parameters",
            ),
            "trainer",
        ),
    },
)
