"""`TowerVisionSFTConfig`: TRL's `SFTConfig` plus what one TowerVision stage trains and how its inputs are shaped."""

import os
from dataclasses import dataclass, field

from trl import SFTConfig

from ..model.tiling_towervision import IMAGE_ASPECT_RATIOS
from .collator import OVER_LENGTH_POLICIES, UNTRAINABLE_POLICIES


@dataclass
class TowerVisionSFTConfig(SFTConfig):
    r"""
    [`~trl.SFTConfig`] for one TowerVision stage. On top of TRL's options:

    * per-module learning rates (`vision_lr`, `projector_lr`, `language_lr`; 0 freezes the module);
    * the stage's layout (`image_aspect_ratio`, `max_tiles`, `num_frames`), written into the model config at load
      time; the processor then follows the config;
    * what happens to samples over `max_length` (`over_length`) and to rows that would train on nothing
      (`untrainable`);
    * multimodal packing: `packing` asks for ours ([`~towervision_hf.training.packing`], with `packing_buffer` and
      `max_row_tiles`), which `__post_init__` moves to `pack_samples` so that TRL never sets up its own;
    * a disk cache of frozen vision-tower features (`vision_feature_cache`) and `save_trained_only`.

    `__post_init__` also sets what the collators need of TRL and accelerate: the raw schema rows reach the collator
    (`remove_unused_columns=False`, `skip_prepare_dataset`), and every process reads its own batches of a stream
    (`dispatch_batches=False`: dispatching from the main process would concatenate batches of different lengths and
    tile counts). Settings that cannot work together raise a `ValueError` here.
    """

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
    # `packing` as asked for: TRL refuses to pack vision rows, so packing is ours and TRL's `packing` stays off
    pack_samples: bool = field(default=False, init=False)

    def __post_init__(self):
        if self.packing:
            self.pack_samples, self.packing = True, False
        self.remove_unused_columns = False  # the collators read the raw schema rows and tokenize on the fly
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}
        super().__post_init__()
        self.accelerator_config.dispatch_batches = False
        if self.save_trained_only and self.sharded:
            raise ValueError(
                "save_trained_only reads the trained tensors whole on the main process: use DDP or one process "
                "(stage 1 fits in DDP), or save in full under FSDP / ZeRO-3"
            )
        if self.vision_feature_cache and self.sharded:
            raise ValueError(
                "vision_feature_cache skips the vision tower, which FSDP / ZeRO-3 must run on every rank; use DDP"
            )

    @property
    def module_learning_rates(self) -> dict[str, float | None]:
        """Learning rate per module group (`None`: `learning_rate`, 0: frozen)."""
        return {"vision": self.vision_lr, "projector": self.projector_lr, "language": self.language_lr}

    @property
    def layout(self) -> dict:
        """The model-config attributes this stage sets: its image layout, tile budget and frame count."""
        options = {"image_aspect_ratio": self.image_aspect_ratio, "max_tiles": self.max_tiles}
        options["num_frames"] = self.num_frames
        return {key: value for key, value in options.items() if value is not None}

    @property
    def sharded(self) -> bool:
        """Whether parameters are sharded across ranks (FSDP, DeepSpeed ZeRO-3): every rank must run every module."""
        fsdp = bool(self.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
        plugin = self.deepspeed_plugin
        return fsdp or (plugin is not None and plugin.zero_stage == 3)
