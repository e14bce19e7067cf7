"""The image newline beside a LoRA adapter: peft saves the adapter's tensors only, so a run that trains the newline
(a bare `nn.Parameter`, no module to wrap) saves it as `image_newline.safetensors` next to the adapter."""

import os

import torch
from safetensors.torch import load_file, save_file


NEWLINE_FILE = "image_newline.safetensors"


def find_image_newline(model: torch.nn.Module) -> torch.nn.Parameter | None:
    """The `image_newline` parameter of a TowerVision model (plain or peft-wrapped); None if it has none."""
    for name, param in model.named_parameters():
        if name.endswith("model.image_newline"):
            return param
    return None


def save_image_newline(model: torch.nn.Module, directory, state_dict: dict | None = None) -> bool:
    """Save a trained image newline into `directory`, from `state_dict` when given (a gathered FSDP state dict);
    False if the model has no newline or it is frozen."""
    newline = find_image_newline(model)
    if newline is None or not newline.requires_grad:
        return False
    if state_dict is not None:
        newline = next((value for key, value in state_dict.items() if key.endswith("model.image_newline")), newline)
    save_file({"image_newline": newline.detach().cpu().contiguous()}, os.path.join(directory, NEWLINE_FILE))
    return True


def restore_image_newline(model: torch.nn.Module, directory) -> bool:
    """Copy `directory/image_newline.safetensors` (saved beside a LoRA adapter) into the model; False if absent."""
    path = os.path.join(directory, NEWLINE_FILE)
    newline = find_image_newline(model)
    if not os.path.isfile(path) or newline is None:
        return False
    with torch.no_grad():
        newline.copy_(load_file(path)["image_newline"].to(newline.device, newline.dtype))
    return True
