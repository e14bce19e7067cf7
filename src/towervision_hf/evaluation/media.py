"""Decoding benchmark media: images stored as datasets `Image` values / bytes / paths, videos as paths or bytes.

Every decoder returns `None` for missing or undecodable media so that callers count the item as skipped instead of
crashing in the middle of a run.
"""

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError


def decode_image(value, root: str | None = None) -> Image.Image | None:
    """An RGB PIL image from a PIL image, a `{"bytes", "path"}` dict (datasets' storage format), raw bytes or a path.

    Relative paths are resolved against `root`. Returns None when the value is missing or cannot be decoded.
    """
    if value is None:
        return None
    try:
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if isinstance(value, dict):
            if value.get("bytes"):
                return decode_image(value["bytes"])
            return decode_image(value.get("path"), root)
        if isinstance(value, (bytes, bytearray)):
            with Image.open(io.BytesIO(value)) as image:
                return image.convert("RGB")
        if isinstance(value, str) and value:
            path = value if root is None else os.path.join(root, value)
            with Image.open(path) as image:
                return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return None


def _video_source(value, root: str | None):
    if isinstance(value, dict):
        return _video_source(value.get("bytes") or value.get("path"), root)
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(value)
    if isinstance(value, str) and value:
        return value if root is None or os.path.isabs(value) else os.path.join(root, value)
    return None


def load_video_frames(value, num_frames: int, root: str | None = None) -> np.ndarray | None:
    """`num_frames` uniformly spaced RGB frames `(num_frames, height, width, 3)` of a video, decoded with PyAV.

    `value` is a path (relative to `root`), raw bytes or a `{"bytes", "path"}` dict. Videos shorter than
    `num_frames` repeat frames (uniform indices with replacement). Returns None for missing or undecodable videos.
    """
    import av

    source = _video_source(value, root)
    if source is None:
        return None
    try:
        with av.open(source) as container:
            total = container.streams.video[0].frames or sum(1 for _ in container.decode(video=0))
        if total == 0:
            return None
        indices = np.linspace(0, total - 1, num_frames).round().astype(int)
        wanted = set(indices.tolist())
        if isinstance(source, io.BytesIO):
            source.seek(0)
        frames = {}
        with av.open(source) as container:  # second pass: convert only the sampled frames
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    frames[index] = frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, OSError, ValueError, IndexError):
        return None
    if not frames:
        return None
    last = max(frames)  # container metadata may over-count frames: fall back to the last decoded one
    return np.stack([frames.get(i, frames[last]) for i in indices])
