"""The one dataset loader of training (`towervision train --dataset`) and evaluation (`towervision eval --data`).

`data` may be:

* a Hub dataset id (with an optional config and revision);
* a folder written by `datasets`' `save_to_disk`: a `DatasetDict` (`dataset_dict.json`, one sub-folder per split)
  keeps its splits, a single `Dataset` (`state.json`) is one split;
* a folder of `data*.jsonl` files written by our tools (`data sample`, `translate`, `filter`, `synth`): those files
  are one split (their `report.json` and `rejected.jsonl` are not data);
* any other folder: the Hub's layout (`data/<split>-00000-of-00001.parquet`, or whatever `datasets.load_dataset(dir)`
  understands);
* a single `.parquet` / `.json` / `.jsonl` / `.csv` / `.arrow` file: one split.

A single `Dataset`, file or JSONL folder has no split name of its own: it is named `single_split`. Relative media
paths in JSON / JSONL rows (`images` / `videos` entries, see docs/sample-schema.md) are relative to the file's
folder, whatever the working folder.
"""

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from ..checkpoint.output import check_local_or_hub
from .jsonl import data_files_in, resolve_media_paths


FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


def source_kind(data: str) -> str:
    """`file`, `save_to_disk`, `jsonl` (a folder of `data*.jsonl` files), `directory` or `hub`."""
    if os.path.isfile(data):
        return "file"
    if os.path.isdir(data):
        folder = Path(data)
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            return "save_to_disk"
        return "jsonl" if data_files_in(folder) else "directory"
    return "hub"


def load_splits(
    data: str,
    config: str | None = None,
    revision: str | None = None,
    single_split: str = "train",
    split: str | None = None,
) -> tuple[DatasetDict, dict]:
    """The splits of `data` (see the module docstring) and a provenance record (source, kind, config, revision,
    rows per split). With `split`, a Hub id or folder loads only that split."""
    check_local_or_hub(data, "a local data file or folder, or a Hub dataset id")
    kind = source_kind(data)
    if kind in ("file", "jsonl"):
        files = [data] if kind == "file" else [str(file) for file in data_files_in(data)]
        extension = os.path.splitext(data)[1].lower() if kind == "file" else ".jsonl"
        if extension not in FILE_BUILDERS:
            raise ValueError(f"{data!r}: unsupported file type {extension!r} (use one of {sorted(FILE_BUILDERS)})")
        splits = load_dataset(FILE_BUILDERS[extension], data_files={single_split: files})
        media_columns = {"images", "videos"} & set(splits[single_split].column_names)
        if FILE_BUILDERS[extension] == "json" and media_columns:
            folder = os.path.dirname(os.path.abspath(files[0]))
            splits = splits.map(resolve_media_paths, fn_kwargs={"folder": folder}, desc="Resolving media paths")
    elif kind == "save_to_disk":
        splits = load_from_disk(data)
        if isinstance(splits, Dataset):
            splits = DatasetDict({single_split: splits})
    else:
        options = {} if kind == "directory" else {"revision": revision}
        if split is None:
            splits = load_dataset(data, config, **options)
        else:
            splits = DatasetDict({split: load_dataset(data, config, split=split, **options)})
    provenance = {"source": os.path.abspath(data) if kind != "hub" else data, "config": config, "kind": kind}
    provenance["revision"] = (revision or "main") if kind == "hub" else None
    provenance["rows"] = {name: dataset.num_rows for name, dataset in splits.items()}
    return splits, provenance


def load_split(data: str, split: str, config: str | None = None, revision: str | None = None) -> Dataset:
    """The split `split` of `data`; a single file or saved `Dataset` is that split. `ValueError` listing the
    available splits when `data` has no such split."""
    if source_kind(data) in ("hub", "directory"):
        try:
            return load_splits(data, config, revision, split=split)[0][split]
        except ValueError as error:  # datasets: "Unknown split ..." (it lists the available ones)
            raise ValueError(f"{data!r} has no split {split!r}: {error}") from error
    splits, _ = load_splits(data, config, revision, single_split=split)
    if split not in splits:
        raise ValueError(f"{data!r} has no split {split!r}; available splits: {list(splits)}")
    return splits[split]
