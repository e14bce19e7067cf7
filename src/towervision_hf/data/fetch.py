"""URL media fetching with retries, a content-addressed disk cache and remembered dead links.

Cache layout under `cache_dir`:
    blobs/<sha256[:2]>/<sha256>      the bytes, named by the SHA-256 of their content
    urls/<key[:2]>/<key>             the content SHA-256 of a fetched URL (key = SHA-256 of the URL)
    dead/<key[:2]>/<key>             why a URL was given up on, so rebuilds do not retry it (delete to retry)
"""

import hashlib
import os
import threading
import time
import urllib.error
from pathlib import Path

from ..model.fetching_towervision import UrlFetchError, fetch_once


DEFAULT_CACHE_DIR = Path(os.environ.get("TOWERVISION_CACHE", Path.home() / ".cache" / "towervision")) / "media"
_PERMANENT_HTTP_ERRORS = {400, 401, 403, 404, 410, 451}


class FetchError(Exception):
    """A URL that could not be fetched; `reason` is the counted skip reason (`dead_link` or `hash_mismatch`)."""

    def __init__(self, url: str, reason: str, detail: str):
        super().__init__(f"{url}: {detail}")
        self.url, self.reason, self.detail = url, reason, detail


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


class UrlFetcher:
    """Fetch URLs into bytes. `opener(url, timeout) -> bytes` (default: one GET with the processors' fetcher,
    `fetching_towervision.fetch_once`, which caps the size) and `sleep` are injectable for tests.

    4xx answers that cannot change on retry (400, 401, 403, 404, 410, 451) fail at once; other HTTP errors, timeouts
    and connection errors are retried `retries` times with exponential backoff. Failures raise `FetchError`.
    """

    def __init__(
        self,
        cache_dir=None,
        retries: int = 3,
        timeout: float = 30.0,
        backoff: float = 1.0,
        opener=None,
        sleep=time.sleep,
    ):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        self.retries, self.timeout, self.backoff = retries, timeout, backoff
        self.opener, self.sleep = opener or fetch_once, sleep

    def _entry(self, kind: str, key: str) -> Path:
        return self.cache_dir / kind / key[:2] / key

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)

    def cached(self, url: str) -> bytes | None:
        pointer = self._entry("urls", _sha256(url))
        if pointer.exists():
            blob = self._entry("blobs", pointer.read_text().strip())
            if blob.exists():
                return blob.read_bytes()
        return None

    def fetch(self, url: str, sha256: str | None = None) -> bytes:
        """The bytes at `url`, from the cache when present. `sha256`, when given, must match the content."""
        key = _sha256(url)
        data = self.cached(url)
        if data is None:
            dead = self._entry("dead", key)
            if dead.exists():
                raise FetchError(url, "dead_link", f"remembered as dead ({dead.read_text().strip()})")
            data = self._download(url, dead)
            digest = _sha256(data)
            self._write(self._entry("blobs", digest), data)
            self._write(self._entry("urls", key), digest.encode())
        if sha256 and _sha256(data) != sha256.lower():
            raise FetchError(url, "hash_mismatch", f"content SHA-256 {_sha256(data)} != expected {sha256}")
        return data

    def _download(self, url: str, dead: Path) -> bytes:
        error = "no attempt"
        for attempt in range(self.retries + 1):
            try:
                data = self.opener(url, self.timeout)
                if data:
                    return data
                error = "empty response"
            except UrlFetchError as fetch_error:
                error = fetch_error.detail
                if not fetch_error.retryable:  # 4xx but 408 / 425 / 429, over the size cap
                    break
            except urllib.error.HTTPError as http_error:
                error = f"HTTP {http_error.code}"
                if http_error.code in _PERMANENT_HTTP_ERRORS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as network_error:
                error = f"{type(network_error).__name__}: {network_error}"
            if attempt < self.retries:
                self.sleep(self.backoff * 2**attempt)
        self._write(dead, error.encode())
        raise FetchError(url, "dead_link", error)
