"""towervision-hf: TowerVision / TowerVideo as transformers-native models, with their processors, training
recipes, data pipeline and evaluation. Importing the package registers the classes with transformers' Auto API."""

from transformers import AutoConfig

from .configuration_towervision import TowerVisionConfig


AutoConfig.register("towervision", TowerVisionConfig, exist_ok=True)

__all__ = ["TowerVisionConfig"]
