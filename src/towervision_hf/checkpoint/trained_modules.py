"""Save only the tensors a stage trained, beside a reference to its base, and compose them back into a full checkpoint.

Stage 1 trains the projector (and, in an anyres layout, the image newline): about 8 M of TowerVision-2B's 3.0 B
parameters, while a full save writes every tensor. `towervision train ... --save_trained_only true` writes instead:

- `trained_modules.safetensors`: the trained tensors (`requires_grad`), under the checkpoint's own names;
- `trained_modules.json`: the base the run started from (`model_name_or_path`, revision; `tiny` and its seed), and
  for every frozen tensor its dtype, shape and a BLAKE2b digest of its values as the run held them;
- config, generation config, remote code and processor, as a full save writes them.

`towervision merge STAGE_DIR OUT` ([`merge_trained_modules`]) streams the base tensor by tensor (`hub.weights`: peak
memory about the largest tensor), casts each frozen tensor to the run's dtype, checks it against its digest, puts the
trained tensors in and writes a plain checkpoint equal, tensor for tensor, to what the run would have saved in full.
"""

import fnmatch
import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .output import staged_output
from .weights import (
    DEFAULT_MAX_SHARD_SIZE,
    DTYPE_CODES,
    DTYPES_BY_CODE,
    HEAD_KEY,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    PlannedTensor,
    WeightReader,
    parse_size,
    read_header,
    read_json,
    update_tensor_digest,
    write_shards,
)


TRAINED_WEIGHTS_NAME = "trained_modules.safetensors"
TRAINED_INDEX_NAME = "trained_modules.json"
TRAINED_FORMAT = "towervision-trained-modules/1"


def tensor_digest(tensor: torch.Tensor) -> str:
    """BLAKE2b of a tensor's shape, dtype and bytes."""
    hasher = hashlib.blake2b(digest_size=16)
    update_tensor_digest(hasher, tensor)
    return hasher.hexdigest()


def is_full_weights(file_name: str) -> bool:
    """Whether `file_name` is (part of) a full model's safetensors weights."""
    shard = fnmatch.fnmatch(file_name, "model-*-of-*.safetensors")
    return shard or file_name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)


def is_trained_modules_folder(directory) -> bool:
    """Whether `directory` was written by `--save_trained_only` (it holds no full model)."""
    return (Path(directory) / TRAINED_INDEX_NAME).is_file()


def require_full_model(folder) -> None:
    """`ValueError` when `folder` holds what a `--save_trained_only` run saved rather than a model."""
    if is_trained_modules_folder(folder):
        raise ValueError(
            f"{folder} holds only the tensors a stage trained (--save_trained_only): compose the full checkpoint with "
            f"`towervision merge {folder} OUT` and pass OUT"
        )


def discard_trained_modules(output_dir) -> None:
    """Remove the files of an earlier `--save_trained_only` save from `output_dir`, where a full model now lies."""
    for name in (TRAINED_WEIGHTS_NAME, TRAINED_INDEX_NAME):
        (Path(output_dir) / name).unlink(missing_ok=True)


def save_trained_modules(model, processor, output_dir, base: dict) -> dict[str, torch.Tensor]:
    """Write the trained tensors of `model`, the reference `base` and digests of its frozen tensors, its config,
    generation config, remote code and `processor` into `output_dir`; return the trained tensors (on CPU).

    `base` names what the run loaded: `{"model_name_or_path": ..., "revision": ...}`, or `tiny` with its `seed`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    trained_names = {name for name, param in model.named_parameters() if param.requires_grad}
    state_dict = model.state_dict()
    if model.config.tie_word_embeddings:
        state_dict.pop(HEAD_KEY, None)  # tied to the embeddings: a full save leaves it out too
    trained, frozen = {}, {}
    for name, tensor in state_dict.items():
        if name in trained_names:
            trained[name] = tensor.detach().cpu().contiguous()
        else:
            digest = tensor_digest(tensor)
            frozen[name] = {"dtype": DTYPE_CODES[tensor.dtype], "shape": list(tensor.shape), "digest": digest}
    for path in output_dir.iterdir():  # an earlier full save there is another model: overwritten, as a save would
        if path.is_file() and is_full_weights(path.name):
            path.unlink()
    model.save_pretrained(output_dir, state_dict={})  # config, generation config and remote code: no weights
    processor.save_pretrained(output_dir)
    save_file(trained, output_dir / TRAINED_WEIGHTS_NAME, metadata={"format": "pt"})
    index = {
        "format": TRAINED_FORMAT,
        "base": base,
        "trained": {name: list(tensor.shape) for name, tensor in trained.items()},
        "frozen": frozen,
    }
    (output_dir / TRAINED_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return trained


def read_trained_modules(stage_dir) -> tuple[dict, dict[str, torch.Tensor]]:
    """The index (`trained_modules.json`) and trained tensors of a `--save_trained_only` folder, checked against
    each other."""
    stage_dir = Path(stage_dir)
    index_path, weights_path = stage_dir / TRAINED_INDEX_NAME, stage_dir / TRAINED_WEIGHTS_NAME
    for path in (index_path, weights_path):
        if not path.is_file():
            raise ValueError(f"{path} is missing: {stage_dir} is not a complete --save_trained_only output")
    index = read_json(index_path)
    if index.get("format") != TRAINED_FORMAT:
        raise ValueError(f"{index_path} has format {index.get('format')!r}, expected {TRAINED_FORMAT!r}")
    for key in ("base", "trained", "frozen"):
        if not isinstance(index.get(key), dict):
            raise ValueError(f"{index_path} is corrupt: {key!r} is missing or not a JSON object")
    if not isinstance(index["base"].get("model_name_or_path"), str):
        raise ValueError(f"{index_path} is corrupt: its base names no model_name_or_path")
    read_header(weights_path)  # a truncated file is named here, not by the safetensors library
    trained = load_file(weights_path)
    listed = index["trained"]
    if set(trained) != set(listed):
        raise ValueError(
            f"{weights_path} holds {sorted(set(trained) - set(listed))} not listed in {index_path}, "
            f"and lacks {sorted(set(listed) - set(trained))}"
        )
    for name, tensor in trained.items():
        if list(tensor.shape) != listed[name]:
            raise ValueError(
                f"{name} has shape {list(tensor.shape)} in {weights_path}, {index_path} says {listed[name]}"
            )
    return index, trained


def _checked_base_tensor(reader: WeightReader, name: str, expected: dict):
    """`parts` of the base's `name` cast to the run's dtype, after checking it is the tensor the run held frozen."""

    def parts():
        tensor = reader.get(name)
        dtype = DTYPES_BY_CODE[expected["dtype"]]
        if tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        if tensor_digest(tensor) != expected["digest"]:
            raise ValueError(
                f"tensor {name} in {reader.checkpoint / reader.entries[name].file} differs from the one the stage was "
                "trained with: this is not the stage's base (pass the right one with --base)"
            )
        yield tensor

    return parts


def plan_merge(index: dict, trained: dict[str, torch.Tensor], reader: WeightReader) -> list[PlannedTensor]:
    """Every tensor of the full checkpoint in the run's order: trained ones from `trained`, frozen ones streamed from
    the base `reader` (checked by name, shape and, when written, digest)."""
    base, frozen = reader.checkpoint, index["frozen"]
    missing = [name for name in frozen if name not in reader.entries]
    if missing:
        raise ValueError(f"base {base} lacks {len(missing)} tensor(s) the stage was trained with, e.g. {missing[:3]}")
    unknown = [name for name in reader.entries if name not in frozen and name not in trained and name != HEAD_KEY]
    if unknown:
        raise ValueError(f"base {base} holds {len(unknown)} tensor(s) the stage's model had not, e.g. {unknown[:3]}")
    planned = []
    for name, expected in frozen.items():
        entry = reader.entries[name]
        if list(entry.shape) != expected["shape"]:
            raise ValueError(
                f"tensor {name} has shape {list(entry.shape)} in {base / entry.file}, the stage was trained with "
                f"{expected['shape']}"
            )
        parts = _checked_base_tensor(reader, name, expected)
        planned.append(PlannedTensor(name, expected["dtype"], entry.shape, parts))
    for name, tensor in trained.items():
        code = DTYPE_CODES[tensor.dtype]
        planned.append(PlannedTensor(name, code, tuple(tensor.shape), lambda tensor=tensor: [tensor]))
    return planned


def merge_trained_modules(stage_dir, base_dir, output, max_shard_size=DEFAULT_MAX_SHARD_SIZE) -> list[str]:
    """Compose the base checkpoint folder `base_dir` and the trained tensors of `stage_dir` into a full checkpoint in
    `output` (absent or empty); return the weight files written.

    The output is written in a temporary sibling folder and renamed into place once complete (`staged_output`): a
    base that turns out not to be the stage's (a digest differs) leaves nothing behind.
    """
    stage_dir = Path(stage_dir)
    index, trained = read_trained_modules(stage_dir)
    planned = plan_merge(index, trained, WeightReader(Path(base_dir)))
    with staged_output(output, [stage_dir, base_dir]) as staging:
        for path in stage_dir.iterdir():
            if path.is_file() and path.name not in (TRAINED_WEIGHTS_NAME, TRAINED_INDEX_NAME):
                shutil.copy2(path, staging / path.name)
        files = write_shards(planned, staging, parse_size(max_shard_size))
    return files
