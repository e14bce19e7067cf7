"""A local OpenAI-compatible `/v1/chat/completions` server on 127.0.0.1 for `towervision data synth`: a fixed
latency per answer and injected faults, decided per request (system prompt + question) so that a run's answers do
not depend on the order its requests arrive in; and `question_rows`, VQA rows to ask it. Used by
`bench/bench_data.py` and the data tests.

Faults, by share of the requests (each drawn from a hash of the request):
  - `throttle`: the first attempt gets a 429 with `Retry-After: retry_after` seconds;
  - `error`: the first attempt gets a 500;
  - `drop`: the first attempt's connection is closed without an answer;
  - `broken`: every attempt gets a 500 (the request finally fails);
  - `cut`: answered with `finish_reason: "length"` (cut at the token limit);
  - `hang`: the first attempt is answered after `hang` seconds (beyond a client's timeout).
"""

import hashlib
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


FAULTS = ("throttle", "error", "drop", "broken", "cut", "hang")


def request_key(body: dict) -> str:
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    return f"{system}\n{user[-1]['text']}"


def answer_text(key: str) -> str:
    """The answer the server gives a request: the same for a request whatever its arrival."""
    return f"Final Answer: {hashlib.sha256(key.encode()).hexdigest()[:12]}"


class ChatServer:
    """`ChatServer(latency=0.2, faults={"throttle": 0.05, "error": 0.05})`; `.endpoint`, `.attempts` (per request
    key: arrival times), `.max_in_flight`, `.close()` (also a context manager)."""

    def __init__(self, latency: float = 0.0, faults: dict | None = None, retry_after: float = 0.05, hang: float = 5.0):
        unknown = set(faults or {}) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self.latency, self.retry_after, self.hang = latency, retry_after, hang
        self.faults = dict(faults or {})
        self.attempts: dict[str, list[float]] = {}
        self.statuses = Counter()
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = request_key(body)
                with server.lock:
                    attempts = server.attempts.setdefault(key, [])
                    attempts.append(time.monotonic())
                    first = len(attempts) == 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(key, server.fault(key), first)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up on it (its timeout)
                    self.close_connection = True
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _answer(self, key, fault, first):
                if fault == "hang" and first:
                    time.sleep(server.hang)
                time.sleep(server.latency)
                if fault == "drop" and first:
                    server.count("dropped")
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if (fault in ("throttle", "error") and first) or fault == "broken":
                    status = 429 if fault == "throttle" else 500
                    self._send(
                        status,
                        {"error": {"message": f"injected {status}"}},
                        {"Retry-After": str(server.retry_after)} if status == 429 else {},
                    )
                    return
                finish_reason = "length" if fault == "cut" else "stop"
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "bench",
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": finish_reason,
                                "message": {"role": "assistant", "content": answer_text(key)},
                            }
                        ],
                    },
                )

            def _send(self, status, payload, headers=None):
                server.count(status)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self, status) -> None:
        with self.lock:
            self.statuses[status] += 1

    def fault(self, key: str) -> str | None:
        """The fault this request gets: the shares of `faults` laid out along a hash of the request in [0, 1)."""
        position = int(hashlib.sha256(f"fault:{key}".encode()).hexdigest()[:8], 16) / 16**8
        start = 0.0
        for name in FAULTS:
            share = self.faults.get(name, 0.0)
            if start <= position < start + share:
                return name
            start += share
        return None

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def question_rows(count: int) -> list[dict]:
    """`count` VQA rows in the sample schema, each with its own small PNG; every third asks two questions."""
    from towervision_hf.data.sample import draw_shape, png_bytes
    from towervision_hf.data.schema import image_block, make_sample, media, message

    colours = ("red", "green", "blue", "yellow")
    rows = []
    for index in range(count):
        picture = png_bytes(draw_shape("circle", colours[index % 4], (12 + index % 5, 12)))
        turns = [message("user", image_block(), f"What colour is shape {index}?"), message("assistant", "?")]
        if index % 3 == 0:
            turns += [message("user", f"How many shapes are in picture {index}?"), message("assistant", "1")]
        rows.append(make_sample(f"q{index}", "vqa", "en", turns, images=[media(bytes=picture)]))
    return rows
