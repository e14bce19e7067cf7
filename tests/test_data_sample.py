"""The embedded sample (shipped as package data) and the synthetic VQA answers (A.5.2 prompts)."""

import base64
import json
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from towervision_hf.data.cli import main
from towervision_hf.data.jsonl import read_jsonl, write_jsonl
from towervision_hf.data.prompts import ANSWER_FORMAT_PROMPTS, CAPTION_PROMPTS
from towervision_hf.data.report import BuildReport
from towervision_hf.data.sample import SAMPLE_LANGUAGES, draw_shape, load_sample, png_bytes, sample_dir
from towervision_hf.data.schema import (
    image_block,
    load_images,
    load_video_frames,
    make_sample,
    media,
    message,
    validate_sample,
)
from towervision_hf.data.synth import ChatClient, synthesize_answers


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


class ChatServer:
    """An OpenAI-compatible `/v1/chat/completions` on 127.0.0.1 that records requests; the `fail`-th one gets a 500."""

    def __init__(self, fail: int | None = None):
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, dict(self.headers), body))
                if len(server.requests) == fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                question = body["messages"][1]["content"][-1]["text"]
                answer = json.dumps({"choices": [{"message": {"content": f" Final Answer: {question[:4]} "}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer.encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def question_rows(tmp_path):
    """A two-question chart row with embedded bytes and a one-question row with an image file."""
    picture = tmp_path / "q.png"
    picture.write_bytes(png_bytes(draw_shape("circle", "red", (16, 16))))
    chart = png_bytes(draw_shape("square", "blue", (24, 16)))
    return [
        make_sample(
            "chart-1",
            "chartqa",
            "en",
            [
                message("user", image_block(), "What is the highest bar?"),
                message("assistant", "7"),
                message("user", "And the lowest?"),
                message("assistant", "2"),
            ],
            images=[media(bytes=chart)],
        ),
        make_sample(
            "photo-1",
            "chartqa",
            "en",
            [message("user", image_block(), "What colour is the circle?"), message("assistant", "red")],
            images=[media(path=str(picture))],
        ),
    ]


def test_synthetic_answers_re_ask_every_question_with_the_papers_system_prompts(tmp_path):
    server = ChatServer(fail=3)
    try:
        report = BuildReport("synth")
        client = ChatClient(server.endpoint, api_key="k", max_retries=0)  # one at a time, the failure not retried
        rows = list(
            synthesize_answers(question_rows(tmp_path), client, "gemini-2.5", seed=1, report=report, concurrency=1)
        )
    finally:
        server.close()
    assert len(server.requests) == 3 and all(path == "/v1/chat/completions" for path, _, _ in server.requests)
    _, headers, payload = server.requests[0]
    assert headers["authorization"] == "Bearer k" and payload["model"] == "gemini-2.5"
    system, user = payload["messages"]
    every_prompt = {prompt for prompts in ANSWER_FORMAT_PROMPTS.values() for prompt in prompts}
    assert system["role"] == "system" and system["content"] in every_prompt
    image_part, text_part = user["content"]
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")
    assert (
        base64.b64decode(image_part["image_url"]["url"].split(",", 1)[1])
        == question_rows(tmp_path)[0]["images"][0]["bytes"]
    )
    assert text_part["text"] == "What is the highest bar?"
    # the two questions of one image get different prompts; the failed request is counted, not written
    first, second = (body["messages"][0]["content"] for _, _, body in server.requests[:2])
    assert first != second
    assert report.to_dict()["sources"]["synthetic"]["skipped"] == {"request_failed": 1}
    assert [row["id"] for row in rows] == ["chart-1:q0:p0", "chart-1:q1:p0"]
    assert rows[1]["messages"][0] == {"role": "system", "content": [{"type": "text", "text": second}]}
    assert rows[1]["messages"][1]["content"] == [
        {"type": "image", "text": None},
        {"type": "text", "text": "And the lowest?"},
    ]
    assert rows[1]["messages"][2]["content"][0]["text"] == "Final Answer: And"
    assert rows[1]["synthesis"] == {
        "model": "gemini-2.5",
        "family": next(family for family, prompts in ANSWER_FORMAT_PROMPTS.items() if second in prompts),
        "prompt": second,
        "source_id": "chart-1",
    }
    assert all(validate_sample({k: v for k, v in row.items() if k != "synthesis"}) == [] for row in rows)


def test_synth_command_answers_rows_of_a_source_into_local_jsonl(tmp_path):
    write_jsonl(question_rows(tmp_path), tmp_path / "questions")
    server = ChatServer()
    try:
        assert (
            main(
                [
                    "synth",
                    "--source",
                    str(tmp_path / "questions"),
                    "--endpoint",
                    server.endpoint,
                    "--model",
                    "m",
                    "--families",
                    "direct",
                    "--prompts-per-question",
                    "2",
                    "--out",
                    str(tmp_path / "synth"),
                ]
            )
            == 0
        )
    finally:
        server.close()
    rows = list(read_jsonl(tmp_path / "synth"))
    assert len(rows) == 6 and {row["synthesis"]["family"] for row in rows} == {"direct"}
    assert len({row["messages"][0]["content"][0]["text"] for row in rows[:4]}) == 4  # one image, four prompts
    assert load_images(rows[-1])[0].size == (16, 16)
    assert json.loads((tmp_path / "synth" / "report.json").read_text())["total"] == 6


def test_synth_fails_when_every_request_fails(tmp_path, capsys):
    write_jsonl(question_rows(tmp_path), tmp_path / "questions")
    with socket.socket() as probe:  # a port on 127.0.0.1 that nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [
        "synth",
        "--source",
        str(tmp_path / "questions"),
        "--endpoint",
        f"http://127.0.0.1:{port}/v1",
        "--max-retries",
        "0",
    ]
    assert main([*argv, "--model", "m", "--out", str(tmp_path / "synth")]) == 1
    err = capsys.readouterr().err
    assert f"every request to http://127.0.0.1:{port}/v1 failed; the first: chart-1 question 0:" in err
    assert "refused" in err
