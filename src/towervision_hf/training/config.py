"""`TowerVisionSFTConfig`: TRL's `SFTConfig` plus what one TowerVision stage trains and how its inputs are shaped."""

import os
from dataclasses import dataclass, field

from trl import SFTConfig

from .arguments import StageArguments


@dataclass
class TowerVisionSFTConfig(SFTConfig, StageArguments):
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
        """Whether parameters are sharded across ranks (FSDP, `fsdp2`, DeepSpeed ZeRO-3): every rank must run every
        module."""
        fsdp = bool(self.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
        plugin = self.deepspeed_plugin
        return self.fsdp2 or fsdp or (plugin is not None and plugin.zero_stage == 3)
