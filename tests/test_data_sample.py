"""The embedded sample (shipped as package data) and synthetic-caption requests."""

import base64
import json
import socket
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from towervision_hf.data.cli import main
from towervision_hf.data.jsonl import read_jsonl
from towervision_hf.data.prompts import CAPTION_PROMPTS, SYNTH_SYSTEM_PROMPTS
from towervision_hf.data.sample import SAMPLE_LANGUAGES, draw_shape, load_sample, png_bytes, sample_dir
from towervision_hf.data.schema import load_images, load_video_frames, media, validate_sample
from towervision_hf.data.synth import ChatClient, synthesize_captions


def test_the_sample_loads_in_the_schema_for_every_stage():
    stages = {stage: list(load_sample(stage)) for stage in (1, 2, 3)}
    for rows in stages.values():
        assert rows and all(validate_sample(row) == [] for row in rows)
    assert {row["language"] for row in stages[1]} == {"en"}
    assert all(len(load_images(row)) == 1 for row in stages[1])
    languages = {row["language"] for rows in stages.values() for row in rows}
    assert len(languages) >= 10 and set(SAMPLE_LANGUAGES) <= languages
    vision = stages[2]
    assert any(len(row["images"]) == 2 for row in vision)  # multi-image
    assert any(not row["images"] and not row["videos"] for row in vision)  # text-only
    assert any(len(row["messages"]) == 4 for row in vision)  # multi-turn
    captions = [row for row in vision if row["id"].startswith("s2-caption")]
    assert all(row["messages"][0]["content"][1]["text"] in CAPTION_PROMPTS[row["language"]] for row in captions)
    video = stages[3]
    assert Counter(row["language"] == "en" for row in video) == {True: 8, False: 8}  # half English
    frames = load_video_frames(video[0]["videos"][0])
    assert frames.shape == (8, 64, 64, 3)
    # the shape really moves: its mass shifts between the first and the last frame
    darkness = 255 - frames.mean(axis=(1, 3))  # (frames, width)
    assert abs(int(darkness[0].argmax()) - int(darkness[-1].argmax())) > 20


def test_the_shipped_sample_is_what_the_generator_produces(tmp_path):
    assert main(["sample", "--out", str(tmp_path)]) == 0
    shipped = sample_dir()
    files = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(shipped) for path in shipped.rglob("*") if path.is_file())
    for relative in files:
        new, old = tmp_path / relative, shipped / relative
        if relative.suffix == ".jsonl":
            assert new.read_text() == old.read_text(), relative
        elif relative.suffix == ".png":
            assert Image.open(new).tobytes() == Image.open(old).tobytes(), relative
        else:  # encoded video bytes depend on the FFmpeg build: compare decoded frames
            new_frames, old_frames = (load_video_frames(media(path=str(path))) for path in (new, old))
            assert new_frames.shape == old_frames.shape
            assert np.abs(new_frames.astype(int) - old_frames.astype(int)).mean() < 2, relative
    assert sum((shipped / relative).stat().st_size for relative in files) < 1_500_000


def test_synthetic_caption_requests(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name, shape in (("b.png", "square"), ("a.png", "circle")):
        (images / name).write_bytes(png_bytes(draw_shape(shape, "red", (32, 32))))
    (images / "notes.txt").write_text("not an image")
    requests = []

    def post(url, payload, headers, timeout):
        requests.append((url, payload, headers))
        if len(requests) == 2:
            raise OSError("connection reset")
        return {"choices": [{"message": {"content": " A red circle on white. "}}]}

    client = ChatClient("http://127.0.0.1:9/v1/", api_key="k", post=post)
    rows = list(synthesize_captions(images, client, "gemini-x", seed=1))
    assert [url for url, _, _ in requests] == ["http://127.0.0.1:9/v1/chat/completions"] * 2
    url, payload, headers = requests[0]
    assert headers["Authorization"] == "Bearer k" and payload["model"] == "gemini-x"
    system, user = payload["messages"]
    assert system["role"] == "system" and any(system["content"] in family for family in SYNTH_SYSTEM_PROMPTS.values())
    image_part, text_part = user["content"]
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(image_part["image_url"]["url"].split(",", 1)[1]) == (images / "a.png").read_bytes()
    assert text_part["text"] in CAPTION_PROMPTS["en"]
    assert len(rows) == 1 and rows[0]["messages"][1]["content"][0]["text"] == "A red circle on white."
    assert rows[0]["synthesis"]["family"] in SYNTH_SYSTEM_PROMPTS
    assert validate_sample({k: v for k, v in rows[0].items() if k != "synthesis"}) == []


def test_synth_command_writes_local_jsonl(tmp_path, monkeypatch):
    import towervision_hf.data.synth as synth

    images = tmp_path / "images"
    images.mkdir()
    (images / "x.png").write_bytes(png_bytes(draw_shape("triangle", "blue", (16, 16))))
    monkeypatch.setattr(synth, "_post_json", lambda url, payload, headers, timeout: {
        "choices": [{"message": {"content": "A blue triangle."}}]})
    assert main(["synth", "--images", str(images), "--endpoint", "http://127.0.0.1:9/v1", "--model", "m",
                 "--families", "spatial", "--out", str(tmp_path / "synth")]) == 0
    rows = list(read_jsonl(tmp_path / "synth"))
    assert rows[0]["synthesis"] == {"family": "spatial", "model": "m"}
    image = Path(rows[0]["images"][0]["path"])  # brought next to the JSONL
    assert image.parent == (tmp_path / "synth" / "media").resolve()
    assert image.read_bytes() == (images / "x.png").read_bytes()
    assert json.loads((tmp_path / "synth" / "report.json").read_text())["total"] == 1


def test_synth_fails_when_every_request_fails(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b"):
        (images / f"{name}.png").write_bytes(png_bytes(draw_shape("circle", "red", (16, 16))))
    with socket.socket() as probe:  # a port on 127.0.0.1 that nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["synth", "--images", str(images), "--endpoint", f"http://127.0.0.1:{port}/v1", "--model", "m"]
    assert main([*argv, "--out", str(tmp_path / "synth")]) == 1
    err = capsys.readouterr().err
    assert f"every request to http://127.0.0.1:{port}/v1 failed; the first: a.png:" in err and "refused" in err
