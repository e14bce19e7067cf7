# Copyright 2026 The towervision-hf authors. Licensed under the Apache License, Version 2.0.
"""Image processor for TowerVision: LLaVA-NeXT anyres tiling (<= `max_tiles` tiles + a global thumbnail).

The released checkpoints were preprocessed by transformers 4.52's PIL-based `LlavaNextImageProcessor`; transformers
5.x reproduces it as `LlavaNextImageProcessorPil`. This processor gives the same pixel values, bit for bit, several
times faster: the bicubic resizes run in Pillow on 8-bit images exactly as there, the padding and tiling are array
views, rescaling and normalisation use the same float32 operations, and images are processed in parallel threads
(Pillow and numpy release the GIL).
"""

# First: importing the configuration checks the installed transformers version and fails clearly if unsupported.
from .configuration_towervision import check_transformers_version  # noqa: F401  # isort: skip

import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ChannelDimension, ImageInput, PILImageResampling, infer_channel_dimension_format
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType

from .fetching_towervision import fetch_url, is_url
from .tiling_towervision import (
    IMAGE_ASPECT_RATIOS,
    default_grid_pinpoints,
    image_grid,
    resize_within,
    restrict_pinpoints,
)


EXIF_ORIENTATION = 0x0112
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class TowerVisionImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    max_tiles (`int`, *optional*):
        Largest number of tiles for this call, between 1 and the processor's `max_tiles`; only the pinpoints with at
        most that many tiles are considered. The output then carries `image_max_tiles` so that the model can lay out
        the features the same way.
    """

    max_tiles: int


def describe_image(image) -> str:
    """Short description of an in-memory image for error messages."""
    if isinstance(image, Image.Image):
        return f"PIL image (mode {image.mode}, size {image.width}x{image.height})"
    return f"{type(image).__name__} of shape {tuple(image.shape)} and dtype {image.dtype}"


def open_image(source, name: str) -> Image.Image:
    """Decode an image file (path or file object) to an RGB PIL image; any failure is a `ValueError` naming `name`."""
    try:
        with Image.open(source) as image:
            image.load()
            return to_rgb_image(image)
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"{name} is too large to decode safely ({error}). Raise `PIL.Image.MAX_IMAGE_PIXELS` if you trust it."
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as error:
        raise ValueError(f"{name} could not be decoded as an image: {error}") from error


def to_rgb_image(image) -> Image.Image:
    """An RGB PIL image from a PIL image, a numpy array or a torch tensor (HWC, CHW or HW).

    * EXIF orientation is applied; an animated image contributes its first frame.
    * Transparency (RGBA, LA, PA, P or L with a transparent colour) is composited on white, as transformers'
      `convert_to_rgb` does; CMYK, YCbCr, LAB, HSV, 1, L and P go through PIL's `convert("RGB")`.
    * 16-bit images (PIL modes I;16*, I, numpy uint16) are scaled to 8 bits (value / 257, rounded); 32-bit float
      images (mode F) are clipped to [0, 255].
    * Float arrays with all values in [0, 1] are scaled by 255 and rounded; otherwise they must hold values in
      [0, 255]. Integer arrays must hold values in [0, 255] (uint16: scaled as above).
    """
    if not isinstance(image, Image.Image):
        image = array_to_image(image)
    if image.width == 0 or image.height == 0:
        raise ValueError(f"Image has no pixels: {describe_image(image)}")
    if getattr(image, "n_frames", 1) > 1 and image.tell() != 0:
        position = image.tell()
        image.seek(0)
        first_frame = image.copy()
        image.seek(position)
        image = first_frame
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 257
        return Image.fromarray(np.round(values).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).round().astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def array_to_image(array) -> Image.Image:
    """PIL image from an HW, HWC or CHW array/tensor with 1, 3 or 4 channels (see `to_rgb_image` for dtypes)."""
    description = describe_image(array)
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if array.ndim == 3:
        try:
            channel_dim = infer_channel_dimension_format(array, num_channels=(1, 3, 4))
        except ValueError as error:
            raise ValueError(f"Cannot tell the channel axis of {description}: {error}") from error
        if channel_dim == ChannelDimension.FIRST:
            array = np.moveaxis(array, 0, -1)
        if array.shape[-1] == 1:
            array = array[..., 0]
    elif array.ndim != 2:
        raise ValueError(f"An image must have 2 or 3 dimensions, got {description}")
    if array.size == 0:
        raise ValueError(f"Image has no pixels: {description}")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = np.round(array / 257).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
            raise ValueError(f"Float image values must lie in [0, 1] or [0, 255], got {description}")
        array = np.round(array * 255 if array.max() <= 1 else array).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise ValueError(f"Integer image values must lie in [0, 255], got {description}")
        array = array.astype(np.uint8)
    else:
        raise ValueError(f"Unsupported image dtype: {description}")
    return Image.fromarray(np.ascontiguousarray(array))


class TowerVisionImageProcessor(TorchvisionBackend):
    r"""
    Image processor of TowerVision (LLaVA-NeXT anyres with a global thumbnail, SigLIP normalisation).

    A sample with a single image is tiled: among the pinpoints (every grid of at most `max_tiles` tiles of
    `tile_size` pixels) the best canvas is chosen as in LLaVA-NeXT, the image is resized into it preserving its aspect
    ratio (bicubic), centred on a black canvas and cut into tiles row by row; the whole image squashed to
    `tile_size`×`tile_size` comes first (the global thumbnail). Pixel values are identical to transformers'
    `LlavaNextImageProcessorPil` configured like the release (`size={"shortest_edge": T}`,
    `crop_size={"height": T, "width": T}`, the same pinpoints, mean = std = 0.5, bicubic).

    A sample with several images follows the LLaVA-OneVision rule: each image becomes ONE tile, padded to a square
    with the mean colour (`int(255 * image_mean)` per channel) and resized to `tile_size`×`tile_size`, exactly as
    `LlavaOnevisionImageProcessorPil` does. Pass `images` nested per sample (`[[img], [img, img]]`) to get that; a
    flat list means one image per sample.

    With `image_aspect_ratio="pad"` every image is that one padded tile, and with `"square"` every image is squashed
    to one `tile_size`×`tile_size` tile (bicubic, as SigLIP's own processor and LLaVA-NeXT's default `square`
    preprocessing): the one-encode-per-image layouts of projector pretraining.

    Outputs: `pixel_values` `(num_images, max_patches, 3, tile_size, tile_size)` float32, zero-padded on the patch
    axis; `image_sizes` `(num_images, 2)` as (height, width) after EXIF orientation; `batch_num_images`
    `(num_samples_with_images,)`; and `image_max_tiles` `(num_images,)` when a call lowers `max_tiles`.

    Inputs may be PIL images, numpy arrays or torch tensors (HWC, CHW or HW), or local paths / encoded bytes (see
    `to_rgb_image` for mode conversions). Undecodable, empty or oversized images raise a `ValueError` naming them.

    Args:
        tile_size (`int`, *optional*, defaults to 384):
            Side of a tile and of the thumbnail, in pixels (the vision tower's `image_size`).
        max_tiles (`int`, *optional*, defaults to 6):
            Largest number of tiles per image; a call may lower it with `max_tiles=`.
        image_aspect_ratio (`str`, *optional*, defaults to `"anyres"`):
            `"anyres"` (tiling as above), `"square"` or `"pad"` (one tile per image); must equal the model config's.
        image_grid_pinpoints (`list[list[int]]`, *optional*):
            Candidate `[height, width]` canvases; by default every grid of at most `max_tiles` tiles, in the order of
            the released checkpoints.
        resample (`PILImageResampling`, *optional*, defaults to `BICUBIC`):
            Pillow filter for every resize.
        image_mean, image_std (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`):
            Normalisation applied after rescaling to [0, 1].
    """

    model_input_names = ["pixel_values", "image_sizes", "batch_num_images"]
    valid_kwargs = TowerVisionImageProcessorKwargs
    resample = PILImageResampling.BICUBIC
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    do_rescale = True
    do_normalize = True
    do_pad = True
    max_tiles = 6

    def __init__(
        self,
        tile_size: int = 384,
        image_grid_pinpoints: list[list[int]] | None = None,
        image_aspect_ratio: str = "anyres",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(f"image_aspect_ratio must be one of {IMAGE_ASPECT_RATIOS}, got {image_aspect_ratio!r}")
        self.tile_size = tile_size
        self.image_aspect_ratio = image_aspect_ratio
        self.image_grid_pinpoints = image_grid_pinpoints or default_grid_pinpoints(self.max_tiles, tile_size)

    def pinpoints(self, max_tiles: int | None = None) -> list[list[int]]:
        """The candidate canvases for a call with `max_tiles` (the processor's own value when `None`)."""
        if max_tiles is None:
            return self.image_grid_pinpoints
        if not 1 <= max_tiles <= self.max_tiles:
            raise ValueError(f"max_tiles must be between 1 and {self.max_tiles}, got {max_tiles}")
        return restrict_pinpoints(self.image_grid_pinpoints, max_tiles, self.tile_size)

    def fetch_images(self, image_url_or_urls):
        """RGB PIL images from paths, http(s) URLs (fetched with `fetching_towervision.fetch_url`: timeout, size cap,
        retries), encoded bytes, PIL images, arrays or tensors (a 4-D array is a batch)."""
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item) for item in image_url_or_urls]
        if isinstance(image_url_or_urls, (str, os.PathLike)):
            path = os.fspath(image_url_or_urls)
            if is_url(path):
                return open_image(io.BytesIO(fetch_url(path)), f"Image {path}")
            if not os.path.isfile(path):
                raise ValueError(f"Image file not found: {path}")
            return open_image(path, f"Image file {path}")
        if isinstance(image_url_or_urls, (bytes, bytearray)):
            return open_image(io.BytesIO(image_url_or_urls), f"Image bytes ({len(image_url_or_urls)} bytes)")
        if isinstance(image_url_or_urls, (np.ndarray, torch.Tensor)) and image_url_or_urls.ndim == 4:
            return [to_rgb_image(image) for image in image_url_or_urls]
        if isinstance(image_url_or_urls, (Image.Image, np.ndarray, torch.Tensor)):
            return to_rgb_image(image_url_or_urls)
        raise ValueError(f"Unsupported image input of type {type(image_url_or_urls).__name__}")

    def process_image(self, image: Image.Image, **kwargs) -> Image.Image:
        """Images are already RGB PIL images (see `fetch_images`): the resizes run in Pillow to match the release."""
        return image

    def preprocess(self, images: ImageInput, **kwargs: Unpack[TowerVisionImageProcessorKwargs]) -> BatchFeature:
        if isinstance(images, (list, tuple)) and images and isinstance(images[0], (list, tuple)):
            images = [sample for sample in images if sample]
            batch_num_images = [len(sample) for sample in images]
        elif isinstance(images, (list, tuple)):
            batch_num_images = [1] * len(images)
        else:
            batch_num_images = [1]
        if not batch_num_images:
            raise ValueError("No images were given")
        return super().preprocess(images, batch_num_images, **kwargs)

    def _tiles(self, image: Image.Image, grid: tuple[int, int] | None, resample, image_mean) -> list[np.ndarray]:
        """The `(T, T, 3)` uint8 patches of one image: thumbnail then the `grid` tiles, or one tile when `grid` is
        None."""
        tile = self.tile_size
        if grid is None:  # one tile: padded to a square with the mean colour (unless "square"), resized
            if image.width != image.height and self.image_aspect_ratio != "square":
                side = max(image.width, image.height)
                square = Image.new("RGB", (side, side), tuple(int(mean * 255) for mean in image_mean))
                square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
                image = square
            return [np.asarray(image.resize((tile, tile), resample=resample))]
        rows, cols = grid
        new_height, new_width = resize_within((image.height, image.width), (rows * tile, cols * tile))
        top, left = (rows * tile - new_height) // 2, (cols * tile - new_width) // 2
        canvas = np.zeros((rows * tile, cols * tile, 3), dtype=np.uint8)
        canvas[top : top + new_height, left : left + new_width] = image.resize(
            (new_width, new_height), resample=resample
        )
        # (rows * T, cols * T, 3) -> (rows, T, cols, T, 3): tile (r, c) is [r, :, c], taken in row-major order
        canvas = canvas.reshape(rows, tile, cols, tile, 3)
        thumbnail = np.asarray(image.resize((tile, tile), resample=resample))
        return [thumbnail] + [canvas[r, :, c] for r in range(rows) for c in range(cols)]

    def _preprocess(
        self,
        images: list[Image.Image],
        batch_num_images: list[int],
        max_tiles: int | None,
        resample: PILImageResampling,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: tuple[float, ...],
        image_std: tuple[float, ...],
        do_pad: bool,
        return_tensors: str | TensorType | None,
        **kwargs,
    ) -> BatchFeature:
        pinpoints = self.pinpoints(max_tiles)
        counts = [count for count in batch_num_images for _ in range(count)]  # images of each image's sample
        grids = [
            image_grid((image.height, image.width), count, self.image_aspect_ratio, pinpoints, self.tile_size)
            for image, count in zip(images, counts)
        ]
        num_patches = [1 + grid[0] * grid[1] if grid else 1 for grid in grids]
        tile = self.tile_size
        pixel_values = np.empty((len(images), max(num_patches), 3, tile, tile), dtype=np.float32)
        mean = np.asarray(image_mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(image_std, dtype=np.float32).reshape(3, 1, 1)

        def fill(index: int):
            values = pixel_values[index]
            patches = self._tiles(images[index], grids[index], resample, image_mean)
            values[len(patches) :] = 0
            for value, patch in zip(values, patches):
                # patch by patch (stays in cache), with the PIL processor's float32 operations in the same order
                np.copyto(value, patch.transpose(2, 0, 1))
                if do_rescale:  # dividing by 255 rounds exactly like the PIL processor's float64 `* (1 / 255)`
                    value /= np.float32(1 / rescale_factor)
                if do_normalize:
                    value -= mean
                    value /= std

        # Pillow and numpy release the GIL: images are resized and normalised in parallel
        with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:
            list(pool.map(fill, range(len(images))))
        pixel_values = torch.from_numpy(pixel_values)
        if not do_pad:
            pixel_values = [values[:count] for values, count in zip(pixel_values, num_patches)]
        data = {
            "pixel_values": pixel_values,
            "image_sizes": torch.tensor([[image.height, image.width] for image in images], dtype=torch.long),
            "batch_num_images": torch.tensor(batch_num_images, dtype=torch.long),
        }
        if max_tiles != self.max_tiles:
            data["image_max_tiles"] = torch.full((len(images),), max_tiles, dtype=torch.long)
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = ["TowerVisionImageProcessor"]
