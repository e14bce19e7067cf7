"""Safetensors weights of a checkpoint folder: read the layout from the file headers, copy or re-shard it.

Re-sharding streams one shard at a time (peak memory: one shard), so a 9B checkpoint saved as a single 18 GB file
can be split into Hub-friendly shards on a modest machine. Tensors keep their names, dtypes and order.
"""

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file


SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
SHARD_NAME = "model-{index:05d}-of-{total:05d}.safetensors"


@dataclass(frozen=True)
class TensorEntry:
    name: str
    file: str
    num_bytes: int
    num_elements: int
    dtype: str  # safetensors dtype code: F32, BF16, F16, ...
    shape: tuple[int, ...]


def parse_size(size: int | str) -> int:
    """Bytes in `size`: an int, or a string such as `"5GB"`, `"500MB"`, `"2GiB"`."""
    if isinstance(size, int):
        value = size
    else:
        text = size.strip().upper().replace(" ", "")
        units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
        unit = next((unit for unit in units if text.endswith(unit)), None)
        number = text[: -len(unit)] if unit else text
        try:
            value = int(float(number) * units.get(unit, 1))
        except ValueError:
            raise ValueError(f"max_shard_size {size!r} is not a size such as 5GB, 500MB or 2GiB") from None
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file (tensor names -> dtype, shape, data_offsets; plus `__metadata__`)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


def weight_files(checkpoint: Path) -> list[str]:
    """The safetensors files of `checkpoint`, in index order; `ValueError` if there are none or some are missing."""
    index_path = checkpoint / SAFE_WEIGHTS_INDEX_NAME
    if index_path.is_file():
        weight_map = json.loads(index_path.read_text())["weight_map"]
        files = list(dict.fromkeys(weight_map.values()))
        missing = [name for name in files if not (checkpoint / name).is_file()]
        if missing:
            raise ValueError(f"{index_path} lists shards that are not in the folder: {missing}")
        return files
    if (checkpoint / SAFE_WEIGHTS_NAME).is_file():
        return [SAFE_WEIGHTS_NAME]
    others = sorted(path.name for path in checkpoint.glob("*.bin")) + sorted(
        path.name for path in checkpoint.glob("*.pt")
    )
    hint = f" (found {others}: only safetensors weights are published)" if others else ""
    raise ValueError(f"{checkpoint} holds no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME}{hint}")


def tensor_entries(checkpoint: Path) -> list[TensorEntry]:
    """Every tensor of the checkpoint with its file and size, in file order then header offset order."""
    entries, seen = [], set()
    for file in weight_files(checkpoint):
        header = read_header(checkpoint / file)
        header.pop("__metadata__", None)
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            if name in seen:
                raise ValueError(f"tensor {name!r} is stored twice in {checkpoint}")
            seen.add(name)
            start, end = info["data_offsets"]
            num_elements = 1
            for dim in info["shape"]:
                num_elements *= dim
            entries.append(TensorEntry(name, file, end - start, num_elements, info["dtype"], tuple(info["shape"])))
    return entries


def plan_shards(entries: list[TensorEntry], max_shard_size: int) -> list[list[TensorEntry]]:
    """Group tensors in order into shards of at most `max_shard_size` bytes (a larger tensor gets its own shard)."""
    shards, current, current_size = [], [], 0
    for entry in entries:
        if current and current_size + entry.num_bytes > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(entry)
        current_size += entry.num_bytes
    if current:
        shards.append(current)
    return shards


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link when possible (the staged copy is never written to), else copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def stage_weights(checkpoint: Path, output_dir: Path, max_shard_size: int | str | None) -> list[str]:
    """Put the checkpoint's weights into `output_dir`; return the file names written.

    Files are linked as they are when every file fits in `max_shard_size` (or it is `None`); otherwise all tensors
    are re-sharded into `model-0000i-of-0000n.safetensors` files with a fresh `model.safetensors.index.json`.
    """
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    entries = tensor_entries(checkpoint)
    files = weight_files(checkpoint)
    limit = parse_size(max_shard_size) if max_shard_size is not None else None
    too_large = limit is not None and any((checkpoint / file).stat().st_size > limit for file in files)
    if not too_large:
        names = list(files)
        for file in files:
            _link_or_copy(checkpoint / file, output_dir / file)
        if (checkpoint / SAFE_WEIGHTS_INDEX_NAME).is_file():
            shutil.copyfile(checkpoint / SAFE_WEIGHTS_INDEX_NAME, output_dir / SAFE_WEIGHTS_INDEX_NAME)
            names.append(SAFE_WEIGHTS_INDEX_NAME)
        return names

    shards = plan_shards(entries, limit)
    if len(shards) == 1:
        names = [SAFE_WEIGHTS_NAME]
    else:
        names = [SHARD_NAME.format(index=i + 1, total=len(shards)) for i in range(len(shards))]
    handles = {}
    try:
        for name, shard in zip(names, shards):
            tensors = {}
            for entry in shard:
                if entry.file not in handles:
                    handles[entry.file] = safe_open(checkpoint / entry.file, framework="pt")
                tensors[entry.name] = handles[entry.file].get_tensor(entry.name)
            save_file(tensors, output_dir / name, metadata={"format": "pt"})
            del tensors
    finally:
        handles.clear()
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(entry.num_bytes for entry in entries)},
            "weight_map": {entry.name: name for name, shard in zip(names, shards) for entry in shard},
        }
        (output_dir / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        names.append(SAFE_WEIGHTS_INDEX_NAME)
    return names
