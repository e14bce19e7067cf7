# Copyright 2026 The towervision-hf authors. Licensed under the Apache License, Version 2.0.
"""Video processor for TowerVideo: uniform frame sampling, PyAV decoding that seeks, 384 px frames without tiling."""

# First: importing the configuration checks the installed transformers version and fails clearly if unsupported.
from .configuration_towervision import check_transformers_version  # noqa: F401  # isort: skip

import bisect
import functools
import io
import itertools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import torch
from PIL import Image
from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor
from transformers.utils import is_av_available
from transformers.video_utils import VideoMetadata

from .fetching_towervision import fetch_url, is_url
from .image_processing_towervision import to_rgb_image


if is_av_available():  # only needed to decode video files; arrays and frame lists work without it
    import av


MIN_FRAMES_PER_THREAD = 8  # fewer targets than this per thread are not worth a second container
RATE_TOLERANCE = 0.01  # a header's frame rate within 1 % of the rate measured from timestamps is kept


def is_encoded_video(video) -> bool:
    """Whether `video` is a file to decode (path or encoded bytes) rather than decoded frames."""
    return isinstance(video, (str, os.PathLike, bytes, bytearray))


def is_frame(frame) -> bool:
    return isinstance(frame, Image.Image) or (isinstance(frame, (np.ndarray, torch.Tensor)) and frame.ndim == 3)


def make_batched_video_inputs(videos) -> list:
    """Flatten (possibly per-sample nested) video inputs into a list with one entry per video.

    A video is a path, encoded bytes, a `(T, H, W, 3)` array or tensor, or a list of frames (PIL images or
    `(H, W, 3)` arrays); a 5-D array is a batch of videos. Empty nested lists (samples without video) add nothing.
    """
    if is_encoded_video(videos) or (isinstance(videos, (np.ndarray, torch.Tensor)) and videos.ndim == 4):
        return [videos]
    if isinstance(videos, (np.ndarray, torch.Tensor)) and videos.ndim == 5:
        return list(videos)
    if isinstance(videos, (list, tuple)):
        if videos and all(is_frame(frame) for frame in videos):
            return [list(videos)]
        return [video for item in videos for video in make_batched_video_inputs(item)]
    raise ValueError(
        f"Unsupported video input of type {type(videos).__name__}: pass a path, encoded bytes, a (T, H, W, 3) array "
        "or a list of frames"
    )


def video_name(source) -> str:
    if isinstance(source, (bytes, bytearray)):
        return f"Video bytes ({len(source)} bytes)"
    return f"Video {source}" if is_url(source) else f"Video file {source}"


def uniform_frame_indices(total_num_frames: int, num_frames: int) -> np.ndarray:
    """`num_frames` indices spread uniformly over `total_num_frames` (rounded); a shorter clip repeats frames."""
    return np.linspace(0, total_num_frames - 1, num_frames).round().astype(np.int64)


def read_video_pyav(source, sample_indices_fn=None) -> tuple[np.ndarray, VideoMetadata]:
    """Decode the frames chosen by `sample_indices_fn(metadata=...)` (all frames when `None`) with PyAV.

    `source` is a local path, encoded bytes or an http(s) URL (fetched first with `fetching_towervision.fetch_url`).

    Frame `i` is the frame shown at time `i / fps` from the start of the stream (for constant-frame-rate video, the
    `i`-th frame). Headers are trusted only when the container's index confirms them (see `_stream_timing`): other
    streams (MPEG-TS, raw `.h264` / `.m2v`, a header claiming more frames than the file holds) have their packets
    counted and their rate measured from their timestamps; frames without timestamps are timed by their count.
    Only what is needed is decoded: the decoder jumps to the keyframe before a target when the container's index
    shows one between the current position and the target (a stream without index is decoded from its start), and
    non-reference frames before a target are skipped. With an index, consecutive groups of targets are decoded in
    parallel threads (one container each; PyAV decodes without the GIL). Targets past the last decodable frame get
    the last decoded frame.

    Frames are returned as displayed: a rotation in the stream's display matrix (e.g. -90 for portrait phone videos)
    is applied; one that is not a quarter turn (45°) is rounded to the nearest quarter turn, with a warning.
    Returns `(frames, metadata)`: `frames` is `(len(indices), H, W, 3)` uint8 RGB; `metadata` carries
    `total_num_frames`, `fps`, `duration` (seconds), the displayed `width` and `height` and `frames_indices`.
    Any failure (missing or undecodable file, no video stream, no frame) is a `ValueError` naming the source.
    """
    if not is_av_available():
        raise ImportError("Decoding video files needs PyAV: `pip install av`")
    name = video_name(source)
    if is_url(source):
        source = fetch_url(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ValueError(f"Video file not found: {path}")
        open_container = functools.partial(av.open, path)
    else:
        open_container = functools.partial(lambda data: av.open(io.BytesIO(data)), bytes(source))
    try:
        container = open_container()
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{name} could not be opened as a video: {error}") from error
    try:
        with container:
            if not container.streams.video:
                raise ValueError(f"{name} has no video stream")
            stream = container.streams.video[0]
            metadata, timing = _stream_timing(open_container, stream)
            if metadata.total_num_frames < 1:
                raise ValueError(f"{name} contains no video frames")
            indices = (
                np.arange(metadata.total_num_frames)
                if sample_indices_fn is None
                else sample_indices_fn(metadata=metadata)
            )
            indices = np.asarray(indices, dtype=np.int64)
            targets = np.unique(indices)
            seekable = any(entry.is_keyframe for entry in stream.index_entries)
            workers = min(os.cpu_count() or 1, len(targets) // MIN_FRAMES_PER_THREAD) if seekable else 1
            odd_rotations = set()  # display rotations that are not quarter turns, filled by the decoding threads
            if workers <= 1:
                decoded = _decode_targets(container, targets, timing, odd_rotations)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    parts = pool.map(
                        lambda group: _decode_targets(open_container(), group, timing, odd_rotations, close=True),
                        np.array_split(targets, workers),
                    )
                    decoded = [frame for part in parts for frame in part]
    except av.FFmpegError as error:
        raise ValueError(f"{name} could not be decoded: {error}") from error
    for rotation in sorted(odd_rotations):
        turned = round(rotation / 90) % 4 * 90
        warnings.warn(
            f"{name} has a display rotation of {rotation:g}°, which is not a quarter turn: its frames are turned by "
            f"{turned}° counter-clockwise",
            stacklevel=2,
        )
    # targets past the end of an over-counted stream get the last decoded frame
    decoded = list(itertools.accumulate(decoded, lambda previous, frame: previous if frame is None else frame))
    if decoded[0] is None:
        raise ValueError(f"{name} has no decodable video frame up to frame {targets[0]}")
    frames = np.stack(decoded)[np.searchsorted(targets, indices)]
    metadata.height, metadata.width = frames.shape[1:3]  # as displayed (rotated)
    metadata.frames_indices = indices
    return frames, metadata


def _stream_timing(open_container, stream) -> tuple[VideoMetadata, tuple[Fraction, int]]:
    """The stream's metadata and `(fps, first timestamp)`.

    The header's frame count and rate are used when the container's index confirms the count (MP4, indexed AVI: an
    entry per frame). Otherwise the header is unknown or cannot be trusted (MPEG-TS and raw streams store no count,
    an AVI header may claim 2**31 - 1 frames, raw demuxers report a default 25 fps): the frames are counted from the
    packets of a second container (seeking back is unreliable without an index) and the rate is measured from their
    timestamps (the header's rate is kept where it agrees within `RATE_TOLERANCE`), or read from the codec when there
    are none (raw H.264).
    """
    total = stream.frames
    if 0 < total <= len(stream.index_entries):
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(1)
        start = stream.start_time or 0
    else:
        with open_container() as counting:
            timestamps = [packet.pts for packet in counting.demux(counting.streams.video[0]) if packet.size]
        total = len(timestamps)
        stamped = sorted({timestamp for timestamp in timestamps if timestamp is not None})
        if len(stamped) > 1:
            measured = (len(stamped) - 1) / ((stamped[-1] - stamped[0]) * stream.time_base)
            header = stream.average_rate
            # the header's rate where the timestamps agree (millisecond timestamps make 30 fps measure 29.995)
            fps = header if header and abs(header / measured - 1) < RATE_TOLERANCE else measured
        else:
            fps = stream.guessed_rate or stream.average_rate or Fraction(1)
        start = stamped[0] if stamped else 0
    metadata = VideoMetadata(
        total_num_frames=int(total),
        fps=float(fps),
        duration=float(total / fps),
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        video_backend="pyav",
    )
    return metadata, (Fraction(fps), start)


def _decode_targets(
    container, targets: np.ndarray, timing: tuple[Fraction, int], odd_rotations: set, close: bool = False
) -> list[np.ndarray | None]:
    """RGB frames at the sorted frame indices `targets` of the container's first video stream; `None` for targets
    past the end of the stream when this container decoded nothing before them. Display rotations that are not
    quarter turns are added to `odd_rotations`."""
    try:
        reader = _FrameReader(container, container.streams.video[0], *timing)
        frames, rotations = [], {}
        for index in targets:
            frame = reader.frame_at(int(index))
            if frame is not None and frame.rotation % 90:
                odd_rotations.add(frame.rotation)
            frames.append(None if frame is None else displayed_pixels(frame, rotations))
        return frames
    finally:
        if close:
            container.close()


# FFmpeg filters that turn a frame by its display rotation, per counter-clockwise quarter turn (FFmpeg's autorotate)
ROTATION_FILTERS = {1: [("transpose", "cclock")], 2: [("hflip", None), ("vflip", None)], 3: [("transpose", "clock")]}


def displayed_pixels(frame, rotations: dict) -> np.ndarray:
    """`(H, W, 3)` uint8 RGB pixels of a decoded frame as players show them: the rotation of the stream's display
    matrix (phone videos) applied, like FFmpeg's autorotate (mirroring in the matrix is not). The turn runs in FFmpeg
    on the decoded planes, several times faster than turning the RGB array; `rotations` caches its filter graphs."""
    quarter_turns = round(frame.rotation / 90) % 4  # `rotation`: degrees counter-clockwise
    if quarter_turns:
        key = (quarter_turns, frame.width, frame.height, frame.format.name)
        if key not in rotations:
            rotations[key] = _rotation_graph(frame, ROTATION_FILTERS[quarter_turns])
        rotations[key].push(frame)
        frame = rotations[key].pull()
    return frame.to_ndarray(format="rgb24")


def _rotation_graph(frame, filters):
    graph = av.filter.Graph()
    nodes = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format, time_base=frame.time_base)]
    nodes += [graph.add(name, argument) for name, argument in filters] + [graph.add("buffersink")]
    for source, target in zip(nodes, nodes[1:]):
        source.link_to(target)
    graph.configure()
    return graph


class _FrameReader:
    """Walks a video stream forward to increasing frame indices, seeking only when a keyframe lies in between."""

    def __init__(self, container, stream, fps: Fraction, start: int):
        self.container, self.stream, self.codec = container, stream, stream.codec_context
        self.ticks_per_frame = 1 / (fps * stream.time_base)
        self.start = start
        # index timestamps (decode timestamps for some containers): only used to decide when seeking pays off
        self.keyframes = sorted(entry.timestamp for entry in stream.index_entries if entry.is_keyframe)
        self.frames = None  # decoded frames in presentation order since the last seek
        self.last = None  # last decoded frame
        self.lower = None  # smallest timestamp accepted for the current target
        self.decoded = 0  # frames decoded since the start of the stream, while no seek happened

    def frame_at(self, index: int):
        """The frame shown at `index / fps` (within half a frame), or the last decoded one if the stream ends."""
        self.lower = self.start + (index - Fraction(1, 2)) * self.ticks_per_frame
        if self.frames is None and not self.keyframes:  # no index to seek with: decode from the start
            self.frames = self._decode()
        elif self.frames is None or self._keyframe_before_target():
            self._seek()
        for frame in self.frames:
            self.last = frame
            if frame.pts >= self.lower:
                break
        return self.last

    def _keyframe_before_target(self) -> bool:
        if self.last is None:
            return False
        position = bisect.bisect_right(self.keyframes, self.last.pts)
        return position < len(self.keyframes) and self.keyframes[position] <= self.lower

    def _seek(self):
        """Seek to a keyframe at or before the target. Some indexes hold decode timestamps, so back off until the
        first decoded frame is not past the target."""
        target, backoff = self.lower, self.ticks_per_frame
        while True:
            self.container.seek(max(int(target), self.start), stream=self.stream, backward=True, any_frame=False)
            self.frames = self._decode()
            first = next(self.frames, None)
            if first is None or first.pts <= self.lower or target <= self.start:
                break
            target, backoff = target - backoff, backoff * 2
        if first is not None:
            self.frames = itertools.chain([first], self.frames)

    def _decode(self):
        for packet in self.container.demux(self.stream):
            # frames before the target that no other frame references need not be decoded at all
            before_target = packet.pts is not None and packet.pts < self.lower
            self.codec.skip_frame = "NONREF" if before_target else "DEFAULT"
            for frame in packet.decode():
                if frame.pts is None:  # raw streams carry no timestamps (and no index: never sought): time by count
                    frame.pts = round(self.start + self.decoded * self.ticks_per_frame)
                self.decoded += 1
                yield frame


class TowerVisionVideoProcessor(LlavaOnevisionVideoProcessor):
    r"""
    Video processor of TowerVideo: `num_frames` frames sampled uniformly, each resized to `size` (384×384, bicubic,
    no tiling) and normalised with mean = std = 0.5. For the same frames the output equals transformers'
    `LlavaOnevisionVideoProcessor` configured the same way.

    Videos may be local paths, http(s) URLs or encoded bytes (decoded with PyAV, seeking so that only the needed
    frames are decoded, see `read_video_pyav`), `(T, H, W, 3)` arrays/tensors, or lists of frames (PIL images or
    arrays).

    Frame sampling (`do_sample_frames=True`, the default): indices `np.linspace(0, total - 1, n).round()` with
    `n = num_frames`, or, when `fps` is given (it takes precedence over `num_frames`),
    `n = max(1, int(total / video_fps * fps))`. A clip shorter than `n` frames repeats frames by the same formula
    rather than failing.

    Returns `pixel_values_videos` `(num_videos, n, 3, H, W)` and, unless `return_metadata=False`, `video_metadata`
    (one `VideoMetadata` per video: `frames_indices`, `fps`, `duration`, `total_num_frames`, `width`, `height`).
    Missing, undecodable or empty videos and files without a video stream raise a `ValueError` naming them.
    """

    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 384, "width": 384}
    do_sample_frames = True
    num_frames = 32
    return_metadata = True

    def sample_frames(
        self, metadata: VideoMetadata, num_frames: int | None = None, fps: float | None = None, **kwargs
    ):
        """Uniformly spread frame indices (see the class docstring); repeats frames of clips shorter than asked."""
        total = metadata.total_num_frames
        if fps is not None:
            if not metadata.fps:
                raise ValueError("Sampling by `fps` needs the video's frame rate: pass `video_metadata` with `fps`")
            num_frames = max(1, int(total / metadata.fps * fps))
        return uniform_frame_indices(total, num_frames or self.num_frames)

    def fetch_videos(self, video_url_or_urls, sample_indices_fn=None):
        """Decode paths, http(s) URLs or encoded bytes with PyAV (torchcodec is not needed)."""
        if isinstance(video_url_or_urls, (list, tuple)):
            return list(zip(*[self.fetch_videos(video, sample_indices_fn) for video in video_url_or_urls]))
        return read_video_pyav(video_url_or_urls, sample_indices_fn)

    def _decode_and_sample_videos(self, videos, video_metadata=None, do_sample_frames=None, sample_indices_fn=None):
        videos = make_batched_video_inputs(videos)
        if not videos:
            raise ValueError("No videos were given")
        if video_metadata is not None:
            video_metadata = video_metadata if isinstance(video_metadata, (list, tuple)) else [video_metadata]
            if len(video_metadata) != len(videos):
                raise ValueError(f"Got {len(videos)} videos but {len(video_metadata)} `video_metadata` entries")
        decoded, metadata = [], []
        for position, video in enumerate(videos):
            if is_encoded_video(video):
                frames, video_info = self.fetch_videos(video, sample_indices_fn if do_sample_frames else None)
            else:
                frames = _frames_array(video, position)
                video_info = video_metadata[position] if video_metadata is not None else None
                video_info = VideoMetadata(**video_info) if isinstance(video_info, dict) else video_info
                video_info = video_info or VideoMetadata(total_num_frames=len(frames))
                video_info.total_num_frames = len(frames)
                if do_sample_frames:
                    video_info.frames_indices = sample_indices_fn(metadata=video_info)
                    frames = frames[video_info.frames_indices]
                else:
                    video_info.frames_indices = np.arange(len(frames))
            decoded.append(frames)
            metadata.append(video_info)
        return decoded, metadata


def _frames_array(video, position: int):
    """A `(T, H, W, C)` or `(T, C, H, W)` array or tensor from decoded frames; empty videos are rejected."""
    if isinstance(video, (list, tuple)):
        video = np.stack([np.asarray(to_rgb_image(frame)) for frame in video])
    if video.ndim != 4 or len(video) == 0:
        raise ValueError(f"Video {position} is empty or not a (T, H, W, 3) array: shape {tuple(video.shape)}")
    return video


__all__ = ["TowerVisionVideoProcessor", "read_video_pyav", "uniform_frame_indices"]
