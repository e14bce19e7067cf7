"""Image and video URLs: the processors fetch them (timeout, size cap, retries, redirects) from a server on
127.0.0.1, and every failure names the URL and the HTTP status or network error."""

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

from towervision_hf.checkpoint.tiny import build_tiny_processor
from towervision_hf.model.fetching_towervision import UrlFetchError, fetch_url


def png_bytes(height=40, width=100, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def body(data: bytes, status: int = 200, content_length: bool = True, delay: float = 0.0):
    def respond(handler):
        time.sleep(delay)
        handler.send_response(status)
        if content_length:
            handler.send_header("Content-Length", str(len(data)))
        else:
            handler.close_connection = True  # the body ends when the connection closes
        handler.end_headers()
        handler.wfile.write(data)

    return respond


def trickle(handler):
    """Headers at once, then a byte every 0.1 s: each read is quick, the whole body is slow."""
    handler.send_response(200)
    handler.send_header("Content-Length", "30")
    handler.end_headers()
    for _ in range(30):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(0.1)


def cut_short(data: bytes, announced: int):
    """Announces `announced` bytes, sends `data` (fewer), then closes the connection."""

    def respond(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(announced))
        handler.end_headers()
        handler.wfile.write(data)
        handler.close_connection = True

    return respond


def redirect(location: str):
    def respond(handler):
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return respond


def flaky(status: int, then):
    """Answers `status` to the first request, then as `then`."""
    calls = []

    def respond(handler):
        calls.append(handler.path)
        if len(calls) == 1:
            handler.send_error(status)
        else:
            then(handler)

    return respond


@pytest.fixture(scope="module")
def server(media_server, video_files):
    base, routes, requests = media_server
    with open(video_files["clip"], "rb") as handle:
        clip = handle.read()
    routes.update(
        {
            "/cat.png": body(png_bytes()),
            "/clip.mp4": body(clip),
            "/slow.png": body(png_bytes(), delay=2.0),
            "/trickle.bin": trickle,
            "/big.bin": body(b"x" * 5000),
            "/big-unannounced.bin": body(b"x" * 5000, content_length=False),
            "/moved.png": redirect("/cat.png"),
            "/busy.png": flaky(503, body(png_bytes())),
            "/broken.png": body(b"these bytes are no image"),
            "/short.png": cut_short(png_bytes()[:100], len(png_bytes())),
            "/short.mp4": cut_short(clip[: len(clip) // 2], len(clip)),
            "/to-ftp.png": redirect("ftp://127.0.0.1/cat.png"),
            "/hop.png": redirect("/to-ftp.png"),
        }
    )
    return base, requests


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor()


def test_fetch_200_and_redirect(server):
    base, _ = server
    assert fetch_url(f"{base}/cat.png") == png_bytes()
    assert fetch_url(f"{base}/moved.png") == png_bytes()


def test_404_fails_at_once_naming_url_and_status(server):
    base, requests = server
    sleeps = []
    with pytest.raises(UrlFetchError, match=rf"Could not fetch {base}/gone.png: HTTP 404") as error:
        fetch_url(f"{base}/gone.png", retries=3, sleep=sleeps.append)
    assert error.value.status == 404 and isinstance(error.value, ValueError)
    assert requests.count("/gone.png") == 1 and sleeps == []  # a 404 cannot change: no retry


def test_transient_errors_are_retried_with_backoff(server):
    base, requests = server
    sleeps = []
    assert fetch_url(f"{base}/busy.png", retries=2, backoff=0.25, sleep=sleeps.append) == png_bytes()
    assert requests.count("/busy.png") == 2 and sleeps == [0.25]


def test_slow_response_times_out_after_every_attempt(server):
    base, requests = server
    sleeps = []
    with pytest.raises(UrlFetchError, match=rf"{base}/slow.png: .*timed out after 0.3 s \(2 attempts\)"):
        fetch_url(f"{base}/slow.png", timeout=0.3, retries=1, backoff=0.5, sleep=sleeps.append)
    assert requests.count("/slow.png") == 2 and sleeps == [0.5]


def test_a_body_that_trickles_in_times_out_as_a_whole(server):
    base, _ = server
    with pytest.raises(UrlFetchError, match=rf"{base}/trickle.bin: timed out after 0.5 s"):
        fetch_url(f"{base}/trickle.bin", timeout=0.5, retries=0)


@pytest.mark.parametrize("path", ["/big.bin", "/big-unannounced.bin"])
def test_bodies_over_the_size_cap_are_refused(server, path):
    base, _ = server
    with pytest.raises(UrlFetchError, match=rf"{base}{path}: the body .*over the 1000-byte limit"):
        fetch_url(f"{base}{path}", max_bytes=1000)
    assert len(fetch_url(f"{base}{path}", max_bytes=5000)) == 5000


def test_a_body_cut_before_its_content_length_is_an_error_not_data(server):
    base, requests = server
    announced = len(png_bytes())
    sleeps = []
    with pytest.raises(UrlFetchError, match=rf"{base}/short.png: the body ended after 100 of the {announced} bytes"):
        fetch_url(f"{base}/short.png", retries=1, sleep=sleeps.append)
    assert requests.count("/short.png") == 2 and len(sleeps) == 1  # a dropped connection may pass: retried


@pytest.mark.parametrize("path", ["/to-ftp.png", "/hop.png"])
def test_redirects_off_http_are_refused_naming_both_urls(server, path):
    base, requests = server
    redirecting = "" if path == "/to-ftp.png" else f"{base}/to-ftp.png "
    message = rf"Could not fetch {base}{path}: {redirecting}redirected to ftp://127.0.0.1/cat.png; only http://"
    with pytest.raises(UrlFetchError, match=message):
        fetch_url(f"{base}{path}", retries=2, sleep=pytest.fail)  # a redirect off http(s) cannot change: no retry
    assert requests.count(path) == 1


def test_connection_refused_names_the_url():
    with pytest.raises(UrlFetchError, match=r"Could not fetch http://127.0.0.1:9/x.png: network error"):
        fetch_url("http://127.0.0.1:9/x.png", retries=0)


def test_image_urls_give_the_same_pixels_as_the_file(processor, server, tmp_path):
    base, _ = server
    path = tmp_path / "cat.png"
    path.write_bytes(png_bytes())
    from_url = processor.image_processor(f"{base}/cat.png", return_tensors="pt")
    from_file = processor.image_processor(str(path), return_tensors="pt")
    assert torch.equal(from_url.pixel_values, from_file.pixel_values)


def test_chat_template_fetches_image_and_video_urls(processor, server, video_files):
    """The README's usage: `{"type": "image", "url": "https://..."}` blocks (and video URLs) in a chat."""
    base, _ = server
    content = [
        {"type": "image", "url": f"{base}/cat.png"},
        {"type": "video", "url": f"{base}/clip.mp4"},
        {"type": "text", "text": "Descreva."},
    ]
    messages = [{"role": "user", "content": content}]
    out = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    local = processor.apply_chat_template(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": Image.open(io.BytesIO(png_bytes()))},
                    {"type": "video", "path": video_files["clip"]},
                    content[2],
                ],
            }
        ],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    assert torch.equal(out.input_ids, local.input_ids)
    assert torch.equal(out.pixel_values, local.pixel_values)
    assert torch.equal(out.pixel_values_videos, local.pixel_values_videos)


def test_readme_usage_with_an_image_url(processor, server):
    from towervision_hf import TowerVisionForConditionalGeneration
    from towervision_hf.checkpoint.tiny import tiny_config

    base, _ = server
    torch.manual_seed(0)
    model = TowerVisionForConditionalGeneration._from_config(tiny_config(processor.tokenizer)).eval()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "url": f"{base}/cat.png"},
                {"type": "text", "text": "Descreva esta imagem."},
            ],
        }
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    ).to(model.device)
    assert inputs["batch_num_images"].tolist() == [1]
    output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    prompt_length = inputs["input_ids"].shape[1]
    assert torch.equal(output[:, :prompt_length], inputs["input_ids"]) and output.shape[1] > prompt_length


@pytest.mark.parametrize(
    "path, message",
    [
        ("/gone.png", r"Could not fetch {base}/gone.png: HTTP 404"),
        ("/broken.png", r"Image {base}/broken.png could not be decoded as an image"),
    ],
)
def test_bad_image_urls_raise_value_errors_naming_them(processor, server, path, message):
    base, _ = server
    with pytest.raises(ValueError, match=message.format(base=base)):
        processor.image_processor(f"{base}{path}")


def test_bad_video_urls_raise_value_errors_naming_them(processor, server):
    base, _ = server
    with pytest.raises(ValueError, match=rf"Could not fetch {base}/gone.mp4: HTTP 404"):
        processor.video_processor(f"{base}/gone.mp4")
    with pytest.raises(ValueError, match=rf"Video {base}/broken.png could not be opened as a video"):
        processor.video_processor(f"{base}/broken.png")
    with pytest.raises(ValueError, match=rf"Could not fetch {base}/short.mp4: the body ended after"):
        processor.video_processor(f"{base}/short.mp4")
