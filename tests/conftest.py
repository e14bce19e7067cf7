"""Shared fixtures: everything is tiny, offline and built in-process."""

import copy
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


# ---- builders shared by several test files (tests import them from here, never from each other) -------------


def llava_single_tile_image_processor(tile: int, aspect_ratio: str):
    """transformers' LLaVA(-1.5) image processor set up as our single-tile `aspect_ratio` ("square" or "pad")."""
    from PIL import Image
    from transformers import LlavaImageProcessorPil

    return LlavaImageProcessorPil(
        size={"height": tile, "width": tile},
        do_center_crop=False,
        do_pad=aspect_ratio == "pad",
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        resample=Image.Resampling.BICUBIC,
    )


def image(height, width, seed):
    """A random RGB PIL image of `(height, width)`."""
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def turn(role, *blocks):
    """A schema message; strings become text blocks."""
    return {"role": role, "content": [{"type": "text", "text": b} if isinstance(b, str) else b for b in blocks]}


IMAGE, VIDEO = {"type": "image", "text": None}, {"type": "video", "text": None}


def rows():
    """A tiled single image (two QA turns), a two-image sample, a video and a text-only row."""
    import numpy as np

    return [
        {
            "id": "tiled",
            "images": [image(90, 200, 0)],
            "videos": [],
            "messages": [
                turn("user", IMAGE, "What colour?"),
                turn("assistant", "Red."),
                turn("user", "Which shape?"),
                turn("assistant", "A circle."),
            ],
        },
        {
            "id": "multi",
            "images": [image(40, 60, 1), image(70, 50, 2)],
            "videos": [],
            "messages": [turn("user", IMAGE, IMAGE, "Same colour?"), turn("assistant", "Nein.")],
        },
        {
            "id": "video",
            "images": [],
            "videos": [np.random.default_rng(3).integers(0, 256, (6, 48, 64, 3), dtype=np.uint8)],
            "messages": [turn("user", VIDEO, "Where does it go?"), turn("assistant", "To the left.")],
        },
        {
            "id": "text",
            "images": [],
            "videos": [],
            "messages": [turn("system", "Be brief."), turn("user", "Translate: hello"), turn("assistant", "Olá")],
        },
    ]


def untrainable_rows():
    """Rows that would train on nothing, by id, with the message that names them."""
    text = rows()[3]
    return {
        "sharegpt": (
            {**text, "id": "sharegpt", "messages": [turn("human", "Hi"), turn("gpt", "Hello")]},
            r"sample 'sharegpt': messages\[0\].role is 'human', not one of .*data adapters",
        ),
        "empty": (
            {**text, "id": "empty", "messages": [turn("user", "Hi"), turn("assistant", "  ")]},
            r"sample 'empty': messages\[1\] \(assistant\) has no text; .*end-of-turn marker alone",
        ),
        "no_blocks": (
            {**text, "id": "no_blocks", "messages": [turn("user", "Hi"), {"role": "assistant", "content": []}]},
            r"sample 'no_blocks': messages\[1\] \(assistant\) has no text",
        ),
        "no_answer": (
            {**text, "id": "no_answer", "messages": [turn("user", "Hi")]},
            "sample 'no_answer' has no assistant turn",
        ),
    }


def stage_args(stage, output_dir, *extra):
    """`towervision train` arguments for the tiny recipe `stage`, writing to `output_dir`, quiet."""
    return [
        f"tiny/{stage}.yaml",
        "--output_dir",
        str(output_dir),
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        *extra,
    ]


# ---- the paper and a tiny Tower+ ----------------------------------------------------------------------------

# Table 8 of the paper, as printed: row, samples, percentage, tag
TABLE_8 = [
    ("DVQA", 199995, "3.17", "public"),
    ("ChartQA", 25055, "0.40", "synthetic"),
    ("PlotQA", 157070, "2.49", "public"),
    ("TabMWP", 22717, "0.36", "public"),
    ("VQAv2", 428708, "6.79", "public"),
    ("RLAIF-4V", 59408, "0.94", "synthetic"),
    ("DocVQA", 9664, "0.15", "synthetic"),
    ("TextVQA", 15690, "0.25", "synthetic"),
    ("ST-VQA", 17242, "0.27", "public"),
    ("PixMo-Docs", 3634, "0.06", "public"),
    ("A-OKVQA", 11853, "0.19", "synthetic"),
    ("OKVQA", 9009, "0.14", "public"),
    ("AI2D", 7791, "0.12", "public"),
    ("ScienceQA", 758, "0.012", "public"),
    ("Pangea-Cultural", 55438, "0.88", "public"),
    ("Pangea-Multi", 428838, "6.79", "public"),
    ("PixMo-Cap-Translated", 367779, "5.83", "translated"),
    ("CulturalGround-OE", 401149, "6.35", "public"),
    ("CulturalGround-MCQs", 379834, "6.02", "public"),
    ("IconQA", 19543, "0.31", "synthetic"),
    ("InfographicVQA", 2049, "0.03", "synthetic"),
    ("Stratos", 12585, "0.20", "public"),
    ("TallyQA", 98675, "1.56", "public"),
    ("PixMo-Count", 8128, "0.13", "public"),
    ("VBlocks-PixMo-AMA", 154336, "2.44", "public"),
    ("VBlocks-PixMo-Cap", 702205, "11.12", "public"),
    ("VBlocks-PixMo-CapQA", 262862, "4.16", "public"),
    ("EuroBlocks-SFT", 1094265, "17.34", "public"),
    ("LLaVA-Video-178k-subset", 697618, "11.05", "public"),
    ("LLaVA-Video-178k-translated", 697617, "11.05", "translated"),
]
PRINTED_TOTAL, PRINTED_ENGLISH, PRINTED_MULTILINGUAL = 6_313_286, 3_982_630, 2_330_656


GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n{{ message['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_tower(tmp_path_factory, tiny_tokenizer):
    """A folder holding a tiny random Tower+ (Gemma2) with a Gemma chat template, for the translation commands."""
    import torch
    from transformers import Gemma2ForCausalLM

    from towervision_hf.checkpoint.tiny import tiny_config

    path = tmp_path_factory.mktemp("tiny-tower")
    torch.manual_seed(0)
    config = tiny_config(tiny_tokenizer).text_config
    Gemma2ForCausalLM(config).save_pretrained(path)
    tokenizer = copy.deepcopy(tiny_tokenizer)  # the session's tokenizer stays without a template
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return str(path)


# ---- packed rows: the collator's mix and the per-sample reference loss ---------------------------------------


def jpeg_entry(height, width, orientation=1):
    """A schema image entry: JPEG bytes of a noise image with an EXIF orientation."""
    import io

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image(height, width, 7).save(buffer, format="JPEG", exif=exif)
    return {"bytes": buffer.getvalue(), "path": None, "url": None}


def mixed_rows():
    """The collator's mix plus a rotated JPEG given as schema bytes and a second tiled image."""
    extra = [
        {
            "id": "rotated",
            "images": [jpeg_entry(60, 150, orientation=6)],  # stored 150 wide, shown 60 wide
            "videos": [],
            "messages": [turn("user", IMAGE, "Wie viele?"), turn("assistant", "Drei.")],
        },
        {
            "id": "tall",
            "images": [image(230, 80, 8)],
            "videos": [],
            "messages": [turn("user", IMAGE, "Describe."), turn("assistant", "A tall picture of noise.")],
        },
    ]
    return rows() + extra


def per_sample_loss_and_grads(model, batches):
    """Summed next-token cross-entropy over the labelled positions and the gradients of that sum."""
    import torch

    from towervision_hf.training import SKIPPED_KEY
    from towervision_hf.training.packing import PACKING_KEY

    model.zero_grad()
    total = 0
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", SKIPPED_KEY, PACKING_KEY)}
        logits = model(**inputs).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100, reduction="sum"
        )
        loss.backward()
        total += loss.item()
    return total, {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
