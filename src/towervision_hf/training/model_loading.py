"""The one home of model loading for training: the base (a checkpoint folder, a Hub id or the tiny model), its
processor, the stage's layout (config first, the processor follows), per-module freezing and LoRA / QLoRA."""

import os

from accelerate import PartialState
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from trl import ModelConfig, get_peft_config, get_quantization_config

from ..checkpoint.compose import build_tiny
from ..checkpoint.image_newline import find_image_newline
from ..checkpoint.output import check_model_folder
from ..checkpoint.tiny import TINY_MODEL
from ..checkpoint.trained_modules import require_full_model
from ..checkpoint.weights import torch_dtype
from ..model.tiling_towervision import default_grid_pinpoints
from .config import TowerVisionSFTConfig
from .fsdp import fsdp2_config
from .trainer import apply_module_learning_rates


# LoRA goes on the language model's attention and MLP projections only: SigLIP has q/k/v_proj too.
LM_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
# Kept in full precision under QLoRA: trained in full (vision tower, projector) or tied to the embeddings (LM head).
QLORA_SKIP_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def base_reference(model_args: ModelConfig, seed: int) -> dict:
    """The base a run starts from: `tiny` and the seed it is built from, a local folder (absolute path), or a Hub id
    and revision. This is also what a `--save_trained_only` run names as its base."""
    path = model_args.model_name_or_path
    if path is None:
        raise ValueError("model_name_or_path is not set (a checkpoint folder, a Hub id, or `tiny`)")
    if path == TINY_MODEL:
        return {"model_name_or_path": TINY_MODEL, "seed": seed}
    if os.path.isdir(path):
        return {"model_name_or_path": os.path.abspath(path)}
    return {"model_name_or_path": path, "revision": model_args.model_revision}


def qlora_quantization_config(model_args: ModelConfig):
    """bitsandbytes 4-/8-bit config for `--load_in_4bit` / `--load_in_8bit` (QLoRA, CUDA only), or None.

    Only the language model's layers are quantized: the vision tower and the projector (trained in full) and the LM
    head (tied to the embeddings) stay in `dtype`.
    """
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        quantization_config.llm_int8_skip_modules = QLORA_SKIP_MODULES
    return quantization_config


def load_pretrained(model_args: ModelConfig, training_args: TowerVisionSFTConfig):
    """The checkpoint's model (this package's classes, or with `model_code: checkpoint` its own remote code) and
    processor."""
    path, revision = model_args.model_name_or_path, model_args.model_revision
    check_model_folder(path)
    require_full_model(path)
    kwargs = {"revision": revision, "trust_remote_code": training_args.trust_remote_code}
    kwargs["dtype"] = torch_dtype(model_args.dtype)
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    quantization_config = qlora_quantization_config(model_args)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        # this process's GPU, or the CPU (bitsandbytes' CPU backend)
        kwargs["device_map"] = {"": PartialState().device}
    if training_args.fsdp2:
        kwargs["distributed_config"] = fsdp2_config(PartialState().num_processes)
    if training_args.model_code == "checkpoint":
        if not training_args.trust_remote_code:
            raise ValueError("model_code: checkpoint runs the checkpoint's own code; pass --trust_remote_code true")
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=True)
        class_reference = (getattr(config, "auto_map", None) or {}).get("AutoModelForImageTextToText")
        if class_reference is None:
            raise ValueError(f"{path} has no AutoModelForImageTextToText in config.auto_map: it ships no remote code")
        model = get_class_from_dynamic_module(class_reference, path, revision=revision).from_pretrained(path, **kwargs)
    else:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    processor = AutoProcessor.from_pretrained(
        path, revision=revision, trust_remote_code=training_args.trust_remote_code
    )
    return model, processor


def set_layout(config, layout: dict) -> None:
    """Write a stage's `image_aspect_ratio`, `max_tiles` (with its grid pinpoints) and `num_frames` into a model
    config (stage 1 trains and saves a one-tile-per-image model, stage 2 switches back to 6-tile anyres, and the final
    checkpoint samples the frames it was trained on)."""
    for name, value in layout.items():
        setattr(config, name, value)
    if "max_tiles" in layout:
        config.image_grid_pinpoints = default_grid_pinpoints(layout["max_tiles"], config.tile_size)


def follow_config(processor, config, names) -> None:
    """Make `processor` follow the model `config` in the layout attributes `names` (`image_aspect_ratio`,
    `max_tiles` with its grid pinpoints, `num_frames`)."""
    image_processor = processor.image_processor
    if "image_aspect_ratio" in names:
        image_processor.image_aspect_ratio = config.image_aspect_ratio
    if "max_tiles" in names:
        image_processor.max_tiles = config.max_tiles
        image_processor.image_grid_pinpoints = [list(pinpoint) for pinpoint in config.image_grid_pinpoints]
    if "num_frames" in names:
        processor.video_processor.num_frames = config.num_frames


def apply_lora(model, model_args: ModelConfig, training_args: TowerVisionSFTConfig):
    """Wrap `model` with LoRA on the language model; projector (and a trained vision tower) fully trained and saved.

    The image newline is a bare parameter that peft cannot put in `modules_to_save`: it stays trainable with the
    projector and the trainer saves it beside the adapter (`image_newline.safetensors`; `towervision merge` and
    resuming restore it).
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    rates = training_args.module_learning_rates
    peft_config = get_peft_config(model_args)
    if model_args.lora_target_modules is None:
        peft_config.target_modules = LM_LORA_TARGETS
    modules_to_save = list(model_args.lora_modules_to_save or [])
    for group, module in (("projector", "multi_modal_projector"), ("vision", "vision_tower")):
        if rates[group] != 0 and module not in modules_to_save:
            modules_to_save.append(module)
    peft_config.modules_to_save = modules_to_save or None
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, peft_config)
    model.get_base_model().model.image_newline.requires_grad_(rates["projector"] != 0)
    return model


def load_model_and_processor(model_args: ModelConfig, training_args: TowerVisionSFTConfig):
    """The stage's model, ready to train, and its processor.

    The base is `model_args.model_name_or_path` (`tiny` builds the tiny model from `training_args.seed`). The stage's
    layout goes into the model config and the processor follows the config; groups with learning rate 0 are frozen;
    `use_peft` wraps the model with LoRA. In a one-tile layout no image uses the image newline: it is frozen, since
    no gradient would ever reach it.
    """
    base = base_reference(model_args, training_args.seed)
    if "seed" in base and (training_args.fsdp2 or model_args.load_in_4bit or model_args.load_in_8bit):
        raise ValueError(
            "the tiny model is built in memory, not loaded: fsdp2 and load_in_4bit/8bit need a checkpoint folder "
            "(`towervision init --tiny DIR`)"
        )
    if "seed" in base:  # the tiny model, built from its seed
        model, processor = build_tiny(seed=base["seed"])
    else:
        model, processor = load_pretrained(model_args, training_args)
    set_layout(model.config, training_args.layout)
    follow_config(processor, model.config, training_args.layout)
    apply_module_learning_rates(model, training_args.module_learning_rates)
    if model_args.use_peft:
        model = apply_lora(model, model_args, training_args)
    newline = find_image_newline(model)
    if newline is not None and model.config.image_aspect_ratio != "anyres":
        newline.requires_grad_(False)
    return model, processor
