"""towervision-hf: TowerVision / TowerVideo as transformers-native models, with their processors, training
recipes, data pipeline and evaluation. Importing the package registers the classes with transformers' Auto API."""

from .model import (
    TowerVisionConfig,
    TowerVisionForConditionalGeneration,
    TowerVisionImageProcessor,
    TowerVisionModel,
    TowerVisionPreTrainedModel,
    TowerVisionProcessor,
    TowerVisionVideoProcessor,
)

__all__ = [
    "TowerVisionConfig",
    "TowerVisionForConditionalGeneration",
    "TowerVisionImageProcessor",
    "TowerVisionModel",
    "TowerVisionPreTrainedModel",
    "TowerVisionProcessor",
    "TowerVisionVideoProcessor",
]
