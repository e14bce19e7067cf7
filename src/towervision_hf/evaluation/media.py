"""Decoding benchmark media: images stored as datasets `Image` values / bytes / paths, videos as paths or bytes.

Every decoder returns `None` for missing or undecodable media so that callers count the item as skipped instead of
crashing in the middle of a run.
"""

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..model.video_processing_towervision import read_video_pyav, uniform_frame_indices


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
        return bytes(value)
    if isinstance(value, str) and value:
        return value if root is None or os.path.isabs(value) else os.path.join(root, value)
    return None


def load_video_frames(value, num_frames: int, root: str | None = None) -> np.ndarray | None:
    """`num_frames` uniformly spaced RGB frames `(num_frames, height, width, 3)` of a video, decoded with PyAV.

    `value` is a path (relative to `root`), raw bytes or a `{"bytes", "path"}` dict. Frames are sampled with the video
    processor's rule (short videos repeat frames) and only they are decoded. Returns None for missing or
    undecodable videos.
    """
    source = _video_source(value, root)
    if source is None:
        return None
    try:
        frames, _ = read_video_pyav(
            source, lambda metadata: uniform_frame_indices(metadata.total_num_frames, num_frames)
        )
    except ValueError:
        return None
    return frames
