"""URL fetching: retries, the content-addressed cache, remembered dead links, hash checks (127.0.0.1 only)."""

import hashlib
import http.server
import threading
import urllib.error

import pytest

from towervision_hf.data.fetch import FetchError, UrlFetcher


@pytest.fixture(scope="module")
def server():
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path == "/ok.png":
                body = b"\x89PNG-fake-bytes"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", requests
    httpd.shutdown()


def test_fetch_caches_by_content_and_remembers_dead_links(tmp_path, server):
    base, requests = server
    fetcher = UrlFetcher(tmp_path, retries=2, sleep=lambda seconds: None)
    data = fetcher.fetch(f"{base}/ok.png")
    assert data == b"\x89PNG-fake-bytes"
    assert (tmp_path / "blobs" / hashlib.sha256(data).hexdigest()[:2] / hashlib.sha256(data).hexdigest()).exists()
    assert fetcher.fetch(f"{base}/ok.png") == data
    assert requests.count("/ok.png") == 1  # the second fetch came from the cache

    with pytest.raises(FetchError) as error:
        fetcher.fetch(f"{base}/gone.png")
    assert error.value.reason == "dead_link" and "404" in error.value.detail
    assert requests.count("/gone.png") == 1  # a 404 is not retried
    with pytest.raises(FetchError, match="remembered as dead"):
        UrlFetcher(tmp_path).fetch(f"{base}/gone.png")
    assert requests.count("/gone.png") == 1


def test_transient_errors_are_retried_with_backoff(tmp_path):
    calls, sleeps = [], []

    def opener(url, timeout):
        calls.append(url)
        if len(calls) < 3:
            raise urllib.error.HTTPError(url, 503, "busy", {}, None) if len(calls) == 1 else TimeoutError("slow")
        return b"payload"

    fetcher = UrlFetcher(tmp_path, retries=3, backoff=0.5, opener=opener, sleep=sleeps.append)
    assert fetcher.fetch("https://example.org/x") == b"payload"
    assert len(calls) == 3 and sleeps == [0.5, 1.0]


def test_giving_up_after_retries_and_hash_mismatch(tmp_path):
    def opener(url, timeout):
        if "down" in url:
            raise urllib.error.URLError("connection refused")
        return b"content"

    fetcher = UrlFetcher(tmp_path, retries=2, opener=opener, sleep=lambda seconds: None)
    with pytest.raises(FetchError) as error:
        fetcher.fetch("https://down.example.org/x")
    assert error.value.reason == "dead_link" and "connection refused" in error.value.detail
    with pytest.raises(FetchError) as error:
        fetcher.fetch("https://example.org/x", sha256="0" * 64)
    assert error.value.reason == "hash_mismatch"
    assert fetcher.fetch("https://example.org/x", sha256=hashlib.sha256(b"content").hexdigest()) == b"content"


def test_cut_bodies_and_redirects_off_http_are_dead_links_not_data(tmp_path, media_server):
    base, routes, requests = media_server

    def cut_short(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"x" * 10)
        handler.close_connection = True

    def to_ftp(handler):
        handler.send_response(301)
        handler.send_header("Location", "ftp://127.0.0.1/data.png")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    routes.update({"/data-cut.png": cut_short, "/data-to-ftp.png": to_ftp})
    fetcher = UrlFetcher(tmp_path, retries=1, sleep=lambda seconds: None)
    with pytest.raises(FetchError, match=rf"{base}/data-cut.png: the body ended after 10 of the 1000 bytes") as error:
        fetcher.fetch(f"{base}/data-cut.png")
    assert error.value.reason == "dead_link" and requests.count("/data-cut.png") == 2  # retried once
    with pytest.raises(FetchError, match=r"data-to-ftp.png: redirected to ftp://127.0.0.1/data.png") as error:
        fetcher.fetch(f"{base}/data-to-ftp.png")
    assert error.value.reason == "dead_link" and requests.count("/data-to-ftp.png") == 1  # not retried
    assert not (tmp_path / "blobs").exists()  # nothing cached
