# Copyright 2026 The towervision-hf authors. Licensed under the Apache License, Version 2.0.
"""Train one TowerVision stage with TRL's `SFTTrainer`.

    towervision train recipes/towervision-2b/stage1_projector.yaml
    towervision train recipes/towervision-2b/stage2_vision.yaml --model_name_or_path outputs/towervision-2b/stage1
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m towervision_hf.train \
        recipes/towervision-9b/stage2_vision.yaml --fsdp2 true --save_only_model true
    towervision train recipes/towervision-2b/stage2_vision.yaml --use_peft true --lora_r 64 \
        --output_dir outputs/towervision-2b/stage2-lora
    towervision merge outputs/towervision-2b/stage2-lora outputs/towervision-2b/stage2-merged
    towervision train recipes/towervision-2b/stage1_projector.yaml --save_trained_only true
    towervision merge outputs/towervision-2b/stage1 outputs/towervision-2b/stage1-full

A recipe is a flat YAML of `SFTConfig`, `ModelConfig` (TRL), `DataArguments` and `StageArguments` fields; any of them
can be overridden on the command line (`--key value`). The stage's model, processor and code files end up in
`output_dir`, ready for `AutoModelForImageTextToText.from_pretrained(..., trust_remote_code=True)` and for the next
stage's `--model_name_or_path` (a LoRA run saves an adapter, a `--save_trained_only` run the trained tensors beside a
reference to its base: `towervision merge` them first).
"""

import itertools
import json
import math
import os
import sys
from dataclasses import dataclass, field
from importlib import resources

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, SFTConfig, TrlParser, get_peft_config, get_quantization_config

from .checkpoint.image_newline import find_image_newline
from .checkpoint.tiny import TINY_MODEL
from .checkpoint.trained_modules import (
    discard_trained_modules,
    is_trained_modules_folder,
    save_trained_modules,
)
from .checkpoint.weights import torch_dtype
from .training import TowerVisionCollator, TowerVisionSFTTrainer, VisionFeatureCache, apply_module_learning_rates
from .training.attention import SAMPLE_EAGER
from .training.fsdp import fsdp2_config, sharding_summary
from .training.packing import Packer, SampleMeasure, TowerVisionPackedCollator, pack_dataset, pack_stream
from .training.qlora import quantization_summary
from .training.trainer import trainable_parameters
from .training.zero3 import zero3_summary

# LoRA goes on the language model's attention and MLP projections only: SigLIP has q/k/v_proj too.
LM_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
# Kept in full precision under QLoRA: trained in full (vision tower, projector) or tied to the embeddings (LM head).
QLORA_SKIP_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


@dataclass
class DataArguments:
    """Where the training rows come from; every source yields rows in the sample schema (`towervision_hf.data`)."""

    dataset: str = field(
        default="sample:1",
        metadata={
            "help": "`sample:1|2|3` (the embedded sample), a data recipe YAML (streamed, see `dataset_stage`), a "
            "folder written by `towervision data build` or `save_to_disk`, a `datasets` id, a Hub-layout folder or a "
            "single data file, in the sample schema (see towervision_hf.data.loading)."
        },
    )
    dataset_stage: str | None = field(
        default=None, metadata={"help": "Stage of a data recipe: alignment, vision or video."}
    )
    dataset_split: str = field(
        default="train", metadata={"help": "Split of `dataset` (a single file or saved Dataset is this split)."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows."})
    shuffle_buffer: int = field(
        default=10_000, metadata={"help": "Shuffle buffer of a streamed data recipe (reseeded every epoch); 0 = off."}
    )


@dataclass
class StageArguments:
    """What one stage trains and how its inputs are shaped."""

    vision_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the vision tower; 0 freezes it, unset = learning_rate."}
    )
    projector_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the projector and image newline; 0 freezes them."}
    )
    language_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the language model (and its tied head); 0 freezes it."}
    )
    image_aspect_ratio: str | None = field(
        default=None,
        metadata={
            "help": "anyres (tiles), square or pad (each image encoded once as one tile, no newline), written into "
            "model config and processor; unset = keep.",
            "choices": ["anyres", "square", "pad"],
        },
    )
    max_tiles: int | None = field(
        default=None,
        metadata={
            "help": "Most tiles per image (plus the thumbnail), written into model config and processor; unset = keep."
        },
    )
    num_frames: int | None = field(
        default=None,
        metadata={"help": "Frames sampled per video, written into model config and processor; unset = keep."},
    )
    vision_feature_cache: str | None = field(
        default=None,
        metadata={
            "help": "Folder of a disk cache of frozen vision-tower features (needs vision_lr 0, no FSDP/ZeRO-3)."
        },
    )
    over_length: str = field(
        default="skip",
        metadata={
            "help": "Samples over max_length: skip (dropped and counted) or error.",
            "choices": ["skip", "error"],
        },
    )
    untrainable: str = field(
        default="error",
        metadata={
            "help": "Rows that would train on nothing (unknown role, no assistant text): error or skip them.",
            "choices": ["error", "skip"],
        },
    )
    packing_buffer: int = field(
        default=1000,
        metadata={"help": "With packing: samples packed together (first-fit decreasing over this buffer)."},
    )
    max_row_tiles: int | None = field(
        default=None,
        metadata={
            "help": "With packing: most image tiles (thumbnails included) + video frames per packed row, to bound "
            "vision-tower memory; a sample over it gets a row of its own. Unset = no cap."
        },
    )
    fsdp2: bool = field(
        default=False,
        metadata={
            "help": "Load the model sharded with FSDP2 over all the launched processes (transformers' "
            "DistributedConfig: one unit per SigLIP encoder layer and Gemma2 decoder layer; training.fsdp). Launch "
            "with torchrun or accelerate launch; needs a checkpoint folder and save_only_model (no exact resume)."
        },
    )
    model_code: str = field(
        default="package",
        metadata={
            "help": "package: this package's classes; checkpoint: the checkpoint's own remote code "
            "(needs trust_remote_code).",
            "choices": ["package", "checkpoint"],
        },
    )
    save_trained_only: bool = field(
        default=False,
        metadata={
            "help": "Final save: only the trained tensors (trained_modules.safetensors) beside a reference to the "
            "base and digests of its frozen tensors (trained_modules.json), with config and processor; `towervision "
            "merge` composes the full checkpoint. checkpoint-N folders stay full (exact resume). Not with LoRA or "
            "FSDP / ZeRO-3."
        },
    )

    @property
    def learning_rates(self) -> dict[str, float | None]:
        return {"vision": self.vision_lr, "projector": self.projector_lr, "language": self.language_lr}


def resolve_recipe(recipe: str) -> str:
    """A recipe path, or the name of a recipe shipped with the package (`tiny/stage1_projector.yaml`)."""
    if os.path.isfile(recipe):
        return recipe
    packaged = resources.files("towervision_hf") / "recipes" / recipe
    if packaged.is_file():
        return str(packaged)
    raise ValueError(
        f"recipe {recipe!r} is neither a file nor a recipe shipped with towervision_hf (e.g. tiny/stage1_projector.yaml)"
    )


def parse_args(argv: list[str]) -> tuple[DataArguments, StageArguments, SFTConfig, ModelConfig]:
    """`RECIPE [--key value ...]` (or `--config RECIPE ...`) into the four argument dataclasses."""
    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--config", resolve_recipe(argv[0]), *argv[1:]]
    return _parser().parse_args_and_config(argv)


def _parser() -> TrlParser:
    return TrlParser((DataArguments, StageArguments, SFTConfig, ModelConfig), prog="towervision train")


def qlora_quantization_config(model_args: ModelConfig):
    """bitsandbytes 4-/8-bit config for `--load_in_4bit` / `--load_in_8bit` (QLoRA; CUDA, or slowly bitsandbytes'
    CPU backend), or None.

    Only the language model's layers are quantized: the vision tower and the projector (trained in full) and the LM
    head (tied to the embeddings) stay in `dtype`.
    """
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        quantization_config.llm_int8_skip_modules = QLORA_SKIP_MODULES
    return quantization_config


def load_model_and_processor(model_args: ModelConfig, stage_args: StageArguments, training_args: SFTConfig):
    """The model and processor named by `model_args.model_name_or_path` (`tiny` builds the tiny test model)."""
    path = model_args.model_name_or_path
    if path is None:
        raise ValueError("model_name_or_path is not set (a checkpoint folder, a Hub id, or `tiny`)")
    if path == TINY_MODEL:
        if stage_args.fsdp2 or model_args.load_in_4bit or model_args.load_in_8bit:
            raise ValueError(
                "the tiny model is built in memory, not loaded: fsdp2 and load_in_4bit/8bit need a checkpoint folder "
                "(`towervision init --tiny DIR`)"
            )
        from .checkpoint.compose import build_tiny

        return build_tiny(seed=training_args.seed)
    if is_trained_modules_folder(path):
        raise ValueError(
            f"{path} holds only the tensors a stage trained (--save_trained_only): compose the full checkpoint with "
            f"`towervision merge {path} OUT` and pass OUT"
        )

    kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "dtype": torch_dtype(model_args.dtype),
    }
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    quantization_config = qlora_quantization_config(model_args)
    if quantization_config is not None:
        from accelerate import PartialState

        kwargs["quantization_config"] = quantization_config
        # this process's GPU, or the CPU (bitsandbytes' CPU backend)
        kwargs["device_map"] = {"": PartialState().device}
    if stage_args.fsdp2:
        from accelerate import PartialState

        kwargs["distributed_config"] = fsdp2_config(PartialState().num_processes)
    if stage_args.model_code == "checkpoint":
        if not training_args.trust_remote_code:
            raise ValueError("model_code: checkpoint runs the checkpoint's own code; pass --trust_remote_code true")
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        config = AutoConfig.from_pretrained(path, revision=model_args.model_revision, trust_remote_code=True)
        class_reference = (getattr(config, "auto_map", None) or {}).get("AutoModelForImageTextToText")
        if class_reference is None:
            raise ValueError(f"{path} has no AutoModelForImageTextToText in config.auto_map: it ships no remote code")
        model_class = get_class_from_dynamic_module(class_reference, path, revision=model_args.model_revision)
        model = model_class.from_pretrained(path, **kwargs)
    else:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    processor = AutoProcessor.from_pretrained(
        path, revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code
    )
    return model, processor


def apply_stage_layout(model, processor, stage_args: StageArguments) -> None:
    """Write the stage's image layout (`image_aspect_ratio`), grid (`max_tiles`) and frame count (`num_frames`) into
    the model config and the processor alike, so that they agree during training and in the saved checkpoint (stage 1
    saves a one-tile-per-image model, stage 2 switches back to 6-tile anyres, and the final checkpoint samples the
    frames it was trained on)."""
    from .model.tiling_towervision import default_grid_pinpoints

    config = model.config
    if stage_args.image_aspect_ratio is not None:
        config.image_aspect_ratio = processor.image_processor.image_aspect_ratio = stage_args.image_aspect_ratio
    if stage_args.max_tiles is not None:
        pinpoints = default_grid_pinpoints(stage_args.max_tiles, config.tile_size)
        config.max_tiles, config.image_grid_pinpoints = stage_args.max_tiles, pinpoints
        processor.image_processor.max_tiles = stage_args.max_tiles
        processor.image_processor.image_grid_pinpoints = pinpoints
    if stage_args.num_frames is not None:
        config.num_frames = processor.video_processor.num_frames = stage_args.num_frames


def load_train_dataset(data_args: DataArguments, seed: int = 0):
    """The training rows (a `Dataset`, or a shuffled `IterableDataset` for a data recipe)."""
    import datasets

    name = data_args.dataset
    if name.startswith("sample:"):
        from .data import load_sample

        dataset = load_sample(int(name.split(":", 1)[1]))
    elif name.endswith((".yaml", ".yml")):
        from .data.mixture import load_mixture

        dataset = load_mixture(name, stage=data_args.dataset_stage)
        if data_args.shuffle_buffer:
            dataset = dataset.shuffle(seed=seed, buffer_size=data_args.shuffle_buffer)
    else:
        from .data.loading import load_split

        dataset = load_split(name, data_args.dataset_split)
    if data_args.max_samples is not None:
        if isinstance(dataset, datasets.IterableDataset):
            dataset = dataset.take(data_args.max_samples)
        else:
            dataset = dataset.select(range(min(data_args.max_samples, len(dataset))))
    return dataset


def recipe_steps(data_args: DataArguments, training_args: SFTConfig, samples_per_row: float = 1.0) -> int:
    """Optimizer steps for `num_train_epochs` over a streamed data recipe, from its sources' sample counts (and, when
    packing, the mean samples per packed row)."""
    from accelerate import PartialState

    from .data.mixture import load_recipe

    recipe = load_recipe(data_args.dataset)
    stage = data_args.dataset_stage or next(iter(recipe.stages))
    rows = sum(source.samples for source in recipe.active_sources(stage))
    if data_args.max_samples is not None:
        rows = min(rows, data_args.max_samples)
    global_batch = (
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * PartialState().num_processes
    )
    return max(1, math.ceil(rows * training_args.num_train_epochs / (global_batch * samples_per_row)))


def apply_lora(model, model_args: ModelConfig, stage_args: StageArguments):
    """Wrap `model` with LoRA on the language model; projector (and a trained vision tower) fully trained and saved.

    The image newline is a bare parameter that peft cannot put in `modules_to_save`: it stays trainable with the
    projector and the trainer saves it beside the adapter (`image_newline.safetensors`; `towervision merge` and
    resuming restore it).
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    rates = stage_args.learning_rates
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


def is_sharded(training_args: SFTConfig) -> bool:
    """Whether parameters are sharded across ranks (FSDP, DeepSpeed ZeRO-3): every rank must run every module."""
    fsdp = bool(training_args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    plugin = training_args.deepspeed_plugin
    return fsdp or (plugin is not None and plugin.zero_stage == 3)


def build_trainer(data_args, stage_args, training_args, model_args) -> TowerVisionSFTTrainer:
    """Model, processor, data and collator for one stage, wired into a [`TowerVisionSFTTrainer`]."""
    # Our collator reads the raw schema rows: keep every column and let it tokenize on the fly.
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    sharded = is_sharded(training_args) or stage_args.fsdp2
    if stage_args.fsdp2 and model_args.use_peft:
        raise ValueError("fsdp2 with use_peft (LoRA / QLoRA) is untested: train adapters under DDP (ddp.yaml)")
    if stage_args.save_trained_only and model_args.use_peft:
        raise ValueError("save_trained_only: a LoRA run (use_peft) already saves only its adapter and trained modules")
    base, output_dir = model_args.model_name_or_path, training_args.output_dir
    if stage_args.save_trained_only and os.path.isdir(base or "") and os.path.isdir(output_dir):
        if os.path.samefile(base, output_dir):
            raise ValueError(f"save_trained_only: output_dir is the base {base}, which the trained tensors need")
    if stage_args.save_trained_only and sharded:
        raise ValueError(
            "save_trained_only reads the trained tensors whole on the main process: use DDP or one process "
            "(stage 1 fits in DDP), or save in full under FSDP / ZeRO-3"
        )
    model, processor = load_model_and_processor(model_args, stage_args, training_args)
    apply_stage_layout(model, processor, stage_args)
    apply_module_learning_rates(model, stage_args.learning_rates)
    if model_args.use_peft:
        model = apply_lora(model, model_args, stage_args)
    newline = find_image_newline(model)
    if newline is not None and model.config.image_aspect_ratio != "anyres":
        newline.requires_grad_(False)  # no image uses it in a one-tile layout: no gradient would ever reach it
    feature_cache = None
    if stage_args.vision_feature_cache:
        if sharded:
            raise ValueError(
                "vision_feature_cache skips the vision tower, which FSDP / ZeRO-3 must run on every rank; use DDP"
            )
        feature_cache = VisionFeatureCache(stage_args.vision_feature_cache).attach(model)
    train_dataset = load_train_dataset(data_args, seed=training_args.seed)
    # TRL refuses to pack vision rows; packing is ours (`training.packing`), TRL must not set up its own.
    packing, training_args.packing = training_args.packing, False
    source = train_dataset
    if packing:
        train_dataset, collator, packer = packed_data(
            train_dataset, processor, model, stage_args, training_args, sharded
        )
    else:
        collator = TowerVisionCollator(
            processor,
            max_length=training_args.max_length,
            over_length=stage_args.over_length,
            include_vision_in_every_batch=sharded,
            untrainable=stage_args.untrainable,
        )
    if data_args.dataset.endswith((".yaml", ".yml")):
        if training_args.max_steps <= 0:
            # packed: estimated from the first buffer of the stream
            samples_per_row = packer.samples_per_row(itertools.islice(source, packer.buffer_size)) if packing else 1
            training_args.max_steps = recipe_steps(data_args, training_args, samples_per_row)
        # Every process reads the stream and keeps its own batches: dispatching from the main process would
        # concatenate batches of different sequence lengths and tile counts.
        training_args.accelerator_config.dispatch_batches = False
    trainer = TowerVisionSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=processor,
        data_collator=collator,
        module_learning_rates=stage_args.learning_rates,
    )
    trainer.feature_cache = feature_cache
    trainer.packing = packing
    return trainer


def packed_data(dataset, processor, model, stage_args: StageArguments, training_args: SFTConfig, sharded: bool):
    """The packs of `dataset` (planned up front for a map-style dataset, on the fly for a stream), their collator and
    the packer. Under FlashAttention the whole batch becomes one row (its varlen path finds samples only in a batch of
    one row). Eager attention becomes sample-wise eager (`training.attention`): the same arithmetic on each sample's
    block instead of the whole row's.
    """
    import datasets

    attention = model.config.text_config._attn_implementation or ""
    if attention == "eager":
        model.set_attn_implementation({"text_config": SAMPLE_EAGER})
    collator = TowerVisionPackedCollator(
        processor,
        max_length=training_args.max_length,
        include_vision_in_every_batch=sharded,
        flatten="flash" in attention,
        untrainable=stage_args.untrainable,
    )
    packer = Packer(
        SampleMeasure(processor, collator.num_frames),
        max_length=training_args.max_length,
        max_row_tiles=stage_args.max_row_tiles,
        buffer_size=stage_args.packing_buffer,
        over_length=stage_args.over_length,
    )
    if isinstance(dataset, datasets.IterableDataset):
        return pack_stream(dataset, packer), collator, packer
    seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    return pack_dataset(dataset, packer, seed=seed), collator, packer


def resolve_resume(training_args: SFTConfig) -> str | None:
    """`resume_from_checkpoint`: a checkpoint folder, or `last` / `true` for the newest one in output_dir."""
    resume = training_args.resume_from_checkpoint
    if resume is None or str(resume).lower() in ("false", ""):
        return None
    if str(resume).lower() in ("last", "true"):
        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if last is None:
            raise ValueError(f"resume_from_checkpoint={resume!r} but {training_args.output_dir} holds no checkpoint-*")
        return last
    return resume


def base_reference(model_args: ModelConfig, training_args: SFTConfig) -> dict:
    """The base a `--save_trained_only` run names: `tiny` and its seed, a local folder (absolute path), or a Hub id
    and revision."""
    path = model_args.model_name_or_path
    if path == TINY_MODEL:
        return {"model_name_or_path": TINY_MODEL, "seed": training_args.seed}
    if os.path.isdir(path):
        return {"model_name_or_path": os.path.abspath(path)}
    return {"model_name_or_path": path, "revision": model_args.model_revision}


def run(argv: list[str]) -> TowerVisionSFTTrainer:
    """Parse, train and save one stage; returns the trainer (state, log history, model)."""
    data_args, stage_args, training_args, model_args = parse_args(argv)
    trainer = build_trainer(data_args, stage_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=resolve_resume(training_args))
    if not stage_args.save_trained_only:
        trainer.save_model(training_args.output_dir)
        if trainer.args.should_save:
            discard_trained_modules(training_args.output_dir)
    elif trainer.args.should_save:
        model = trainer.accelerator.unwrap_model(trainer.model)
        base = base_reference(model_args, training_args)
        save_trained_modules(model, trainer.processing_class, training_args.output_dir, base)
    if trainer.is_world_process_zero():
        summary = {
            "global_step": trainer.state.global_step,
            "skipped_over_length": trainer.skipped_over_length,
            "skipped_untrainable": trainer.skipped_untrainable,
            "trainable_parameters": trainable_parameters(trainer.model),
        }
        if trainer.packing:
            samples, rows, tokens, capacity = trainer.packing_totals.tolist()
            summary["packing"] = {"samples": samples, "rows": rows, "tokens": tokens, "row_capacity": capacity}
            summary["packing"].update(trainer.packing_metrics())
        if sharding := sharding_summary(trainer.model):
            summary["fsdp2"] = sharding  # as seen from the main process
        if zero3 := zero3_summary(trainer.model):
            summary["zero3"] = zero3  # as seen from the main process
        if quantization := quantization_summary(trainer.model):
            summary["quantization"] = quantization
        if trainer.feature_cache is not None:
            cache = trainer.feature_cache
            summary["vision_feature_cache"] = {"folder": str(cache.folder), "hits": cache.hits, "misses": cache.misses}
        with open(os.path.join(training_args.output_dir, "train_summary.json"), "w") as handle:
            json.dump(summary, handle, indent=2)
        if trainer.skipped_over_length:
            print(f"skipped {trainer.skipped_over_length} samples longer than max_length={training_args.max_length}")
        if trainer.skipped_untrainable:
            print(f"skipped {trainer.skipped_untrainable} samples that would train on nothing (untrainable: skip)")
        print(f"saved to {os.path.abspath(training_args.output_dir)}")
        if stage_args.save_trained_only:
            print(f"(trained tensors only: `towervision merge {training_args.output_dir} OUT` writes the full model)")
    return trainer


def main(argv: list[str] | None = None) -> int:
    """`towervision train RECIPE [--key value ...]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        if argv:
            _parser().print_help()
        return 0
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
