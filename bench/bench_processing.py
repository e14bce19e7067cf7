"""Preprocessing throughput of TowerVision's image and video processors against transformers, in one run.

Images: 8 generated images from 500x333 to 2048x1536, 384 px tiles (<= 6 + thumbnail), through
    * TowerVisionImageProcessor,
    * LlavaNextImageProcessorPil (transformers 5.x's reproduction of the release's PIL preprocessing),
    * LlavaNextImageProcessor (torchvision),
all configured like the release; prints images/s, speed-up ratios and max |delta| against the PIL path (asserted
to be <= 1e-6).
Video: 32 frames out of a generated 60 s, 30 fps, 320x240 H.264 clip (keyframe every 60 frames, B-frames) with
`read_video_pyav` against transformers' `load_video(path, backend="pyav", num_frames=32)`, and `read_video_pyav` on
the same packets with a phone's -90 degree display rotation (applied; its cost is printed against the plain clip).

Every timing is the best of `--repeats` interleaved runs, as wall-clock time (what a user waits for; our
processors use one thread per core) and as CPU time of the process (the work done, which depends much less on a
shared machine's load). Run from the repository root:
    PYTHONPATH=src python bench/bench_processing.py
"""

import argparse
import os
import tempfile
import time

import av
import numpy as np
import torch
from PIL import Image
from transformers import LlavaNextImageProcessor, LlavaNextImageProcessorPil
from transformers.video_utils import load_video

from towervision_hf.model.image_processing_towervision import TowerVisionImageProcessor
from towervision_hf.model.tiling_towervision import default_grid_pinpoints
from towervision_hf.model.video_processing_towervision import TowerVisionVideoProcessor, read_video_pyav


IMAGE_SIZES = [(500, 333), (640, 480), (800, 600), (1024, 768), (1280, 720), (1600, 1200), (1920, 1080), (2048, 1536)]
TILE = 384


def make_images() -> list[Image.Image]:
    """Smooth gradients with noise, like photos as far as resampling cost goes."""
    rng = np.random.default_rng(0)
    images = []
    for width, height in IMAGE_SIZES:
        rows, columns = np.mgrid[0:height, 0:width]
        pixels = np.stack([columns * 255 // width, rows * 255 // height, (rows + columns) % 256], axis=-1)
        pixels = pixels + rng.integers(0, 40, pixels.shape)
        images.append(Image.fromarray(pixels.clip(0, 255).astype(np.uint8)))
    return images


def make_clip(path: str, seconds: int = 60, fps: int = 30, width: int = 320, height: int = 240, gop: int = 60):
    """A moving pattern encoded with x264 defaults (B-frames) and a keyframe every `gop` frames."""
    options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
    rows, columns = np.mgrid[0:height, 0:width]
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(seconds * fps):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[..., 0] = (columns + 3 * index) % 256
            pixels[..., 1] = (rows * 2 + index) % 256
            pixels[..., 2] = (index * 7) % 256
            left = (index * 4) % (width - 40)
            pixels[100:140, left : left + 40] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


def remux_rotated(path: str, rotated: str, degrees: int):
    """A copy of `path` whose video stream carries a display rotation of `degrees` (counter-clockwise); the packets
    are copied as they are."""
    with av.open(path) as source, av.open(rotated, "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        stream.set_display_rotation(degrees)
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)


def interleaved_timings(functions: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Best wall-clock and best CPU time (all threads of the process) of each function, in seconds.

    The functions run in turns so that a busy moment on a shared machine penalises all of them alike. Wall time is
    what a user waits; CPU time is the work done, which depends much less on what else runs on the machine.
    """
    best = {name: (float("inf"), float("inf")) for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def report(timings: dict[str, tuple[float, float]], ours: str, items: int, unit: str):
    for name, (wall, cpu) in timings.items():
        print(f"  {name:32s} {items / wall:7.2f} {unit}/s   wall {wall * 1000:7.1f} ms   cpu {cpu * 1000:7.1f} ms")
    for name, (wall, cpu) in timings.items():
        if name != ours:
            print(f"  speed-up vs {name:32s} wall x{wall / timings[ours][0]:.2f}   cpu x{cpu / timings[ours][1]:.2f}")


def bench_images(repeats: int):
    images = make_images()
    release = {
        "size": {"shortest_edge": TILE},
        "crop_size": {"height": TILE, "width": TILE},
        "image_grid_pinpoints": default_grid_pinpoints(6, TILE),
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
        "resample": Image.Resampling.BICUBIC,
    }
    processors = {
        "TowerVisionImageProcessor": TowerVisionImageProcessor(tile_size=TILE),
        "LlavaNextImageProcessorPil": LlavaNextImageProcessorPil(**release),
        "LlavaNextImageProcessor": LlavaNextImageProcessor(**release),
    }
    outputs = {name: processor(images, return_tensors="pt").pixel_values for name, processor in processors.items()}
    timings = interleaved_timings(
        {
            name: lambda processor=processor: processor(images, return_tensors="pt")
            for name, processor in processors.items()
        },
        repeats,
    )
    print(f"images: {len(images)} from {IMAGE_SIZES[0]} to {IMAGE_SIZES[-1]}, {TILE} px tiles, best of {repeats}")
    report(timings, "TowerVisionImageProcessor", len(images), "images")
    for name in ("LlavaNextImageProcessorPil", "LlavaNextImageProcessor"):
        delta = (outputs["TowerVisionImageProcessor"] - outputs[name]).abs().max().item()
        print(f"  max |delta| vs {name:29s} {delta:.3g}")
    delta_pil = (outputs["TowerVisionImageProcessor"] - outputs["LlavaNextImageProcessorPil"]).abs().max().item()
    assert delta_pil <= 1e-6, f"pixel values differ from the release's PIL preprocessing by {delta_pil}"


def bench_video(repeats: int, workdir: str):
    path = os.path.join(workdir, "clip_60s_30fps_320x240.mp4")
    if not os.path.exists(path):
        start = time.perf_counter()
        make_clip(path)
        print(f"(generated {path} in {time.perf_counter() - start:.1f} s)")
    rotated = os.path.join(workdir, "clip_60s_30fps_320x240_rotated-90.mp4")
    remux_rotated(path, rotated, -90)
    sampler = TowerVisionVideoProcessor().sample_frames
    timings = interleaved_timings(
        {
            "read_video_pyav (seeking)": lambda: read_video_pyav(path, sampler),
            "load_video(backend='pyav')": lambda: load_video(path, backend="pyav", num_frames=32),
            "read_video_pyav, rotated -90": lambda: read_video_pyav(rotated, sampler),
        },
        repeats,
    )
    rotated_timing = timings.pop("read_video_pyav, rotated -90")
    frames, metadata = read_video_pyav(path, sampler)
    indices = metadata.frames_indices
    expected, _ = load_video(path, backend="pyav", sample_indices_fn=lambda metadata, **kwargs: indices)
    print(
        f"video: 32 of {metadata.total_num_frames} frames ({metadata.duration:.0f} s, {metadata.fps:.0f} fps, 320x240)"
    )
    report(timings, "read_video_pyav (seeking)", 1, "videos")
    print(f"  frames identical to load_video's for the same indices: {np.array_equal(frames, expected)}")
    assert np.array_equal(frames, expected)
    wall, cpu = (turned / plain for turned, plain in zip(rotated_timing, timings["read_video_pyav (seeking)"]))
    print(
        f"  -90 display rotation applied: wall {rotated_timing[0] * 1000:.1f} ms (x{wall:.2f} of the plain clip), "
        f"cpu {rotated_timing[1] * 1000:.1f} ms (x{cpu:.2f})"
    )
    rotated_frames, _ = read_video_pyav(rotated, sampler)
    assert np.array_equal(rotated_frames, np.rot90(frames, -1, axes=(1, 2))), "the -90 clip is not turned clockwise"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "towervision_bench"))
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average {load:.2f}")
    bench_images(args.repeats)
    bench_video(args.repeats, args.workdir)


if __name__ == "__main__":
    main()
