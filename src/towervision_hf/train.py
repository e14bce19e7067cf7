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

A recipe is a flat YAML of `TowerVisionSFTConfig` (TRL's `SFTConfig` and our stage options), `ModelConfig` (TRL) and
`DataArguments` fields; any of them can be overridden on the command line (`--key value`). The stage's model,
processor and code files end up in `output_dir`, ready for `AutoModelForImageTextToText.from_pretrained(...,
trust_remote_code=True)` and for the next stage's `--model_name_or_path` (a LoRA run saves an adapter, a
`--save_trained_only` run the trained tensors beside a reference to its base: `towervision merge` them first).
"""

import itertools
import json
import math
import os
import sys
from importlib import resources

import datasets
from accelerate import PartialState
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, TrlParser

from .checkpoint.output import check_output
from .checkpoint.trained_modules import discard_trained_modules, save_trained_modules
from .data.loading import load_split
from .data.mixture import load_mixture, load_recipe
from .data.sample import load_sample
from .training import TowerVisionCollator, TowerVisionSFTConfig, TowerVisionSFTTrainer
from .training.arguments import DataArguments
from .training.attention import SAMPLE_EAGER
from .training.checks import require_trainable_sample
from .training.fsdp import sharding_summary
from .training.model_loading import base_reference, load_model_and_processor
from .training.packing import Packer, SampleMeasure, TowerVisionPackedCollator, pack_dataset, pack_stream
from .training.qlora import quantization_summary
from .training.trainer import trainable_parameters
from .training.zero3 import zero3_summary


def resolve_recipe(recipe: str) -> str:
    """A recipe path, or the name of a recipe shipped with the package (`tiny/stage1_projector.yaml`)."""
    if os.path.isfile(recipe):
        return recipe
    packaged = resources.files("towervision_hf") / "recipes" / recipe
    if packaged.is_file():
        return str(packaged)
    raise ValueError(
        f"recipe {recipe!r} is neither a file nor a recipe shipped with towervision_hf (e.g. "
        "tiny/stage1_projector.yaml)"
    )


def make_parser() -> TrlParser:
    return TrlParser((DataArguments, TowerVisionSFTConfig, ModelConfig), prog="towervision train")


def parse_args(argv: list[str]) -> tuple[DataArguments, TowerVisionSFTConfig, ModelConfig]:
    """`RECIPE [--key value ...]` (or `--config RECIPE ...`) into the three argument dataclasses."""
    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--config", resolve_recipe(argv[0]), *argv[1:]]
    return make_parser().parse_args_and_config(argv)


def load_train_dataset(data_args: DataArguments, seed: int = 0):
    """The training rows and, for a data recipe, the number of rows its stream yields (its sources' sample counts;
    `None` otherwise): a `Dataset`, or a shuffled `IterableDataset` for a data recipe."""
    name, num_rows = data_args.dataset, None
    if name.startswith("sample:"):
        dataset = load_sample(int(name.split(":", 1)[1]))
    elif name.endswith((".yaml", ".yml")):
        recipe = load_recipe(name)
        stage = data_args.dataset_stage or next(iter(recipe.stages))
        dataset = load_mixture(recipe, stage=data_args.dataset_stage)
        num_rows = sum(source.samples for source in recipe.active_sources(stage))
        if data_args.shuffle_buffer:
            dataset = dataset.shuffle(seed=seed, buffer_size=data_args.shuffle_buffer)
    else:
        dataset = load_split(name, data_args.dataset_split)
    if data_args.max_samples is not None:
        if isinstance(dataset, datasets.IterableDataset):
            dataset = dataset.take(data_args.max_samples)
            num_rows = None if num_rows is None else min(num_rows, data_args.max_samples)
        else:
            dataset = dataset.select(range(min(data_args.max_samples, len(dataset))))
    return dataset, num_rows


def stream_steps(num_rows: int, training_args: TowerVisionSFTConfig, samples_per_row: float = 1.0) -> int:
    """Optimizer steps for `num_train_epochs` over a stream of `num_rows` rows (and, when packing, the mean samples
    per packed row)."""
    global_batch = (
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * PartialState().num_processes
    )
    return max(1, math.ceil(num_rows * training_args.num_train_epochs / (global_batch * samples_per_row)))


def packed_data(dataset, processor, model, training_args: TowerVisionSFTConfig):
    """The packs of `dataset` (planned up front for a map-style dataset, on the fly for a stream), their collator and
    the packer. Under FlashAttention the whole batch becomes one row (its varlen path finds samples only in a batch of
    one row). Eager attention becomes sample-wise eager (`training.attention`): the same arithmetic on each sample's
    block instead of the whole row's.
    """
    attention = model.config.text_config._attn_implementation or ""
    if attention == "eager":
        model.set_attn_implementation({"text_config": SAMPLE_EAGER})
    collator = TowerVisionPackedCollator(
        processor,
        max_length=training_args.max_length,
        include_vision_in_every_batch=training_args.sharded,
        flatten="flash" in attention,
        untrainable=training_args.untrainable,
    )
    packer = Packer(
        SampleMeasure(processor, collator.num_frames),
        max_length=training_args.max_length,
        max_row_tiles=training_args.max_row_tiles,
        buffer_size=training_args.packing_buffer,
        over_length=training_args.over_length,
    )
    if isinstance(dataset, datasets.IterableDataset):
        return pack_stream(dataset, packer), collator, packer
    seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    return pack_dataset(dataset, packer, seed=seed), collator, packer


def check_save_trained_only(model_args: ModelConfig, training_args: TowerVisionSFTConfig) -> None:
    """A `--save_trained_only` run needs a full-weight run (its base is kept apart from its output by
    `build_trainer`, as every run's)."""
    if not training_args.save_trained_only:
        return
    if model_args.use_peft:
        raise ValueError("save_trained_only: a LoRA run (use_peft) already saves only its adapter and trained modules")


def build_trainer(
    data_args: DataArguments, training_args: TowerVisionSFTConfig, model_args: ModelConfig
) -> TowerVisionSFTTrainer:
    """Model, processor, data and collator for one stage, wired into a [`TowerVisionSFTTrainer`]."""
    check_save_trained_only(model_args, training_args)
    if training_args.fsdp2 and model_args.use_peft:
        raise ValueError("fsdp2 with use_peft (LoRA / QLoRA) is untested: train adapters under DDP (ddp.yaml)")
    check_output(training_args.output_dir, [model_args.model_name_or_path])  # the save would overwrite its base
    model, processor = load_model_and_processor(model_args, training_args)
    dataset, stream_rows = load_train_dataset(data_args, seed=training_args.seed)
    if training_args.pack_samples:
        train_dataset, collator, packer = packed_data(dataset, processor, model, training_args)
    else:
        train_dataset = dataset
        collator = TowerVisionCollator(
            processor,
            max_length=training_args.max_length,
            over_length=training_args.over_length,
            include_vision_in_every_batch=training_args.sharded,
            untrainable=training_args.untrainable,
        )
    require_trainable_sample(
        dataset, collator, SampleMeasure(processor, collator.num_frames), training_args.max_length
    )
    if stream_rows is not None and training_args.max_steps <= 0:
        # a stream has no length: the steps of `num_train_epochs` come from the recipe's sample counts and, packed,
        # from the samples per row of the stream's first buffer
        first = itertools.islice(dataset, packer.buffer_size) if training_args.pack_samples else None
        samples_per_row = packer.samples_per_row(first) if first is not None else 1.0
        training_args.max_steps = stream_steps(stream_rows, training_args, samples_per_row)
    return TowerVisionSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=processor,
        data_collator=collator,
    )


def resolve_resume(training_args: TowerVisionSFTConfig) -> str | None:
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


def save(trainer: TowerVisionSFTTrainer, model_args: ModelConfig) -> None:
    """Save the stage: the full model, or with `save_trained_only` its trained tensors beside a reference to its
    base; then, on the main process, `train_summary.json` (steps, skipped samples, trainable parameters, packing and
    feature-cache figures)."""
    args = trainer.args
    if not args.save_trained_only:
        trainer.save_model(args.output_dir)
        if args.should_save:
            discard_trained_modules(args.output_dir)
    elif args.should_save:
        model = trainer.accelerator.unwrap_model(trainer.model)
        base = base_reference(model_args, args.seed)
        save_trained_modules(model, trainer.processing_class, args.output_dir, base)
    if not trainer.is_world_process_zero():
        return
    summary = {
        "global_step": trainer.state.global_step,
        "skipped_over_length": trainer.skipped_over_length,
        "skipped_untrainable": trainer.skipped_untrainable,
        "trainable_parameters": trainable_parameters(trainer.model),
    }
    if args.pack_samples:
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
    with open(os.path.join(args.output_dir, "train_summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    if trainer.skipped_over_length:
        print(f"skipped {trainer.skipped_over_length} samples longer than max_length={args.max_length}")
    if trainer.skipped_untrainable:
        print(f"skipped {trainer.skipped_untrainable} samples that would train on nothing (untrainable: skip)")
    print(f"saved to {os.path.abspath(args.output_dir)}")
    if args.save_trained_only:
        print(f"(trained tensors only: `towervision merge {args.output_dir} OUT` writes the full model)")


def run(argv: list[str]) -> TowerVisionSFTTrainer:
    """Parse, train and save one stage; returns the trainer (state, log history, model)."""
    data_args, training_args, model_args = parse_args(argv)
    trainer = build_trainer(data_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=resolve_resume(training_args))
    save(trainer, model_args)
    return trainer


def main(argv: list[str] | None = None) -> int:
    """`python -m towervision_hf.train RECIPE [--key value ...]` (as `accelerate launch -m` runs it); `--help` lists
    every option, TRL's included. `towervision train` is the same with a quicker `--help` (`towervision_hf.cli`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        if argv:
            make_parser().print_help()
        return 0
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
