"""The local on-disk form of samples: `data*.jsonl` files of schema rows whose media are files next to them.

Media `path`s in a JSONL file are relative to the file's folder (absolute paths are kept as they are); media bytes are
written once under `media/<sha256>.<ext>`. Rows may carry extra keys (translate/filter bookkeeping such as
`translation`); readers of training data drop them. This is the format of the embedded sample, of `translate`,
`filter` and `synth` outputs, and of the `local` source adapter.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

from .schema import MEDIA_KEYS


MALFORMED_KEY = "__malformed__"
_MAGIC = (
    (b"\x89PNG", ".png"),
    (b"\xff\xd8", ".jpg"),
    (b"GIF8", ".gif"),
    (b"RIFF", ".webp"),
    (b"\x1aE\xdf\xa3", ".webm"),
)


def media_extension(data: bytes) -> str:
    if data[4:8] == b"ftyp":
        return ".mp4"
    return next((extension for magic, extension in _MAGIC if data.startswith(magic)), ".bin")


def data_files_in(folder) -> list[Path]:
    """The `data*.jsonl` files directly inside `folder`, sorted: the rows our tools write (not their `report.json`,
    `rejected.jsonl` or media)."""
    return sorted(Path(folder).glob("data*.jsonl"))


def resolve_media_paths(row: dict, folder) -> dict:
    """`row` with the relative `path`s of its image and video entries made absolute against `folder` (the folder of
    the JSONL file it was read from); absolute paths, bytes and URLs are kept."""
    for column in ("images", "videos"):
        for entry in row.get(column) or []:
            if isinstance(entry, dict) and entry.get("path") and not os.path.isabs(entry["path"]):
                entry["path"] = str((Path(folder) / entry["path"]).resolve())
    return row


def jsonl_files(path) -> list[Path]:
    """`path` itself when it is a file, else the `data*.jsonl` files directly inside the folder, sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = data_files_in(path)
        if files:
            return files
        raise FileNotFoundError(f"no data*.jsonl file in {path}")
    raise FileNotFoundError(f"{path} does not exist")


def read_jsonl(path, resolve_media: bool = True):
    """Yield the rows of `path` (file or folder). A line that is not a JSON object yields `{MALFORMED_KEY: why}`.

    With `resolve_media`, relative media paths become absolute (relative to each file's folder).
    """
    for file in jsonl_files(path):
        with open(file, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    yield {MALFORMED_KEY: f"{file.name}:{line_number}: {error}"}
                    continue
                if not isinstance(row, dict):
                    yield {MALFORMED_KEY: f"{file.name}:{line_number}: a JSON {type(row).__name__}, not an object"}
                    continue
                yield resolve_media_paths(row, file.parent) if resolve_media else row


def _portable_entry(entry: dict, out_dir: Path, media_dir: Path, root: Path, bring_media: bool = False) -> dict:
    entry = {key: entry.get(key) for key in MEDIA_KEYS}
    if bring_media and entry["path"] and not entry["bytes"] and not Path(entry["path"]).resolve().is_relative_to(root):
        entry["path"] = str(_bring(Path(entry["path"]), media_dir))
    if entry["bytes"]:
        data = bytes(entry["bytes"])
        target = media_dir / f"{hashlib.sha256(data).hexdigest()}{media_extension(data)}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, lambda temporary: temporary.write_bytes(data))
        entry["bytes"], entry["path"] = None, str(target)
    if entry["path"]:
        absolute = Path(entry["path"]).resolve()
        inside = absolute.is_relative_to(root.resolve())
        entry["path"] = os.path.relpath(absolute, out_dir.resolve()) if inside else str(absolute)
    return entry


def _bring(source: Path, media_dir: Path) -> Path:
    """`source` hard-linked (copied across file systems) to `media_dir/<sha256>.<ext>`, named by its content."""
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    target = media_dir / f"{digest.hexdigest()}{source.suffix.lower()}"
    if not target.exists():
        media_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except FileExistsError:  # another shard brought it meanwhile
            pass
        except OSError:
            _write_atomically(target, lambda temporary: shutil.copyfile(source, temporary))
    return target


def _write_atomically(target: Path, write) -> None:
    """`write(temporary)` then rename into `target`: a killed run or a concurrent shard never leaves a partial file
    under a content-addressed name (which later runs would trust as complete)."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def jsonl_line(row: dict, out_dir, media_dir=None, bring_media: bool = False) -> str:
    """`row` as one line of a JSONL file in `out_dir` (newline included); its media as `write_jsonl` writes them."""
    out_dir = Path(out_dir)
    media_dir = Path(media_dir) if media_dir is not None else out_dir / "media"
    root = out_dir if media_dir.resolve().is_relative_to(out_dir.resolve()) else media_dir.parent
    row = dict(row)
    for column in ("images", "videos"):
        if column in row:
            row[column] = [
                _portable_entry(entry, out_dir, media_dir, root.resolve(), bring_media) for entry in row[column]
            ]
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(rows, out_dir, filename: str = "data.jsonl", media_dir=None, bring_media: bool = False) -> int:
    """Write rows to `out_dir/filename` and media bytes to `media_dir` (default `out_dir/media`).

    Media paths inside `out_dir` or `media_dir`'s parent are written relative to `out_dir`, others stay absolute;
    with `bring_media`, media files outside are hard-linked (or copied) into `media_dir` first, so that the folder
    is self-contained (the `translate`, `filter` and `synth` outputs). Returns the number of rows written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out_dir / filename, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(jsonl_line(row, out_dir, media_dir, bring_media))
            count += 1
    return count
