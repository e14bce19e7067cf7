"""towervision-hf: TowerVision / TowerVideo as transformers-native models, with their processors, training
recipes, data pipeline and evaluation. Importing the package registers the classes with transformers' Auto API."""

from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoVideoProcessor

from .configuration_towervision import TowerVisionConfig
from .image_processing_towervision import TowerVisionImageProcessor
from .processing_towervision import TowerVisionProcessor
from .video_processing_towervision import TowerVisionVideoProcessor


AutoConfig.register("towervision", TowerVisionConfig, exist_ok=True)
AutoImageProcessor.register(
    TowerVisionConfig, image_processor_classes={"torchvision": TowerVisionImageProcessor}, exist_ok=True
)
AutoVideoProcessor.register(TowerVisionConfig, TowerVisionVideoProcessor, exist_ok=True)
AutoProcessor.register(TowerVisionConfig, TowerVisionProcessor, exist_ok=True)
TowerVisionImageProcessor.register_for_auto_class("AutoImageProcessor")
TowerVisionVideoProcessor.register_for_auto_class("AutoVideoProcessor")
TowerVisionProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["TowerVisionConfig", "TowerVisionImageProcessor", "TowerVisionProcessor", "TowerVisionVideoProcessor"]
