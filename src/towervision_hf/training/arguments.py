"""The options of `towervision train` that are ours, beside TRL's `SFTConfig` and `ModelConfig`: where the rows come
from (`DataArguments`) and what a stage trains and how its inputs are shaped (`StageArguments`). Plain dataclasses,
importable without torch or TRL, so that `towervision train --help` answers at once."""

from dataclasses import dataclass, field


# The choices of the stage options, kept here so that `--help` needs neither torch nor the model code
# (tests/test_train_config.py checks IMAGE_ASPECT_RATIOS against the model's `tiling_towervision.IMAGE_ASPECT_RATIOS`).
IMAGE_ASPECT_RATIOS = ("anyres", "square", "pad")
OVER_LENGTH_POLICIES = ("skip", "error")
UNTRAINABLE_POLICIES = ("error", "skip")


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
    """What one stage trains and how its inputs are shaped ([`TowerVisionSFTConfig`] adds them to TRL's
    `SFTConfig`)."""

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
            "the model config, which the processor follows; unset = keep.",
            "choices": list(IMAGE_ASPECT_RATIOS),
        },
    )
    max_tiles: int | None = field(
        default=None,
        metadata={
            "help": "Most tiles per image (plus the thumbnail), written into the model config, which the processor "
            "follows; unset = keep."
        },
    )
    num_frames: int | None = field(
        default=None,
        metadata={
            "help": "Frames sampled per video, written into the model config, which the processor follows; unset = "
            "keep."
        },
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
            "choices": list(OVER_LENGTH_POLICIES),
        },
    )
    untrainable: str = field(
        default="error",
        metadata={
            "help": "Rows that would train on nothing (unknown role, no assistant text): error or skip them.",
            "choices": list(UNTRAINABLE_POLICIES),
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
