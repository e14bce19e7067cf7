"""`SFTTrainer` for TowerVision: per-module learning rates (vision / projector / language, 0 = frozen), the loss on
labelled positions only, logging of the samples the collator skipped, and the image newline saved next to LoRA
adapters."""

import re

import torch
from torch import nn
from transformers import TrainerCallback
from trl import SFTTrainer

from ..checkpoint.image_newline import restore_image_newline, save_image_newline
from .collator import SKIP_COUNTERS
from .config import TowerVisionSFTConfig
from .feature_cache import VisionFeatureCache
from .fsdp import export_unsharded_code
from .packing import PACKING_KEY
from .zero3 import save_under_own_names


# Optimizer groups: the projector group holds the image newline, the language group the LM (and its tied head).
MODULE_GROUPS = ("language", "projector", "vision")
_VISION = re.compile(r"(^|\.)vision_tower\.")
_PROJECTOR = re.compile(r"(^|\.)(multi_modal_projector\.|image_newline$)")


def module_group(parameter_name: str) -> str:
    """`"vision"`, `"projector"` or `"language"` for a parameter name (plain, peft- or FSDP-prefixed)."""
    if _VISION.search(parameter_name):
        return "vision"
    if _PROJECTOR.search(parameter_name):
        return "projector"
    return "language"


def apply_module_learning_rates(model: torch.nn.Module, learning_rates: dict[str, float | None]) -> None:
    """Freeze every parameter whose group has learning rate 0 and unfreeze the others (quantized weights, which
    cannot train, stay frozen)."""
    for name, param in model.named_parameters():
        param.requires_grad_(learning_rates.get(module_group(name)) != 0 and param.is_floating_point())


def trainable_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Number of trainable parameters per group of `MODULE_GROUPS`."""
    counts = dict.fromkeys(MODULE_GROUPS, 0)
    for name, param in model.named_parameters():
        if param.requires_grad:
            counts[module_group(name)] += param.numel()
    return counts


def labelled_logits(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the positions whose next token is labelled, and those labels: `(batch, P, vocab)`, `(batch, P)`.

    In a vision-language batch most positions are image placeholders or prompt and never carry a label, so only the
    union over the batch of the labelled positions goes through the LM head (`logits_to_keep`): the model's own
    forward (final-logit softcapping included) on a small fraction of the `tokens x vocabulary` logits. A row with
    no label at one of the kept positions has `-100` there.
    """
    next_labels = inputs["labels"][:, 1:]
    positions = (next_labels != -100).any(dim=0).nonzero().squeeze(1)
    model_inputs = {key: value for key, value in inputs.items() if key != "labels"}
    logits = model(**model_inputs, use_cache=False, logits_to_keep=positions).logits
    return logits, next_labels[:, positions]


class TowerVisionSFTTrainer(SFTTrainer):
    r"""
    [`~trl.SFTTrainer`] for one TowerVision stage, set up by its [`TowerVisionSFTConfig`] (`args`).

    * Per-module learning rates: one optimizer group per group of [`MODULE_GROUPS`] at `args.module_learning_rates`
      (`None` uses `args.learning_rate`). Frozen groups (rate 0) must already have `requires_grad=False` (see
      [`apply_module_learning_rates`]).
    * The `nll` loss (the recipes' `loss_type`) is TRL's, computed on the labelled positions only: image placeholders
      and prompts, most of a vision-language batch, never go through the LM head (see [`labelled_logits`]). Other loss
      types, `compute_loss_func` and label smoothing go through TRL unchanged.
    * With `args.vision_feature_cache`, the frozen vision tower's features are read from and written to that disk
      cache ([`VisionFeatureCache`], as `feature_cache`).

    Also logs `skipped_over_length` and `skipped_untrainable` (samples the [`TowerVisionCollator`] or the packer
    dropped so far, over all processes), with packed batches (`args.pack_samples`) `pack_efficiency` (real tokens /
    row capacity) and `samples_per_row` so far, and, with a peft model, saves the stage's model config and the
    trained image newline (a bare parameter peft cannot save, as `image_newline.safetensors`) beside the adapter,
    and restores the newline when resuming.
    """

    args: TowerVisionSFTConfig

    def __init__(self, model, args: TowerVisionSFTConfig, *pargs, **kwargs):
        cache_dir = args.vision_feature_cache
        self.feature_cache = VisionFeatureCache(cache_dir).attach(model) if cache_dir else None
        super().__init__(model, args, *pargs, **kwargs)
        self.skipped_over_length = 0
        self.step_learning_rates = StepLearningRates()
        self.add_callback(self.step_learning_rates)
        self.skipped_untrainable = 0
        self.packing_totals = torch.zeros(4, dtype=torch.long)  # samples, rows, real tokens, row capacity

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay_parameters = set(self.get_decay_parameter_names(opt_model))
        grouped: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                grouped.setdefault((module_group(name), name in decay_parameters), []).append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        if {"params", "model", "optimizer_dict"} & set(optimizer_kwargs):
            raise ValueError(
                f"optim={self.args.optim!r} builds its own parameter groups; per-module learning rates need another "
                "optimizer"
            )
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if decay else 0.0,
                "lr": self._group_learning_rate(group),
                "name": f"{group}{'' if decay else '_no_decay'}",
            }
            for group in MODULE_GROUPS
            for (name, decay), params in grouped.items()
            if name == group
        ]
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def _group_learning_rate(self, group: str) -> float:
        rate = self.args.module_learning_rates.get(group)
        return self.args.learning_rate if rate is None else rate

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        counts = {key: inputs.pop(key, None) for key in (*SKIP_COUNTERS, PACKING_KEY)}
        packing = counts[PACKING_KEY]
        if model.training:
            self._add_batch_counts(counts)
        custom_loss = self.compute_loss_func is not None or self.label_smoother is not None
        if self.args.loss_type != "nll" or custom_loss or return_outputs or self.aux_loss_enabled:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        # TRL's `nll`, computed on the labelled positions only (see `labelled_logits`)
        logits, targets = labelled_logits(model, inputs)
        logits = logits.float()
        summed = nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="sum")
        valid = targets != -100
        loss = summed / (valid.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as Trainer / TRL: DDP averages
        num_tokens = inputs["attention_mask"].sum() if "attention_mask" in inputs else packing.reshape(-1)[2]
        self._log_token_metrics(logits.detach(), targets, valid, num_tokens)
        return loss

    def _add_batch_counts(self, counts: dict) -> None:
        """Add a batch's skip counters and packing stats (the collator's entries, `None` when absent), summed over
        processes in one gather."""
        present = {key: torch.as_tensor(value).reshape(-1) for key, value in counts.items() if value is not None}
        if not present:
            return
        values = torch.cat(list(present.values())).to(self.accelerator.device, torch.long).reshape(1, -1)
        totals = self.accelerator.gather_for_metrics(values).sum(dim=0).cpu()
        for key, total in zip(present, totals.split([len(value) for value in present.values()])):
            if key == PACKING_KEY:
                self.packing_totals += total
            else:
                setattr(self, SKIP_COUNTERS[key], getattr(self, SKIP_COUNTERS[key]) + int(total))

    def _log_token_metrics(self, logits, targets, valid, num_tokens) -> None:
        """TRL's `entropy`, `mean_token_accuracy` and `num_tokens`, from the labelled positions' logits."""
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        with torch.no_grad():
            log_probs = logits.log_softmax(dim=-1)
            entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
            num_valid = gather(valid.sum()).sum()
            entropy_sum = gather(entropy[valid].sum()).sum()
            num_correct = gather((logits.argmax(dim=-1) == targets)[valid].sum()).sum()
        self._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((num_correct / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train":
            self._total_train_tokens += gather(num_tokens.to(valid.device)).sum().item() // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training:
            logs["skipped_over_length"] = self.skipped_over_length
            logs["skipped_untrainable"] = self.skipped_untrainable
            if "loss" in logs:
                for name, rate in self.step_learning_rates.rates.items():
                    logs[f"learning_rate_{name}"] = rate
            logs.update(self.packing_metrics())
        super().log(logs, start_time)

    def packing_metrics(self) -> dict[str, float]:
        """`pack_efficiency` (real tokens / row capacity) and `samples_per_row` over the packed batches so far."""
        samples, rows, tokens, capacity = self.packing_totals.tolist()
        if not rows:
            return {}
        return {"pack_efficiency": tokens / capacity, "samples_per_row": samples / rows}

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if self.is_deepspeed_enabled:
            save_under_own_names(model)
        super()._save(output_dir, state_dict=state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            export_unsharded_code(model, output_dir)
        if not (self.args.should_save and hasattr(model, "peft_config")):
            return
        # A LoRA run saves an adapter: the stage's config (image grid, frames) and the trained newline go beside it.
        model.get_base_model().config.save_pretrained(output_dir)
        save_image_newline(model, output_dir, state_dict)

    def _issue_warnings_after_load(self, load_result) -> None:
        # a tied LM head is not saved (safetensors): its absence is expected, not a missing key
        model = self.accelerator.unwrap_model(self.model)
        model = model.get_base_model() if hasattr(model, "get_base_model") else model
        tied = set(getattr(model, "_tied_weights_keys", None) or ()) if model.config.tie_word_embeddings else set()
        if tied & set(load_result.missing_keys):
            model.tie_weights()
            load_result = load_result._replace(missing_keys=[k for k in load_result.missing_keys if k not in tied])
        super()._issue_warnings_after_load(load_result)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        restore_image_newline(model if model is not None else self.model, resume_from_checkpoint)


class StepLearningRates(TrainerCallback):
    """The learning rate of each named parameter group for the optimizer step just taken, read before the scheduler
    moves it: what transformers logs as `learning_rate` (the `_no_decay` twins are left out, they share the rate)."""

    def __init__(self):
        self.rates: dict[str, float] = {}

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        groups = optimizer.param_groups if optimizer is not None else []
        self.rates = {g["name"]: g["lr"] for g in groups if "name" in g and not g["name"].endswith("_no_decay")}
