"""TowerVisionVideoProcessor: PyAV decoding that seeks, uniform sampling, parity with LlavaOnevisionVideoProcessor."""

import av
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaOnevisionVideoProcessor
from transformers.video_utils import load_video

from towervision_hf.model import video_processing_towervision
from towervision_hf.model.video_processing_towervision import TowerVisionVideoProcessor, read_video_pyav


SIDE = 56


@pytest.fixture(scope="module")
def processor():
    return TowerVisionVideoProcessor(size={"height": SIDE, "width": SIDE}, num_frames=8)


@pytest.fixture(scope="module")
def all_frames(video_files):
    with av.open(video_files["clip"]) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def reference_processor():
    return LlavaOnevisionVideoProcessor(
        size={"height": SIDE, "width": SIDE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


@pytest.mark.parametrize(
    "indices",
    [
        [0],
        [74],
        [0, 9, 10, 11, 74],
        [5, 5, 6, 40, 40, 73],
        list(range(75)),
        np.linspace(0, 74, 32).round().astype(int).tolist(),
    ],
)
def test_seeking_decoder_returns_exactly_the_requested_frames(video_files, all_frames, indices):
    frames, metadata = read_video_pyav(video_files["clip"], lambda metadata: indices)
    assert np.array_equal(frames, all_frames[indices])
    assert metadata.frames_indices.tolist() == indices


@pytest.mark.parametrize("source", ["path", "bytes"])
def test_parallel_decoding_is_exact(video_files, all_frames, monkeypatch, source):
    monkeypatch.setattr(video_processing_towervision.os, "cpu_count", lambda: 3)  # 3 threads of 10 targets
    indices = np.linspace(0, 74, 30).round().astype(int).tolist()
    with open(video_files["clip"], "rb") as file:
        video = video_files["clip"] if source == "path" else file.read()
    frames, _ = read_video_pyav(video, lambda metadata: indices)
    assert np.array_equal(frames, all_frames[indices])


def test_decoder_matches_transformers_load_video(video_files):
    indices = [3, 17, 18, 50, 71]
    expected, _ = load_video(video_files["clip"], backend="pyav", sample_indices_fn=lambda metadata, **kw: indices)
    frames, _ = read_video_pyav(video_files["clip"], lambda metadata: indices)
    assert np.array_equal(frames, expected)


def test_few_frames_of_a_long_clip_decode_few_frames(video_files, monkeypatch):
    decoded = []
    original = video_processing_towervision._FrameReader._decode

    def counting_decode(reader):
        for frame in original(reader):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(video_processing_towervision._FrameReader, "_decode", counting_decode)
    frames, _ = read_video_pyav(video_files["clip"], lambda metadata: [9, 39, 69])
    assert len(frames) == 3
    assert len(decoded) <= 30  # from the keyframes 0, 30 and 60 only; decoding through frame 69 gives 70 frames


def test_metadata_describes_the_clip(processor, video_files):
    out = processor(video_files["clip"], return_tensors="pt")
    metadata = out.video_metadata[0]
    assert (metadata.total_num_frames, metadata.fps, metadata.duration) == (75, 25.0, 3.0)
    assert (metadata.width, metadata.height) == (64, 48)
    assert metadata.frames_indices.tolist() == np.linspace(0, 74, 8).round().astype(int).tolist()
    assert out.pixel_values_videos.shape == (1, 8, 3, SIDE, SIDE)


def test_path_output_equals_llava_onevision_on_the_same_frames(processor, video_files, all_frames):
    out = processor(video_files["clip"], return_tensors="pt")
    indices = out.video_metadata[0].frames_indices
    expected = reference_processor()(all_frames[indices], return_tensors="pt")
    assert torch.equal(out.pixel_values_videos, expected.pixel_values_videos)


def test_array_output_equals_llava_onevision_on_the_same_frames(processor, all_frames):
    video = all_frames[:30]
    out = processor(video, return_tensors="pt")
    indices = np.linspace(0, 29, 8).round().astype(int)
    assert out.video_metadata[0].frames_indices.tolist() == indices.tolist()
    expected = reference_processor()(video[indices], return_tensors="pt")
    assert torch.equal(out.pixel_values_videos, expected.pixel_values_videos)


def test_every_input_form_gives_the_same_pixels(processor, video_files, all_frames):
    with open(video_files["clip"], "rb") as file:
        data = file.read()
    expected = processor(video_files["clip"], return_tensors="pt").pixel_values_videos
    indices = np.linspace(0, 74, 8).round().astype(int)
    frames = all_frames[indices]
    for video, sample in [(data, True), (all_frames, True), (torch.from_numpy(all_frames.copy()), True)]:
        assert torch.equal(
            processor(video, do_sample_frames=sample, return_tensors="pt").pixel_values_videos, expected
        )
    pil_frames = [Image.fromarray(frame) for frame in frames]
    assert torch.equal(
        processor(pil_frames, do_sample_frames=False, return_tensors="pt").pixel_values_videos, expected
    )


def test_short_clips_repeat_frames_instead_of_failing(processor):
    video = np.stack([np.full((20, 30, 3), value, np.uint8) for value in range(0, 250, 50)])  # 5 frames
    out = processor(video, num_frames=12, return_tensors="pt")
    indices = out.video_metadata[0].frames_indices.tolist()
    assert indices == np.linspace(0, 4, 12).round().astype(int).tolist()
    assert indices[0] == 0 and indices[-1] == 4 and len(set(indices)) == 5
    assert out.pixel_values_videos.shape[1] == 12


def test_sampling_by_fps(processor, video_files):
    out = processor(video_files["clip"], fps=2)  # 3 s at 2 fps: 6 frames, over num_frames
    assert out.video_metadata[0].frames_indices.tolist() == np.linspace(0, 74, 6).round().astype(int).tolist()
    with pytest.raises(ValueError, match="needs the video's frame rate"):
        processor(np.zeros((10, 8, 8, 3), np.uint8), fps=2)
    with_rate = processor(np.zeros((10, 8, 8, 3), np.uint8), fps=2, video_metadata={"total_num_frames": 10, "fps": 5})
    assert with_rate.video_metadata[0].frames_indices.tolist() == [0, 3, 6, 9]  # 2 s at 2 fps


def test_batches_of_videos(processor, video_files, all_frames):
    out = processor([[video_files["clip"]], [all_frames[:10], all_frames[10:40]]], return_tensors="pt")
    assert out.pixel_values_videos.shape == (3, 8, 3, SIDE, SIDE)
    assert [m.total_num_frames for m in out.video_metadata] == [75, 10, 30]


@pytest.mark.parametrize(
    "name, message",
    [
        ("no_frames", "no_frames.avi contains no video frames"),
        ("audio_only", "audio_only.wav has no video stream"),
    ],
)
def test_unusable_files_raise_value_errors_naming_them(processor, video_files, name, message):
    with pytest.raises(ValueError, match=message):
        processor(video_files[name])


@pytest.mark.parametrize(
    "bad, message",
    [
        ("/nonexistent/clip.mp4", "Video file not found: /nonexistent/clip.mp4"),
        (b"\x00\x01 not a video", r"Video bytes \(14 bytes\) could not be opened as a video"),
        (np.zeros((0, 8, 8, 3), np.uint8), r"Video 0 is empty or not a \(T, H, W, 3\) array"),
        ([], "No videos were given"),
        (3.5, "Unsupported video input of type float"),
    ],
)
def test_bad_videos_raise_value_errors(processor, bad, message):
    with pytest.raises(ValueError, match=message):
        processor(bad)


def test_truncated_file_raises_value_error(processor, video_files):
    with open(video_files["clip"], "rb") as file:
        data = file.read()
    with pytest.raises(ValueError, match="Video bytes .* could not be"):
        processor(data[: len(data) // 2])


def test_a_file_that_is_not_a_video_raises_value_error(processor, tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(ValueError, match=f"Video file {path} could not be opened as a video"):
        processor(str(path))


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_display_rotation_is_applied(degrees, video_files, all_frames):
    """A phone video stores its frames landscape and a display matrix that turns them: frames come out as shown."""
    indices = np.linspace(0, 74, 32).round().astype(np.int64)  # enough targets for parallel decoding
    frames, metadata = read_video_pyav(video_files[f"rotated{degrees}"], lambda metadata: indices)
    # the same encoded pixels as the unrotated clip, turned counter-clockwise as FFmpeg's autorotate does
    expected = np.rot90(all_frames[indices], degrees // 90, axes=(1, 2))
    assert frames.shape == expected.shape == ((32, 64, 48, 3) if degrees != 180 else (32, 48, 64, 3))
    assert np.array_equal(frames, expected)
    assert (metadata.height, metadata.width) == frames.shape[1:3]
    if degrees == 90:  # counter-clockwise: the top-left pixel ends at the bottom-left
        assert np.array_equal(frames[0, -1, 0], all_frames[0, 0, 0])


# ---- containers whose headers are missing or lie ---------------------------------------------------------------


def decoded_in_order(path):
    """Every frame of `path` in presentation order (a plain decode from the start): frame `i` is the `i`-th."""
    with av.open(path) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.mark.parametrize(
    "name, total, fps",
    [
        ("h264.ts", 75, 25.0),
        ("mpeg2.ts", 75, 25.0),
        ("h264.mkv", 45, 30.0),
        ("raw.h264", 30, 10.0),
        ("raw.m2v", 12, 4.0),
        ("lying.avi", 8, 25.0),
    ],
)
def test_frames_are_counted_and_timed_when_the_header_is_missing_or_lies(untrusted_header_videos, name, total, fps):
    path = untrusted_header_videos[name]
    expected = decoded_in_order(path)
    assert len(expected) == total
    uniform = np.linspace(0, total - 1, 12).round().astype(np.int64)  # 75 frames: [0, 7, 13, 20, ...]
    for indices in (uniform, [0, total // 3, total // 3 + 1, total - 1], list(range(total))):
        frames, metadata = read_video_pyav(path, lambda metadata, chosen=indices: chosen)
        assert np.array_equal(frames, expected[indices]), (name, indices)
    assert (metadata.total_num_frames, metadata.fps, metadata.duration) == (total, fps, total / fps)
    assert read_video_pyav(path)[0].shape[0] == total
    with open(path, "rb") as file:  # the same from bytes (a fetched URL): the format is probed from the content
        frames, metadata = read_video_pyav(file.read(), lambda metadata: uniform)
    assert np.array_equal(frames, expected[uniform]) and (metadata.total_num_frames, metadata.fps) == (total, fps)


def test_fps_sampling_uses_the_measured_rate_of_a_raw_stream(processor, untrusted_header_videos):
    out = processor(untrusted_header_videos["raw.m2v"], fps=2)  # 12 frames at 4 fps: 3 s, 6 frames at 2 fps
    assert out.video_metadata[0].fps == 4.0
    assert out.video_metadata[0].frames_indices.tolist() == np.linspace(0, 11, 6).round().astype(int).tolist()


def test_a_rotation_that_is_not_a_quarter_turn_warns_once_per_video(video_files, all_frames):
    path = video_files["rotated45"]
    indices = np.linspace(0, 74, 32).round().astype(np.int64)  # enough targets for parallel decoding
    with pytest.warns(UserWarning) as caught:
        frames, _ = read_video_pyav(path, lambda metadata: indices)
    message = f"Video file {path} has a display rotation of 45°, which is not a quarter turn: its frames are turned"
    assert [str(warning.message) for warning in caught] == [f"{message} by 0° counter-clockwise"]
    assert np.array_equal(frames, all_frames[indices])
