"""DeepSpeed ZeRO-3 (`recipes/accelerate/deepspeed_zero3.yaml`): what it partitioned, for `train_summary.json`, and
checkpoints saved under the model's own tensor names."""

import torch


def zero3_summary(model: torch.nn.Module) -> dict:
    """What ZeRO-3 holds on this process: the partitioned parameters (those with a `ds_id`), the elements of their
    local partitions against the full model's (`{}` for a model that is not partitioned)."""
    parameters = list(model.parameters())
    partitioned = [param for param in parameters if hasattr(param, "ds_id")]
    if not partitioned:
        return {}
    import torch.distributed as dist

    return {
        "processes": dist.get_world_size(),
        "partitioned_parameters": len(partitioned),
        "parameters": len(parameters),
        "local_elements": sum(param.ds_tensor.numel() for param in partitioned),
        "elements": sum(param.ds_numel for param in partitioned),
    }


def save_under_own_names(model: torch.nn.Module) -> None:
    """Make `save_pretrained` write the model's own tensor names.

    transformers' ZeRO-3 loader keeps every rename it could apply (the legacy llava ones included, e.g.
    `language_model.model.*`) as the model's weight conversions, which `save_pretrained` then reverts: a checkpoint
    saved under ZeRO-3 would name `model.language_model.model.embed_tokens.weight` what a DDP or FSDP2 run saves as
    `model.language_model.embed_tokens.weight`. Without conversions, the model is saved as the tiny and composed
    checkpoints are, under its own names.
    """
    model._weight_conversions = None
