"""The one sample schema for everything that flows into TowerVision training (see docs/sample-schema.md).

A row::

    {
        "id": str,                      # unique within its source
        "source": str,                  # the recipe's source name, e.g. "pixmo_cap"
        "language": str,                # canonical code of one of the TowerVision languages (languages.py)
        "messages": [                   # [system,] then user/assistant alternating, ending with assistant
            {"role": "system" | "user" | "assistant",
             "content": [{"type": "text", "text": str}
                         | {"type": "image", "text": None}
                         | {"type": "video", "text": None}]},
        ],
        "images": [media],              # one entry per image block, in order of appearance
        "videos": [media],              # one entry per video block, in order of appearance
    }
    media = {"bytes": bytes | None, "path": str | None, "url": str | None}   # at least one set

Media blocks appear only in user turns; text blocks never contain `<image>` / `<video>` placeholders (the chat
template inserts the model's tokens for media blocks). This is the conversational shape TRL and transformers chat
templates consume, with `text` set to None on media blocks so that every block has the same Arrow struct.
"""

import io
import os

import numpy as np
import torch
from datasets import Features, List, Value
from PIL import Image

from ..model.video_processing_towervision import read_video_pyav, uniform_frame_indices
from .fetch import UrlFetcher
from .languages import LANGUAGES


COLUMNS = ("id", "source", "language", "messages", "images", "videos")
ROLES = ("system", "user", "assistant")
BLOCK_TYPES = ("text", "image", "video")
MEDIA_KEYS = ("bytes", "path", "url")
PLACEHOLDERS = ("<image>", "<video>")


def media_features() -> dict:
    return {"bytes": Value("binary"), "path": Value("string"), "url": Value("string")}


def to_features() -> Features:
    """The `datasets.Features` of a sample row."""
    block = {"type": Value("string"), "text": Value("string")}
    return Features(
        {
            "id": Value("string"),
            "source": Value("string"),
            "language": Value("string"),
            "messages": List({"role": Value("string"), "content": List(block)}),
            "images": List(media_features()),
            "videos": List(media_features()),
        }
    )


def text_block(text: str) -> dict:
    return {"type": "text", "text": text}


def image_block() -> dict:
    return {"type": "image", "text": None}


def video_block() -> dict:
    return {"type": "video", "text": None}


def message(role: str, *content: dict | str) -> dict:
    """A message from blocks; plain strings become text blocks."""
    return {"role": role, "content": [text_block(block) if isinstance(block, str) else block for block in content]}


def media(bytes: bytes | None = None, path: str | None = None, url: str | None = None) -> dict:
    return {"bytes": bytes, "path": path, "url": url}


def make_sample(id, source, language, messages, images=(), videos=()) -> dict:
    """Assemble a row, filling absent media keys and block `text` with None so every row has the same struct."""
    return {
        "id": str(id),
        "source": source,
        "language": language,
        "messages": [
            {
                "role": turn["role"],
                "content": [{"type": block["type"], "text": block.get("text")} for block in turn["content"]],
            }
            for turn in messages
        ],
        "images": [{key: entry.get(key) for key in MEDIA_KEYS} for entry in images],
        "videos": [{key: entry.get(key) for key in MEDIA_KEYS} for entry in videos],
    }


def count_blocks(messages: list, block_type: str) -> int:
    return sum(block.get("type") == block_type for turn in messages for block in turn.get("content") or [])


def _media_problems(entries, column: str) -> list[str]:
    if not isinstance(entries, list):
        return [f"{column} is {type(entries).__name__}, expected a list"]
    problems = []
    for index, entry in enumerate(entries):
        where = f"{column}[{index}]"
        if not isinstance(entry, dict) or set(entry) - set(MEDIA_KEYS):
            problems.append(f"{where} must be a dict with keys {MEDIA_KEYS}, got {entry!r:.80}")
            continue
        data, path, url = (entry.get(key) for key in MEDIA_KEYS)
        if not (data or path or url):
            problems.append(f"{where} has none of bytes, path, url")
        if data is not None and not isinstance(data, (bytes, bytearray)):
            problems.append(f"{where}.bytes is {type(data).__name__}, expected bytes")
        if path is not None and not isinstance(path, str):
            problems.append(f"{where}.path is {type(path).__name__}, expected str")
        if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            problems.append(f"{where}.url {url!r:.80} is not an http(s) URL")
    return problems


def _message_problems(messages) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["messages is empty" if isinstance(messages, list) else "messages is not a list"]
    problems = []
    roles = [turn.get("role") if isinstance(turn, dict) else None for turn in messages]
    body = roles[1:] if roles[0] == "system" else roles
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    if body != expected[: len(body)] or not body or body[-1] != "assistant":
        problems.append(f"roles {roles} are not [system,] user, assistant, ... alternating and ending with assistant")
    for turn_index, turn in enumerate(messages):
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            problems.append(f"messages[{turn_index}] must be a dict with keys role, content")
            continue
        content = turn["content"]
        if not isinstance(content, list) or not content:
            problems.append(f"messages[{turn_index}] ({turn['role']}) has no content blocks")
            continue
        for block_index, block in enumerate(content):
            where = f"messages[{turn_index}].content[{block_index}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in BLOCK_TYPES:
                problems.append(f"{where} has type {kind!r}, expected one of {BLOCK_TYPES}")
            elif kind == "text":
                text = block.get("text")
                if not isinstance(text, str) or not text.strip():
                    problems.append(f"{where} is a text block without text")
                elif any(placeholder in text for placeholder in PLACEHOLDERS):
                    problems.append(f"{where} contains a media placeholder; use image/video blocks instead")
            else:
                if block.get("text") is not None:
                    problems.append(f"{where} is a {kind} block with text")
                if turn["role"] != "user":
                    problems.append(f"{where} is a {kind} block in a {turn['role']} turn; media go in user turns")
    return problems


def validate_sample(row) -> list[str]:
    """Every way `row` departs from the schema, as readable sentences; an empty list means the row is valid."""
    if not isinstance(row, dict):
        return [f"row is {type(row).__name__}, expected dict"]
    problems = []
    missing = [column for column in COLUMNS if column not in row]
    extra = [column for column in row if column not in COLUMNS]
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    for column in ("id", "source"):
        if column in row and not (isinstance(row[column], str) and row[column]):
            problems.append(f"{column} {row[column]!r} is not a non-empty string")
    if "language" in row and row["language"] not in LANGUAGES:
        problems.append(f"language {row['language']!r} is not a canonical code ({', '.join(LANGUAGES)})")
    if "messages" in row:
        problems += _message_problems(row["messages"])
    for column, block_type in (("images", "image"), ("videos", "video")):
        if column not in row:
            continue
        problems += _media_problems(row[column], column)
        if isinstance(row[column], list) and isinstance(row.get("messages"), list):
            blocks = count_blocks([turn for turn in row["messages"] if isinstance(turn, dict)], block_type)
            if blocks != len(row[column]):
                problems.append(f"{blocks} {block_type} blocks but {len(row[column])} {column} entries")
    return problems


def as_media(value, root: str | None = None) -> dict:
    """A media entry from what rows and benchmarks store: a schema or `datasets` dict (`{"bytes", "path"[, "url"]}`),
    raw bytes or a path; a relative path is taken under `root` when given."""
    if isinstance(value, dict):
        entry = {key: value.get(key) for key in MEDIA_KEYS}
    elif isinstance(value, (bytes, bytearray)):
        entry = media(bytes=bytes(value))
    elif isinstance(value, str) and value:
        entry = media(path=value)
    else:
        raise ValueError(f"{type(value).__name__} {value!r:.80} is not a media entry (bytes, path or url)")
    if root is not None and entry["path"] and not entry["bytes"]:
        entry["path"] = os.path.join(root, entry["path"])
    return entry


def media_bytes(entry: dict, fetcher=None) -> bytes:
    """The raw bytes of a media entry: its bytes, else its file, else its URL through `fetcher` (a `UrlFetcher`)."""
    if entry.get("bytes"):
        return bytes(entry["bytes"])
    if entry.get("path"):
        with open(entry["path"], "rb") as handle:
            return handle.read()
    if entry.get("url"):
        return (fetcher or UrlFetcher()).fetch(entry["url"])
    raise ValueError(f"media entry {entry!r:.120} has none of bytes, path, url")


def load_image(value, fetcher=None, root: str | None = None) -> Image.Image:
    """Decode an image to an RGB PIL image: a media entry, raw bytes or a path (see [`as_media`]), or a PIL image.

    This is the one image decoder of training, the demo and evaluation. Missing or undecodable images raise a
    `ValueError` (evaluation counts them as skipped).
    """
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    entry = as_media(value, root)
    try:
        with Image.open(io.BytesIO(media_bytes(entry, fetcher))) as image:
            return image.convert("RGB")
    except OSError as error:  # a missing file, or bytes PIL cannot identify or read
        raise decode_error("decode image", entry, error) from error


def decode_error(what: str, entry: dict, error: Exception) -> ValueError:
    """The decoders' error for a media entry: `cannot {what} {path, URL or "bytes"}: {error type}: {error}`."""
    name = entry.get("path") or entry.get("url") or "bytes"
    return ValueError(f"cannot {what} {name}: {type(error).__name__}: {error}")


def load_images(row: dict, fetcher=None) -> list[Image.Image]:
    return [load_image(entry, fetcher) for entry in row["images"]]


def video_input(entry: dict, fetcher=None) -> str | bytes:
    """What a video decoder opens: the local path when there is one (no copy), else the bytes."""
    if not entry.get("bytes") and entry.get("path") and os.path.exists(entry["path"]):
        return entry["path"]
    return media_bytes(entry, fetcher)


def load_video_frames(value, num_frames: int | None = None, fetcher=None, root: str | None = None) -> np.ndarray:
    """Decode a video with PyAV to uint8 RGB frames of shape (frames, height, width, 3): a media entry, raw bytes or a
    path (see [`as_media`]); frames already decoded (an array or tensor) pass through unchanged.

    With `num_frames`, that many frames are taken uniformly over the video (the video processor's rule: indices
    `linspace(0, n-1)` rounded, short clips repeat frames) and only those are decoded; otherwise every frame.
    This is the one video decoder of training, the demo and evaluation. Missing or undecodable media raise a
    `ValueError` naming the video.
    """
    if isinstance(value, np.ndarray) or torch.is_tensor(value):
        return value
    entry = as_media(value, root)
    sample = (
        None if num_frames is None else lambda metadata: uniform_frame_indices(metadata.total_num_frames, num_frames)
    )
    try:
        source = video_input(entry, fetcher)
    except OSError as error:
        raise decode_error("read video", entry, error) from error
    frames, _ = read_video_pyav(source, sample)
    return frames


def to_trl_example(row: dict, fetcher=None) -> dict:
    """The row as TRL's vision collator takes it: structured `messages` plus decoded PIL `images`."""
    return {"messages": row["messages"], "images": load_images(row, fetcher)}
