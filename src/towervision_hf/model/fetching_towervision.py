# Copyright 2026 The towervision-hf authors. Licensed under the Apache License, Version 2.0.
"""Fetching image and video URLs for the TowerVision processors (standard library only).

This is the one remote-code file allowed network access (`towervision_hf.hub.remote_code` audits that no other
does): plain HTTP(S) GETs with `urllib`, a timeout per attempt, a size cap, a few retries with exponential backoff
for failures that may pass (timeouts, connection errors, bodies cut short, HTTP 408 / 429 / 5xx), and redirects
followed while they stay on http(s). A body must be whole: one that ends before its `Content-Length` is an error.
Every failure is a `UrlFetchError` (a `ValueError`) naming the URL and the HTTP status or the network error.
"""

import http.client
import time
import urllib.error
import urllib.request


TIMEOUT = 30.0  # seconds per attempt: to connect, between bytes and for the whole body
MAX_BYTES = 512 * 2**20  # larger bodies are refused, not truncated
RETRIES = 2
BACKOFF = 1.0  # seconds before the first retry, doubled for each further one
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "towervision-hf"


def is_url(value) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


class UrlFetchError(ValueError):
    """A URL that could not be fetched; `status` is the HTTP status (`None` for network failures)."""

    def __init__(self, url: str, detail: str, status: int | None = None, retryable: bool = False):
        super().__init__(f"Could not fetch {url}: {detail}")
        self.url, self.detail, self.status, self.retryable = url, detail, status, retryable


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http:// and https:// URLs only (the standard handler also follows ftp://)."""

    def redirect_request(self, request, response, code, message, headers, new_url):
        if not is_url(new_url):
            response.close()
            raise UrlFetchError(
                request.full_url, f"redirected to {new_url}; only http:// and https:// URLs are fetched"
            )
        return super().redirect_request(request, response, code, message, headers, new_url)


_OPENER = urllib.request.build_opener(_HttpRedirectsOnly)


def fetch_once(url: str, timeout: float = TIMEOUT, max_bytes: int = MAX_BYTES) -> bytes:
    """The body at `url` after one GET (http(s) redirects followed), or a `UrlFetchError`."""
    if not is_url(url):
        raise UrlFetchError(url, "only http:// and https:// URLs are fetched")
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise UrlFetchError(url, f"the body ({declared} bytes) is over the {max_bytes}-byte limit")
            chunks, size = [], 0
            while chunk := response.read1(2**16):  # what has arrived, so that the deadline is checked often
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise UrlFetchError(url, f"the body is over the {max_bytes}-byte limit")
                if time.monotonic() > deadline:
                    raise UrlFetchError(url, f"timed out after {timeout:g} s", retryable=True)
            if response.length:  # bytes announced by Content-Length that never came: the connection closed early
                detail = f"the body ended after {size} of the {declared} bytes its Content-Length announces"
                raise UrlFetchError(url, detail, retryable=True)
    except UrlFetchError as error:
        if error.url == url:
            raise
        # raised by the redirect handler for a URL further down the redirect chain
        raise UrlFetchError(url, f"{error.url} {error.detail}", error.status, error.retryable) from None
    except urllib.error.HTTPError as error:
        status = error.code
        raise UrlFetchError(url, f"HTTP {status} {error.reason}", status, status in RETRYABLE_STATUSES) from None
    except urllib.error.URLError as error:
        reason = f"timed out after {timeout:g} s" if isinstance(error.reason, TimeoutError) else str(error.reason)
        raise UrlFetchError(url, f"network error: {reason}", retryable=True) from None
    except TimeoutError:
        raise UrlFetchError(url, f"timed out after {timeout:g} s", retryable=True) from None
    except (OSError, http.client.HTTPException) as error:  # connection reset, incomplete read, bad status line
        raise UrlFetchError(url, f"network error: {error}", retryable=True) from None
    body = b"".join(chunks)
    if not body:
        raise UrlFetchError(url, "the response is empty")
    return body


def fetch_url(
    url: str,
    timeout: float = TIMEOUT,
    max_bytes: int = MAX_BYTES,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    sleep=time.sleep,
) -> bytes:
    """The body at `url`, retrying failures that may pass `retries` times, `backoff * 2**attempt` seconds apart.

    Raises `UrlFetchError` naming the URL and the last HTTP status or network error (and the number of attempts).
    """
    for attempt in range(retries + 1):
        try:
            return fetch_once(url, timeout, max_bytes)
        except UrlFetchError as error:
            if not error.retryable or attempt == retries:
                if attempt:
                    error.args = (f"{error.args[0]} ({attempt + 1} attempts)",)
                raise
        sleep(backoff * 2**attempt)
