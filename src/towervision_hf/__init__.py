"""towervision-hf: TowerVision / TowerVideo as transformers-native models, with their processors, training
recipes, data pipeline and evaluation. Importing the package registers the classes with transformers' Auto API."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM

from .configuration_towervision import TowerVisionConfig
from .modeling_towervision import TowerVisionForConditionalGeneration, TowerVisionModel, TowerVisionPreTrainedModel


AutoConfig.register("towervision", TowerVisionConfig, exist_ok=True)
AutoModel.register(TowerVisionConfig, TowerVisionModel, exist_ok=True)
AutoModelForImageTextToText.register(TowerVisionConfig, TowerVisionForConditionalGeneration, exist_ok=True)
AutoModelForMultimodalLM.register(TowerVisionConfig, TowerVisionForConditionalGeneration, exist_ok=True)

# Saved checkpoints carry the code (configuration_, modeling_, tiling_ files) and an `auto_map` for trust_remote_code.
TowerVisionConfig.register_for_auto_class()
TowerVisionModel.register_for_auto_class("AutoModel")
TowerVisionForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

__all__ = [
    "TowerVisionConfig",
    "TowerVisionForConditionalGeneration",
    "TowerVisionModel",
    "TowerVisionPreTrainedModel",
]
