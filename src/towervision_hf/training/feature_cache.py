"""Disk cache of frozen vision-tower features for stage 1 (projector alignment).

With the vision tower frozen its output for a tile never changes, so each tile is encoded once and read back on
every later pass (epochs, re-runs, ablations on the same images). The cache sits in front of the tower's `forward`
and only stores the hidden states the model reads (`config.vision_feature_layer`), so the projector, the newline
and everything after them run exactly as without it; the loss is the same.

Keys: a tile's key is the BLAKE2b hash of the exact pixel values the tower receives (shape, dtype and bytes), which
covers the image content and every processor setting (tiling, resize, normalisation). Entries live in a folder
named after the tower's identity: a hash of its weights, the selected feature layers and the dtype, so a different
tower, layer choice or precision never reads another's features.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers.modeling_outputs import BaseModelOutput

from ..checkpoint.weights import update_tensor_digest


def vision_tower_identity(vision_tower: torch.nn.Module, feature_layers: list[int]) -> str:
    """Hash of the tower's weights, the feature layers read from it and its dtype."""
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(json.dumps({"layers": feature_layers, "dtype": str(vision_tower.dtype)}).encode())
    for name, tensor in sorted(vision_tower.state_dict().items()):
        hasher.update(name.encode())
        update_tensor_digest(hasher, tensor)
    return hasher.hexdigest()


class VisionFeatureCache:
    """Per-tile disk cache of the selected hidden states of a frozen vision tower.

    Args:
        cache_dir (`str` or `os.PathLike`):
            Root folder; entries go to `cache_dir/<tower identity>/<key[:2]>/<key>.safetensors`.

    `attach(model)` wraps the tower of a TowerVision model (plain or wrapped by peft); `misses` counts the tiles the
    tower encoded, `hits` the tiles it did not have to encode.
    Writes are atomic (temporary file + rename), so several processes can share one folder.
    """

    def __init__(self, cache_dir):
        self.cache_dir = Path(cache_dir)
        self.hits = 0
        self.misses = 0
        self.folder: Path | None = None

    def attach(self, model) -> "VisionFeatureCache":
        backbone = model.get_base_model() if hasattr(model, "get_base_model") else model
        vision_tower = backbone.model.vision_tower
        if any(param.requires_grad for param in vision_tower.parameters()):
            raise ValueError(
                "vision_feature_cache needs a frozen vision tower (vision_lr: 0): a trained tower changes its features"
            )
        layers = backbone.config.vision_feature_layer
        self.feature_layers = layers if isinstance(layers, list) else [layers]
        self.num_hidden_states = backbone.config.vision_config.num_hidden_layers + 1
        self.folder = self.cache_dir / vision_tower_identity(vision_tower, self.feature_layers)
        self.folder.mkdir(parents=True, exist_ok=True)
        original_forward = vision_tower.forward

        def cached_forward(pixel_values, *args, **kwargs):
            return self._forward(original_forward, pixel_values, *args, **kwargs)

        vision_tower.forward = cached_forward
        return self

    def tile_key(self, tile: torch.Tensor) -> str:
        hasher = hashlib.blake2b(digest_size=20)
        update_tensor_digest(hasher, tile)
        return hasher.hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def _store(self, key: str, features: dict[str, torch.Tensor]) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(handle)
        save_file({name: tensor.contiguous().cpu() for name, tensor in features.items()}, temporary)
        os.replace(temporary, path)

    def _forward(self, original_forward, pixel_values: torch.Tensor, *args, **kwargs) -> BaseModelOutput:
        """The tower's output with only the feature layers filled in; cached tiles are not recomputed."""
        keys = [self.tile_key(tile) for tile in pixel_values]
        found = {key: load_file(self._path(key)) for key in dict.fromkeys(keys) if self._path(key).exists()}
        first_index = {key: index for index, key in reversed(list(enumerate(keys))) if key not in found}
        missing = sorted(first_index.values())  # one forward per distinct tile (a thumbnail can equal its tile)
        if missing:
            hidden_states = original_forward(
                pixel_values[missing], output_hidden_states=True, return_dict=True
            ).hidden_states
            for row, index in enumerate(missing):
                found[keys[index]] = {f"layer_{layer}": hidden_states[layer][row] for layer in self.feature_layers}
                self._store(keys[index], found[keys[index]])
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        device = pixel_values.device
        selected = [None] * self.num_hidden_states  # (num_tiles, patches, hidden) at each feature layer
        for layer in self.feature_layers:
            selected[layer] = torch.stack([found[key][f"layer_{layer}"].to(device) for key in keys])
        return BaseModelOutput(last_hidden_state=selected[self.feature_layers[-1]], hidden_states=tuple(selected))
