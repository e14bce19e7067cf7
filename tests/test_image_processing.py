"""TowerVisionImageProcessor: exact parity with transformers' PIL LLaVA-NeXT / LLaVA-OneVision processors (the
release's preprocessing), input conversions and clear errors on bad images."""

import io

import numpy as np
import pytest
import torch
from conftest import llava_single_tile_image_processor
from PIL import Image, ImageOps
from transformers import LlavaNextImageProcessorPil, LlavaOnevisionImageProcessorPil

from towervision_hf.model.image_processing_towervision import TowerVisionImageProcessor
from towervision_hf.model.tiling_towervision import default_grid_pinpoints, restrict_pinpoints


TILE = 56
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def random_image(height, width, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed + 7 * height + width)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def release_processor(tile=TILE, pinpoints=None, mean=(0.5,) * 3, std=(0.5,) * 3):
    """transformers 5.x's reproduction of the PIL LlavaNextImageProcessor the release was preprocessed with."""
    return LlavaNextImageProcessorPil(
        size={"shortest_edge": tile},
        crop_size={"height": tile, "width": tile},
        image_grid_pinpoints=pinpoints or default_grid_pinpoints(6, tile),
        image_mean=list(mean),
        image_std=list(std),
        resample=Image.Resampling.BICUBIC,
        do_convert_rgb=False,
    )


@pytest.fixture(scope="module")
def processor():
    return TowerVisionImageProcessor(tile_size=TILE)


PINPOINT_SIZES = [tuple(p) for p in default_grid_pinpoints(6, TILE)]
ODD_SIZES = [(1, 1), (1, 4000), (4000, 1), (2, 3), (57, 55), (55, 57), (111, 113), (167, 60), (60, 335), (500, 333)]


@pytest.mark.parametrize("size", PINPOINT_SIZES + ODD_SIZES)
def test_matches_release_pil_processor_exactly(processor, size):
    image = random_image(*size)
    expected = release_processor()(image, return_tensors="pt")
    ours = processor(image, return_tensors="pt")
    assert ours.pixel_values.shape == expected.pixel_values.shape
    assert torch.equal(ours.pixel_values, expected.pixel_values)
    assert ours.image_sizes.tolist() == expected.image_sizes.tolist() == [list(size)]


@pytest.mark.parametrize("size", [(384, 384), (333, 500), (768, 1024), (1080, 1920), (3, 1000)])
def test_matches_release_pil_processor_at_384(size):
    image = random_image(*size)
    expected = release_processor(tile=384)(image, return_tensors="pt")
    ours = TowerVisionImageProcessor()(image, return_tensors="pt")
    assert torch.equal(ours.pixel_values, expected.pixel_values)


def test_batch_is_padded_with_zero_patches_like_the_release(processor):
    images = [random_image(60, 170), random_image(20, 20), random_image(170, 120)]
    expected = release_processor()(images, return_tensors="pt")
    ours = processor(images, return_tensors="pt")
    assert torch.equal(ours.pixel_values, expected.pixel_values)
    assert ours.pixel_values.shape == (3, 7, 3, TILE, TILE)
    assert not ours.pixel_values[1, 2:].any()  # a 1x1 grid: thumbnail + 1 tile, then padding
    assert ours.batch_num_images.tolist() == [1, 1, 1]


def test_other_normalisation_stays_exact():
    image = random_image(130, 90)
    expected = release_processor(mean=CLIP_MEAN, std=CLIP_STD)(image, return_tensors="pt")
    ours = TowerVisionImageProcessor(tile_size=TILE, image_mean=CLIP_MEAN, image_std=CLIP_STD)(
        image, return_tensors="pt"
    )
    assert torch.equal(ours.pixel_values, expected.pixel_values)


def llava_onevision_pil_processor():
    return LlavaOnevisionImageProcessorPil(
        size={"height": TILE, "width": TILE},
        image_grid_pinpoints=default_grid_pinpoints(6, TILE),
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        resample=Image.Resampling.BICUBIC,
    )


def test_multi_image_samples_follow_llava_onevision(processor):
    samples = [[random_image(40, 90), random_image(70, 30)], [random_image(100, 100)], [random_image(3, 5)] * 3]
    expected = llava_onevision_pil_processor()(samples, return_tensors="pt")
    ours = processor(samples, return_tensors="pt")
    assert torch.equal(ours.pixel_values, expected.pixel_values)
    assert ours.batch_num_images.tolist() == expected.batch_num_images.tolist() == [2, 1, 3]
    assert ours.pixel_values.shape[1] == 5  # the lone 100x100 image is tiled: thumbnail + 2x2 tiles
    assert not ours.pixel_values[0, 1:].any()  # images of multi-image samples are one tile each


SINGLE_TILE_SAMPLES = [[random_image(40, 90)], [random_image(70, 30), random_image(100, 100)], [random_image(3, 500)]]


def test_pad_layout_is_llava_onevisions_multi_image_tile_for_every_image():
    processor = TowerVisionImageProcessor(tile_size=TILE, image_aspect_ratio="pad")
    ours = processor(SINGLE_TILE_SAMPLES, return_tensors="pt")
    # every image as one image of a multi-image sample of LLaVA-OneVision: padded to a square, resized to one tile
    flat = [image for sample in SINGLE_TILE_SAMPLES for image in sample]
    expected = llava_onevision_pil_processor()([flat], return_tensors="pt")
    assert tuple(ours.pixel_values.shape) == (4, 1, 3, TILE, TILE)
    assert torch.equal(ours.pixel_values, expected.pixel_values)
    assert ours.batch_num_images.tolist() == [1, 2, 1]


@pytest.mark.parametrize("aspect_ratio", ["square", "pad"])
def test_single_tile_layouts_match_llava_image_processor(aspect_ratio):
    """ "square" is SigLIP / LLaVA-NeXT's default resize to one tile, "pad" LLaVA-1.5's pad-to-square first."""
    processor = TowerVisionImageProcessor(tile_size=TILE, image_aspect_ratio=aspect_ratio)
    ours = processor(SINGLE_TILE_SAMPLES, return_tensors="pt")
    images = [image for sample in SINGLE_TILE_SAMPLES for image in sample]
    expected = llava_single_tile_image_processor(TILE, aspect_ratio)(images, return_tensors="pt")
    assert torch.equal(ours.pixel_values[:, 0], expected.pixel_values)


def test_single_tile_layout_round_trips_and_bad_layouts_raise(tmp_path):
    TowerVisionImageProcessor(tile_size=TILE, image_aspect_ratio="square").save_pretrained(tmp_path)
    assert TowerVisionImageProcessor.from_pretrained(tmp_path).image_aspect_ratio == "square"
    with pytest.raises(ValueError, match="image_aspect_ratio must be one of"):
        TowerVisionImageProcessor(tile_size=TILE, image_aspect_ratio="crop")


def test_samples_without_images_are_skipped(processor):
    out = processor([[random_image(10, 10)], [], [random_image(5, 9), random_image(9, 5)]])
    assert out.batch_num_images.tolist() == [1, 2]
    assert out.pixel_values.shape[0] == 3


def test_call_time_max_tiles_restricts_the_grid(processor):
    image = random_image(60, 330)  # 6 tiles wide at max_tiles=6
    assert processor(image).pixel_values.shape[1] == 7
    out = processor(image, max_tiles=2)
    expected = release_processor(pinpoints=restrict_pinpoints(default_grid_pinpoints(6, TILE), 2, TILE))(image)
    assert torch.equal(out.pixel_values, torch.as_tensor(np.array(expected.pixel_values)))
    assert out.pixel_values.shape[1] == 3
    assert out.image_max_tiles.tolist() == [2]
    assert "image_max_tiles" not in processor(image)
    with pytest.raises(ValueError, match="max_tiles must be between 1 and 6"):
        processor(image, max_tiles=7)


def test_paths_bytes_arrays_and_tensors_give_the_same_pixels(processor, tmp_path):
    image = random_image(45, 80)
    path = tmp_path / "image.png"
    image.save(path)
    expected = processor(image).pixel_values
    array = np.array(image)
    inputs = [str(path), path, path.read_bytes(), array, array.transpose(2, 0, 1), torch.from_numpy(array)]
    inputs += [array / 255.0]
    for item in inputs:
        assert torch.equal(processor(item).pixel_values, expected), type(item)


def test_exif_orientation_is_applied(processor, tmp_path):
    image = random_image(30, 50)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: must be turned 90 degrees to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    upright = ImageOps.exif_transpose(Image.open(path))
    out = processor(str(path))
    assert out.image_sizes.tolist() == [[50, 30]]
    assert torch.equal(out.pixel_values, processor(upright.convert("RGB")).pixel_values)


def white_pixels(processor, image):
    """Normalised value of the thumbnail's top-left pixel (1.0 is white)."""
    return processor(image).pixel_values[0, 0, :, 0, 0].tolist()


def test_transparency_is_composited_on_white(processor):
    transparent = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    assert white_pixels(processor, transparent) == [1.0, 1.0, 1.0]
    assert white_pixels(processor, Image.new("LA", (20, 20), (0, 0))) == [1.0, 1.0, 1.0]
    opaque_red = Image.new("RGBA", (20, 20), (255, 0, 0, 255))
    assert white_pixels(processor, opaque_red) == [1.0, -1.0, -1.0]
    palette = Image.new("P", (20, 20), 3)
    palette.info["transparency"] = 3
    assert white_pixels(processor, palette) == [1.0, 1.0, 1.0]
    rgba_array = np.zeros((20, 20, 4), np.uint8)  # 4-channel arrays are RGBA
    assert white_pixels(processor, rgba_array) == [1.0, 1.0, 1.0]


def test_other_modes_are_converted(processor):
    gray = Image.new("L", (20, 20), 255)
    assert white_pixels(processor, gray) == [1.0, 1.0, 1.0]
    assert white_pixels(processor, Image.new("CMYK", (20, 20), (0, 0, 0, 0))) == [1.0, 1.0, 1.0]
    sixteen_bit = Image.fromarray(np.full((20, 20), 65535, np.uint16))
    assert sixteen_bit.mode.startswith("I;16")
    assert white_pixels(processor, sixteen_bit) == [1.0, 1.0, 1.0]
    mid = processor(Image.fromarray(np.full((20, 20), 257 * 100, np.uint16))).pixel_values[0, 0, 0, 0, 0]
    assert mid == processor(Image.new("RGB", (20, 20), (100,) * 3)).pixel_values[0, 0, 0, 0, 0]
    assert white_pixels(processor, np.full((20, 20), 65535, np.uint16)) == [1.0, 1.0, 1.0]


def test_animated_images_use_the_first_frame(processor):
    frames = [Image.new("RGB", (16, 16), color) for color in [(255, 255, 255), (0, 0, 0)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    animated = Image.open(io.BytesIO(buffer.getvalue()))
    animated.seek(1)
    assert white_pixels(processor, animated) == [1.0, 1.0, 1.0]
    assert animated.tell() == 1  # the caller's image is left where it was
    assert white_pixels(processor, buffer.getvalue()) == [1.0, 1.0, 1.0]


def test_do_pad_false_returns_one_tensor_per_image(processor):
    out = processor([random_image(20, 20), random_image(20, 110)], do_pad=False)
    assert [tuple(values.shape) for values in out.pixel_values] == [(2, 3, TILE, TILE), (3, 3, TILE, TILE)]


def test_saved_config_round_trips(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = TowerVisionImageProcessor.from_pretrained(tmp_path)
    assert (loaded.tile_size, loaded.max_tiles, loaded.image_grid_pinpoints) == (
        TILE,
        6,
        processor.image_grid_pinpoints,
    )
    image = random_image(70, 20)
    assert torch.equal(loaded(image).pixel_values, processor(image).pixel_values)


def jpeg_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "bad, message",
    [
        (b"definitely not an image", r"Image bytes \(23 bytes\) could not be decoded"),
        (jpeg_bytes(random_image(64, 64))[:300], "could not be decoded as an image"),
        ("/nonexistent/picture.png", "Image file not found: /nonexistent/picture.png"),
        (Image.new("RGB", (0, 12)), "Image has no pixels"),
        (np.zeros((0, 12, 3), np.uint8), "Image has no pixels"),
        (np.full((8, 8, 3), 300.0), r"Float image values must lie in \[0, 1\] or \[0, 255\]"),
        (np.zeros((2, 8, 8, 8, 3), np.uint8), "An image must have 2 or 3 dimensions"),
        (42, "Unsupported image input of type int"),
    ],
)
def test_bad_images_raise_value_errors_naming_them(processor, bad, message):
    with pytest.raises(ValueError, match=message):
        processor(bad)


def test_decompression_bombs_are_refused(processor, monkeypatch):
    data = jpeg_bytes(random_image(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 > 2 x 1000 pixels: PIL refuses to decode
    with pytest.raises(ValueError, match="too large to decode safely"):
        processor(data)


def test_a_file_that_is_not_an_image_raises_value_error(processor, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ValueError, match=f"Image file {path} could not be decoded as an image"):
        processor(str(path))
