"""TowerVision's model, configuration and processors: exactly the files a Hub checkpoint carries as remote code
(`*_towervision.py`, importing only each other). Importing this package registers the classes with transformers'
Auto API."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoProcessor,
    AutoVideoProcessor,
)

from .configuration_towervision import TowerVisionConfig
from .image_processing_towervision import TowerVisionImageProcessor
from .modeling_towervision import TowerVisionForConditionalGeneration, TowerVisionModel, TowerVisionPreTrainedModel
from .processing_towervision import TowerVisionProcessor
from .video_processing_towervision import TowerVisionVideoProcessor


AutoConfig.register("towervision", TowerVisionConfig, exist_ok=True)
AutoModel.register(TowerVisionConfig, TowerVisionModel, exist_ok=True)
AutoModelForImageTextToText.register(TowerVisionConfig, TowerVisionForConditionalGeneration, exist_ok=True)
AutoModelForMultimodalLM.register(TowerVisionConfig, TowerVisionForConditionalGeneration, exist_ok=True)
AutoImageProcessor.register(
    TowerVisionConfig, image_processor_classes={"torchvision": TowerVisionImageProcessor}, exist_ok=True
)
AutoVideoProcessor.register(TowerVisionConfig, TowerVisionVideoProcessor, exist_ok=True)
AutoProcessor.register(TowerVisionConfig, TowerVisionProcessor, exist_ok=True)

# Saved checkpoints carry the code files and an `auto_map`, so they load with trust_remote_code anywhere.
TowerVisionConfig.register_for_auto_class()
TowerVisionModel.register_for_auto_class("AutoModel")
TowerVisionForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
TowerVisionImageProcessor.register_for_auto_class("AutoImageProcessor")
TowerVisionVideoProcessor.register_for_auto_class("AutoVideoProcessor")
TowerVisionProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "TowerVisionConfig",
    "TowerVisionForConditionalGeneration",
    "TowerVisionImageProcessor",
    "TowerVisionModel",
    "TowerVisionPreTrainedModel",
    "TowerVisionProcessor",
    "TowerVisionVideoProcessor",
]
