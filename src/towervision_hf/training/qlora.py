"""What a QLoRA run (`--use_peft true --load_in_4bit true`) quantized, for `train_summary.json`."""

import torch

from .trainer import MODULE_GROUPS, module_group


def quantization_summary(model: torch.nn.Module) -> dict:
    """The bitsandbytes settings the model was loaded with and its quantized linear layers per group of
    `MODULE_GROUPS` (`{}` for a model that is not quantized)."""
    config = getattr(model.config, "quantization_config", None)
    if config is None:
        return {}
    import bitsandbytes as bnb

    counts = dict.fromkeys(MODULE_GROUPS, 0)
    for name, module in model.named_modules():
        if isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
            counts[module_group(name)] += 1
    settings = {"bits": 4 if config.load_in_4bit else 8}
    if config.load_in_4bit:
        settings.update(
            quant_type=config.bnb_4bit_quant_type,
            compute_dtype=str(config.bnb_4bit_compute_dtype).removeprefix("torch."),
            double_quant=config.bnb_4bit_use_double_quant,
        )
    return {"method": "bitsandbytes", **settings, "quantized_linear_layers": counts}
