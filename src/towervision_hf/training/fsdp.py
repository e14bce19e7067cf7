"""FSDP2 for `towervision train --fsdp2 true`: the checkpoint is loaded sharded over all the launched processes by
transformers (`from_pretrained(distributed_config=...)`, torch's `fully_shard`), one FSDP2 unit per SigLIP encoder
layer and per Gemma2 decoder layer (the wrapping of `recipes/accelerate/fsdp2.yaml`), the final norm in a unit of
its own, the rest (embeddings, tied LM head, projector, image newline) in the root unit. Every parameter is a
`DTensor` holding `1 / processes` of it on each rank; the Trainer leaves such a model unwrapped (no DDP) and its
final `save_model` gathers a full checkpoint.

    accelerate launch --config_file recipes/accelerate/ddp.yaml -m towervision_hf.train \
        recipes/towervision-9b/stage2_vision.yaml --fsdp2 true --save_only_model true

Unlike accelerate's FSDP plugin (`recipes/accelerate/fsdp2.yaml`), which accelerate only enables on GPUs, this path
also shards over gloo on CPU processes, where `tests/test_train_distributed.py` runs it.
"""

import shutil
import sys
from collections import Counter
from pathlib import Path

import torch
from transformers.distributed import DistributedConfig


# One FSDP2 unit per layer of the vision tower and of the language model; added to the units transformers' own plans
# name (Gemma2's decoder layers and final norm).
FSDP2_PLAN = {
    "model.vision_tower.encoder.layers.*": "free_full_weight",
    "model.language_model.layers.*": "free_full_weight",
}


def fsdp2_config(num_processes: int) -> DistributedConfig:
    """The `distributed_config` that shards a TowerVision checkpoint over `num_processes` processes (2 or more)."""
    if num_processes < 2:
        raise ValueError(
            "fsdp2 shards the model over the launched processes: launch 2 or more (torchrun --nproc_per_node N or "
            "accelerate launch), or drop --fsdp2"
        )
    return DistributedConfig(fsdp_size=num_processes, fsdp_plan=FSDP2_PLAN)


def sharding_summary(model: torch.nn.Module) -> dict:
    """What FSDP2 holds on this process: the sharded parameters (`DTensor`s), the elements held locally against the
    full model's, and the FSDP2 units per wrapped class (`{}` for a model that is not sharded)."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    parameters = list(model.parameters())
    sharded = [param for param in parameters if isinstance(param, DTensor)]
    if not sharded:
        return {}
    # `fully_shard` swaps a module's class for `FSDP<Class>(FSDPModule, Class)`
    units = Counter(
        type(module).__bases__[-1].__name__ for module in model.modules() if isinstance(module, FSDPModule)
    )
    return {
        "processes": sharded[0].device_mesh.size(),
        "sharded_parameters": len(sharded),
        "parameters": len(parameters),
        "local_elements": sum(param.to_local().numel() for param in sharded),
        "elements": sum(param.numel() for param in sharded),
        "units": dict(units),
    }


def export_unsharded_code(model: torch.nn.Module, output_dir: str) -> None:
    """Put the model's own code files and class back into a checkpoint saved from a sharded remote-code model.

    `fully_shard` swaps the model's class for `FSDP<Class>`, which torch defines: transformers' `save_pretrained`
    copies that class's files (torch's `_fsdp_*.py`) and names it in `config.auto_map` instead of
    `modeling_towervision.py`. Called on the process that wrote the checkpoint.
    """
    from torch.distributed.fsdp import FSDPModule
    from transformers.dynamic_module_utils import get_relative_import_files

    if not isinstance(model, FSDPModule) or not model.is_remote_code():
        return
    model_class = type(model).__bases__[-1]
    sharded_file = sys.modules[type(model).__module__].__file__
    for file in (sharded_file, *get_relative_import_files(sharded_file)):
        (Path(output_dir) / Path(file).name).unlink(missing_ok=True)
    model_file = sys.modules[model_class.__module__].__file__
    for file in (model_file, *get_relative_import_files(model_file)):
        shutil.copyfile(file, Path(output_dir) / Path(file).name)
    model.config.auto_map[model_class._auto_class] = f"{Path(model_file).stem}.{model_class.__name__}"
    model.config.save_pretrained(output_dir)
