# Copyright 2026 The towervision-hf authors. Licensed under the Apache License, Version 2.0.
"""Tile-grid, unpadding and token-count arithmetic shared by the TowerVision model and processor.

This module is the single source of truth for how many placeholder tokens an image or a video expands to.
The processor uses it to expand ``<image>`` / ``<video>`` and the model uses the same functions to lay out
features, so the two can never disagree. It is plain Python (no torch) and travels to the Hub as remote code.

Conventions (identical to transformers' LLaVA-NeXT / LLaVA-OneVision):
    * sizes are ``(height, width)``;
    * a pinpoint ``[h, w]`` is a canvas of ``h // tile_size`` rows by ``w // tile_size`` columns of tiles;
    * an anyres image yields ``tile_tokens`` thumbnail features, then the unpadded tile grid with one newline
      feature at the end of every feature row;
    * an image of a multi-image sample (LLaVA-OneVision rule) is one tile: ``tile_tokens`` features + 1 newline;
    * in the single-tile layouts (``image_aspect_ratio`` ``"square"`` / ``"pad"``) every image is one tile of
      ``tile_tokens`` features and no newline (LLaVA's ``flat`` merge);
    * a video yields ``pooled_tokens`` features per frame and a single newline feature for the whole video.
"""

import math
from typing import NamedTuple


# `"anyres"`: tiled single images, one tile + newline per image of a multi-image sample. `"square"` / `"pad"`: every
# image is one tile without newline, squashed to the tile, or first padded to a square with the mean colour.
IMAGE_ASPECT_RATIOS = ("anyres", "square", "pad")


def default_grid_pinpoints(max_tiles: int, tile_size: int) -> list[list[int]]:
    """Every grid of at most `max_tiles` tiles, as `[height, width]` canvases, in the released checkpoints' order.

    The order (by tile count, then by number of rows) matters: `select_best_resolution` keeps the first of
    equally good candidates. For `max_tiles=6, tile_size=384` this is exactly the release's 14 pinpoints.
    """
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    grids = [
        (rows, cols)
        for rows in range(1, max_tiles + 1)
        for cols in range(1, max_tiles + 1)
        if rows * cols <= max_tiles
    ]
    grids.sort(key=lambda grid: (grid[0] * grid[1], grid[0]))
    return [[rows * tile_size, cols * tile_size] for rows, cols in grids]


def restrict_pinpoints(pinpoints: list[list[int]], max_tiles: int, tile_size: int) -> list[list[int]]:
    """The subset of `pinpoints` with at most `max_tiles` tiles (order kept), for a call-time `max_tiles`."""
    kept = [list(p) for p in pinpoints if (p[0] // tile_size) * (p[1] // tile_size) <= max_tiles]
    if not kept:
        raise ValueError(f"max_tiles={max_tiles} leaves no grid among the pinpoints {pinpoints}")
    return kept


def select_best_resolution(image_size: tuple[int, int], pinpoints: list[list[int]]) -> tuple[int, int]:
    """The pinpoint `(height, width)` that keeps the most of the image's resolution and wastes the least canvas.

    Same rule as LLaVA-NeXT: maximise the effective (downscaled) resolution, break ties by the smallest waste,
    and keep the first candidate on a full tie.
    """
    original_height, original_width = image_size
    best_fit = None
    max_effective_resolution = 0
    min_wasted_resolution = float("inf")
    for height, width in pinpoints:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted_resolution = (width * height) - effective_resolution
        if effective_resolution > max_effective_resolution or (
            effective_resolution == max_effective_resolution and wasted_resolution < min_wasted_resolution
        ):
            max_effective_resolution = effective_resolution
            min_wasted_resolution = wasted_resolution
            best_fit = (height, width)
    return best_fit


def anyres_grid_shape(image_size: tuple[int, int], pinpoints: list[list[int]], tile_size: int) -> tuple[int, int]:
    """`(rows, cols)` of tiles chosen for an image of `image_size = (height, width)`."""
    height, width = select_best_resolution(image_size, pinpoints)
    return height // tile_size, width // tile_size


def resize_within(image_size: tuple[int, int], target_size: tuple[int, int]) -> tuple[int, int]:
    """Largest `(height, width)` with the image's aspect ratio that fits in `target_size` (LLaVA-NeXT rounding)."""
    original_height, original_width = image_size
    target_height, target_width = target_size
    scale_w = target_width / original_width
    scale_h = target_height / original_height
    if scale_w < scale_h:
        new_width = target_width
        new_height = min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height = target_height
        new_width = min(math.ceil(original_width * scale_h), target_width)
    return new_height, new_width


def unpadded_feature_shape(image_size: tuple[int, int], feature_height: int, feature_width: int) -> tuple[int, int]:
    """Shape of a `(feature_height, feature_width)` tile-grid feature map once the letterbox padding is removed.

    Mirrors `unpad_image` of LLaVA-NeXT: the padding that `resize_within` + centre padding added around an image
    of `image_size` is cut symmetrically, with the same rounding.
    """
    original_height, original_width = image_size
    original_aspect_ratio = original_width / original_height
    current_aspect_ratio = feature_width / feature_height
    if original_aspect_ratio > current_aspect_ratio:
        new_height = int(round(original_height * (feature_width / original_width), 7))
        padding = (feature_height - new_height) // 2
        return feature_height - 2 * padding, feature_width
    new_width = int(round(original_width * (feature_height / original_height), 7))
    padding = (feature_width - new_width) // 2
    return feature_height, feature_width - 2 * padding


def unpad_slices(image_size: tuple[int, int], feature_height: int, feature_width: int) -> tuple[slice, slice]:
    """Row and column slices that keep the unpadded part of a `(feature_height, feature_width)` feature map."""
    height, width = unpadded_feature_shape(image_size, feature_height, feature_width)
    top, left = (feature_height - height) // 2, (feature_width - width) // 2
    return slice(top, top + height), slice(left, left + width)


def image_grid(
    image_size: tuple[int, int], num_images: int, image_aspect_ratio: str, pinpoints: list[list[int]], tile_size: int
) -> tuple[int, int] | None:
    """`(rows, cols)` of the tiles that follow an image's thumbnail, or `None` when the image is its thumbnail only.

    Under `"anyres"` the only image of a sample is tiled and every image of a sample with `num_images > 1` is one
    tile (LLaVA-OneVision rule); the single-tile layouts (`"square"` / `"pad"`) never tile.
    """
    if image_aspect_ratio != "anyres" or num_images > 1:
        return None
    return anyres_grid_shape(image_size, pinpoints, tile_size)


class ImageLayout(NamedTuple):
    """How one image is encoded: the tile `grid` after its thumbnail (`None`: thumbnail only), the number of tiles
    the vision tower encodes for it (thumbnail included) and its number of `<image>` placeholder tokens."""

    grid: tuple[int, int] | None
    num_tiles: int
    num_tokens: int


def image_layout(
    image_size: tuple[int, int],
    num_images: int,
    image_aspect_ratio: str,
    pinpoints: list[list[int]],
    tile_size: int,
    patch_size: int,
    use_image_newline: bool = True,
) -> ImageLayout:
    """The one rule for an image's tiles and `<image>` tokens, given the layout, the images of its sample and its
    `(height, width)`.

    * anyres, only image of its sample: thumbnail + unpadded tile grid + one newline per feature row;
    * anyres, image of a multi-image sample: one tile + one newline;
    * `"square"` / `"pad"`: one tile, no newline (LLaVA's `flat` merge).
    """
    patches_per_side = tile_size // patch_size
    grid = image_grid(image_size, num_images, image_aspect_ratio, pinpoints, tile_size)
    if grid is None:
        newline = use_image_newline and image_aspect_ratio == "anyres"
        return ImageLayout(None, 1, patches_per_side**2 + int(newline))
    rows, cols = grid
    height, width = unpadded_feature_shape(image_size, rows * patches_per_side, cols * patches_per_side)
    num_tokens = patches_per_side**2 + height * width + (height if use_image_newline else 0)
    return ImageLayout(grid, 1 + rows * cols, num_tokens)


def pooled_side(patches_per_side: int, pool_size: int) -> int:
    """Side of a frame's feature map after `pool_size`×`pool_size` pooling (ceil, as LLaVA-OneVision)."""
    return math.ceil(patches_per_side / pool_size)


def video_token_count(
    num_frames: int, tile_size: int, patch_size: int, pool_size: int, use_image_newline: bool = True
) -> int:
    """Number of `<video>` tokens: pooled features for every frame plus one newline for the whole video."""
    per_frame = pooled_side(tile_size // patch_size, pool_size) ** 2
    return num_frames * per_frame + (1 if use_image_newline else 0)
