"""Safetensors weights of a checkpoint folder: read the layout from the file headers, copy, re-shard or rewrite it.

Everything streams tensor by tensor: `write_shards` writes each file's header from the planned names, dtypes and
shapes, then the tensors one at a time, read lazily (`safe_open`) and freed once written. Peak memory is about the
largest tensor whatever the model's size, so a 9B checkpoint can be re-sharded (`stage_weights`), composed
(`towervision init`) or converted (`towervision convert` / `export`) on a modest machine.
"""

import json
import math
import os
import shutil
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch


SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
SHARD_NAME = "model-{index:05d}-of-{total:05d}.safetensors"
DEFAULT_MAX_SHARD_SIZE = "5GB"
DTYPE_CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}  # fmt: skip
DTYPES_BY_CODE = {code: dtype for dtype, code in DTYPE_CODES.items()}
# the floating-point dtypes a checkpoint may be cast to, by the name the CLI and configs use
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EMBED_KEY = "model.language_model.embed_tokens.weight"
HEAD_KEY = "lm_head.weight"


def torch_dtype(name: str | None):
    """`None` / `"auto"` as given, else the `torch.dtype` of a name of `DTYPES`."""
    return name if name in (None, "auto") else DTYPES[name]


def dtype_name(code: str | None) -> str:
    """The torch name of a safetensors dtype code (`"BF16"` -> `"bfloat16"`); the code itself when unknown."""
    dtype = DTYPES_BY_CODE.get(code or "")
    return str(dtype).removeprefix("torch.") if dtype is not None else code or "unknown"


def update_tensor_digest(hasher, tensor: torch.Tensor) -> None:
    """Feed a tensor's shape, dtype and bytes to a `hashlib` hasher (the bytes are viewed, not copied)."""
    tensor = tensor.detach().contiguous().cpu()
    hasher.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
    hasher.update(tensor.reshape(-1).view(torch.uint8).numpy() if tensor.numel() else b"")


@dataclass(frozen=True)
class TensorEntry:
    name: str
    file: str
    num_bytes: int
    num_elements: int
    dtype: str  # safetensors dtype code: F32, BF16, F16, ...
    shape: tuple[int, ...]
    offset: int = 0  # where its bytes start in the file


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


def read_json(path: Path) -> dict:
    """The JSON object stored in `path`; `ValueError` naming the file if it is not one."""
    try:
        value = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}): the file is corrupt or truncated") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file (tensor names -> dtype, shape, data_offsets; plus `__metadata__`) and
    the file offset its data_offsets count from.

    The one place safetensors headers are read: a header length beyond the file, a header that is not JSON, an
    unknown dtype, or a tensor whose bytes do not fit its shape or lie beyond the file end raise a `ValueError`
    naming the file (a truncated download, an interrupted save), before anything is allocated or written.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is not a safetensors file: {size} bytes, shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > size - 8:
            raise ValueError(
                f"{path} is truncated or not a safetensors file: its header claims {length} bytes, the file has {size}"
            )
        header_bytes = handle.read(length)
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is corrupt: its safetensors header is not a JSON object")
    data_start, data_size = 8 + length, size - 8 - length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            (start, end), dtype, shape = info["data_offsets"], info["dtype"], info["shape"]
            num_elements = math.prod(shape)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path} is corrupt: tensor {name!r} has a malformed header entry {info!r}") from None
        if dtype not in DTYPES_BY_CODE:
            raise ValueError(f"{path}: tensor {name!r} has dtype {dtype!r}, not one of {sorted(DTYPES_BY_CODE)}")
        if not 0 <= start <= end or end - start != num_elements * DTYPES_BY_CODE[dtype].itemsize:
            raise ValueError(
                f"{path} is corrupt: tensor {name!r} spans bytes {start}-{end}, its shape {shape} needs "
                f"{num_elements * DTYPES_BY_CODE[dtype].itemsize}"
            )
        if end > data_size:
            raise ValueError(
                f"{path} is truncated: tensor {name!r} ends at byte {data_start + end}, the file has {size}"
            )
    return header, data_start


def weight_files(checkpoint: Path) -> list[str]:
    """The safetensors files of `checkpoint`, in index order; `ValueError` if there are none or some are missing."""
    index_path = checkpoint / SAFE_WEIGHTS_INDEX_NAME
    if index_path.is_file():
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index_path} has no weight_map object")
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
        header, data_start = read_header(checkpoint / file)
        header.pop("__metadata__", None)
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            if name in seen:
                raise ValueError(f"tensor {name!r} is stored twice in {checkpoint}")
            seen.add(name)
            start, end = info["data_offsets"]
            num_elements = 1
            for dim in info["shape"]:
                num_elements *= dim
            entries.append(
                TensorEntry(
                    name, file, end - start, num_elements, info["dtype"], tuple(info["shape"]), data_start + start
                )
            )
    return entries


def plan_shards(entries: list, max_shard_size: int) -> list[list]:
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

    reader = WeightReader(checkpoint)
    planned = [PlannedTensor(entry.name, entry.dtype, entry.shape, reader.loader(entry.name)) for entry in entries]
    return write_shards(planned, output_dir, limit)


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor to write: its name, safetensors dtype code and shape, and `parts()`, which produces it.

    `parts()` yields tensors of that dtype whose bytes, one after the other, are the tensor's (row blocks of a
    grown embedding, or the whole tensor); it is called only when the tensor is written.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    parts: Callable[[], Iterable[torch.Tensor]]

    @property
    def num_bytes(self) -> int:
        num_elements = 1
        for dim in self.shape:
            num_elements *= dim
        return num_elements * DTYPES_BY_CODE[self.dtype].itemsize


class WeightReader:
    """Lazy access to the tensors of a (sharded) safetensors checkpoint folder, one tensor in memory at a time.

    Tensors are read with plain file reads at the offsets of the headers, not memory-mapped: a mapping would keep
    every page read so far in the process's resident memory until the file is closed.
    """

    def __init__(self, checkpoint: Path):
        self.checkpoint = Path(checkpoint)
        self.entries = {entry.name: entry for entry in tensor_entries(self.checkpoint)}

    def get(self, name: str) -> torch.Tensor:
        entry = self.entries[name]
        data = bytearray(entry.num_bytes)
        with open(self.checkpoint / entry.file, "rb") as handle:
            handle.seek(entry.offset)
            if handle.readinto(data) != entry.num_bytes:
                raise ValueError(f"{self.checkpoint / entry.file} is truncated: {name} is incomplete")
        if not data:
            return torch.empty(entry.shape, dtype=DTYPES_BY_CODE[entry.dtype])
        return torch.frombuffer(data, dtype=DTYPES_BY_CODE[entry.dtype]).reshape(entry.shape)

    def loader(self, name: str, dtype: torch.dtype | None = None) -> Callable[[], list[torch.Tensor]]:
        """`parts` for `PlannedTensor`: the stored tensor, cast to `dtype` when given."""
        return lambda: [self.get(name) if dtype is None else self.get(name).to(dtype)]


def write_shards(planned: list[PlannedTensor], output_dir: Path, max_shard_size: int | None) -> list[str]:
    """Write `planned` tensors, in order, into `model.safetensors` or `model-0000i-of-0000n.safetensors` shards of
    at most `max_shard_size` bytes (`None`: one file) plus the index; return the file names written."""
    output_dir = Path(output_dir)
    shards = plan_shards(planned, max_shard_size) if max_shard_size is not None else [planned]
    if len(shards) == 1:
        names = [SAFE_WEIGHTS_NAME]
    else:
        names = [SHARD_NAME.format(index=i + 1, total=len(shards)) for i in range(len(shards))]
    for name, shard in zip(names, shards):
        write_safetensors(output_dir / name, shard)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(tensor.num_bytes for tensor in planned)},
            "weight_map": {tensor.name: name for name, shard in zip(names, shards) for tensor in shard},
        }
        (output_dir / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        names.append(SAFE_WEIGHTS_INDEX_NAME)
    return names


def write_safetensors(path: Path, planned: list[PlannedTensor]) -> None:
    """One safetensors file: the header from the plan, then each tensor's bytes, produced and freed one at a time."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for tensor in planned:
        header[tensor.name] = {
            "dtype": tensor.dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + tensor.num_bytes]
        }  # fmt: skip
        offset += tensor.num_bytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header_bytes)))
        handle.write(header_bytes)
        for tensor in planned:
            written = 0
            for part in tensor.parts():
                if DTYPE_CODES[part.dtype] != tensor.dtype:
                    raise ValueError(f"{tensor.name}: produced {part.dtype}, planned {tensor.dtype}")
                data = part.contiguous().reshape(-1).view(torch.uint8).numpy()
                handle.write(memoryview(data))
                written += data.nbytes
                del part, data
            if written != tensor.num_bytes:
                raise ValueError(f"{tensor.name}: produced {written} bytes, planned {tensor.num_bytes}")
