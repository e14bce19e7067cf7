"""Shared fixtures: everything is tiny, offline and built in-process."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from towervision_hf.checkpoint.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_config(tiny_tokenizer):
    from towervision_hf.checkpoint.tiny import tiny_config

    return tiny_config(tiny_tokenizer)


# ---- processing: tiny media written with PyAV -------------------------------------------------------------------


def write_test_clip(path, num_frames, width=64, height=48, fps=25, gop=10, codec="libx264"):
    """A clip (H.264 with B-frames by default; the container from the file extension) with a keyframe exactly every
    `gop` frames and every frame different."""
    import av
    import numpy as np

    if codec == "libx264":
        options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3"}
    else:
        options = {"g": str(gop)}
    rows, columns = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(num_frames):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[..., 0] = (columns * 4 + index * 3) % 256
            pixels[..., 1] = (rows * 5 + index) % 256
            pixels[..., 2] = (index * 7) % 256
            left = (index * 2) % (width - 12)
            pixels[height // 3 : 2 * height // 3, left : left + 12] = 255  # a moving box
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def remux_with_rotation(source_path, path, degrees):
    """A copy of `source_path` whose packets are copied unchanged and whose video stream carries a display rotation of
    `degrees` (counter-clockwise), as phones record portrait video. The bitstream is the source's, so both decode to
    the same pixels: an encoder need not be repeatable (x264 with threads is not)."""
    import av

    with av.open(str(source_path)) as source, av.open(str(path), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        stream.set_display_rotation(degrees)
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:  # the demuxer's final flush packet carries no data
                packet.stream = stream
                target.mux(packet)
    return str(path)


@pytest.fixture(scope="session")
def video_files(tmp_path_factory):
    """`clip`: 75-frame H.264 clip (25 fps, B-frames, keyframe every 10); `rotated45` / `90` / `180` / `270`: the
    same packets with that display rotation; `no_frames`: AVI with a video stream and no frame; `audio_only`: WAV
    without video stream."""
    import av
    import numpy as np

    folder = tmp_path_factory.mktemp("videos")
    files = {"clip": write_test_clip(folder / "clip.mp4", 75)}
    for degrees in (45, 90, 180, 270):
        files[f"rotated{degrees}"] = remux_with_rotation(files["clip"], folder / f"rotated{degrees}.mp4", degrees)
    files["no_frames"] = str(folder / "no_frames.avi")
    with av.open(files["no_frames"], "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    files["audio_only"] = str(folder / "audio_only.wav")
    with av.open(files["audio_only"], "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return files


@pytest.fixture(scope="session")
def untrusted_header_videos(tmp_path_factory):
    """Valid videos whose containers store no frame count or rate, or a wrong one: `h264.ts` (75 frames, 25 fps,
    1 s GOPs, B-frames) and `mpeg2.ts` (75, 25 fps) in MPEG-TS; `h264.mkv` (45 frames, 30 fps, millisecond
    timestamps); raw elementary streams `raw.h264` (30 frames at 10 fps, no timestamps) and `raw.m2v` (12 frames at
    4 fps, read by default at 25); `lying.avi` (8 frames whose header claims 2**31 - 1)."""
    import struct
    from pathlib import Path

    folder = tmp_path_factory.mktemp("untrusted_headers")
    files = {
        "h264.ts": write_test_clip(folder / "h264.ts", 75, gop=25),
        "mpeg2.ts": write_test_clip(folder / "mpeg2.ts", 75, gop=25, codec="mpeg2video"),
        "h264.mkv": write_test_clip(folder / "h264.mkv", 45, fps=30, gop=15),
        "raw.h264": write_test_clip(folder / "raw.h264", 30, fps=10),
        "raw.m2v": write_test_clip(folder / "raw.m2v", 12, fps=4, gop=4, codec="mpeg2video"),
    }
    avi = bytearray(Path(write_test_clip(folder / "clip.avi", 8, codec="mpeg4")).read_bytes())
    struct.pack_into("<I", avi, avi.index(b"avih") + 8 + 16, 2**31 - 1)  # main header: dwTotalFrames
    struct.pack_into("<I", avi, avi.index(b"strh") + 8 + 32, 2**31 - 1)  # stream header: dwLength
    (folder / "lying.avi").write_bytes(avi)
    files["lying.avi"] = str(folder / "lying.avi")
    return files


# ---- network: a local HTTP server on 127.0.0.1 ------------------------------------------------------------------


@pytest.fixture(scope="session")
def media_server():
    """`(base_url, routes, requests)`: a threaded HTTP server on 127.0.0.1 answering GET `path` from `routes[path]`,
    a callable `handler -> None` that writes the whole response (unknown paths get 404); `requests` lists the paths
    asked for."""
    import http.server
    import sys
    import threading

    routes, requests = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
            else:
                route(self)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            if not issubclass(sys.exc_info()[0], ConnectionError):  # a client that gave up (timeout, size cap)
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", routes, requests
    server.shutdown()
    server.server_close()
