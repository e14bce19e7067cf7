"""Decoding benchmark media: images stored as datasets `Image` values / bytes / paths, videos as paths or bytes.

The decoding itself is the data pipeline's (`data.schema.load_image` / `load_video_frames`, which raise); here every
decoder returns `None` for missing or undecodable media so that callers count the item as skipped instead of
crashing in the middle of a run.
"""

import numpy as np
from PIL import Image

from ..data.schema import load_image
from ..data.schema import load_video_frames as decode_video_frames


def decode_image(value, root: str | None = None) -> Image.Image | None:
    """An RGB PIL image from a PIL image, a `{"bytes", "path"}` dict (datasets' storage format), raw bytes or a path.

    Relative paths are resolved against `root`. Returns None when the value is missing or cannot be decoded.
    """
    if value is None:
        return None
    try:
        return load_image(value, root=root)
    except ValueError:
        return None


def load_video_frames(value, num_frames: int, root: str | None = None) -> np.ndarray | None:
    """`num_frames` uniformly spaced RGB frames `(num_frames, height, width, 3)` of a video, decoded with PyAV.

    `value` is a path (relative to `root`), raw bytes or a `{"bytes", "path"}` dict. Frames are sampled with the video
    processor's rule (short videos repeat frames) and only they are decoded. Returns None for missing or
    undecodable videos.
    """
    if value is None:
        return None
    try:
        return decode_video_frames(value, num_frames, root=root)
    except ValueError:
        return None
