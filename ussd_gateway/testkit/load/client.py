"""A lean HTTP/1.1 client on raw asyncio streams, for load generation.

The load generator shares the machine with the server it measures, so it must cost
little per request: one keep-alive connection per virtual subscriber, requests built
from bytes, responses framed by Content-Length (what the gateway's aiohttp server
sends). Used by `ussd-gateway load` and `benchmarks/hops.py`; not a general client
(no chunked bodies, no redirects, no proxies).
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from urllib.parse import urlsplit


class ResponseError(ValueError):
    """The server's answer could not be framed (no Content-Length, bad status line)."""


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when it is empty)."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[rank]


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(status code, body) of one HTTP/1.1 response framed by Content-Length.

    Raises `ConnectionResetError` after the body when the server says it closes the
    connection (the caller opens a new one), `ResponseError` when it cannot be framed.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        raise ResponseError(f"not an HTTP response: {head[:40]!r}")
    status = head[9:12]
    lowered = head.lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        raise ResponseError("response without Content-Length")
    end = lowered.index(b"\r\n", at + 2)
    length = int(lowered[at + 17 : end])
    body = await reader.readexactly(length) if length else b""
    if b"\r\nconnection: close" in lowered:
        raise ConnectionResetError("server closed the keep-alive connection")
    return status, body


class HttpConnection:
    """One keep-alive connection to `base_url` (http:// or https://), opened on first
    use and again after any failure. Not safe for concurrent requests: one per task."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: _ssl.SSLContext | None = _ssl.create_default_context() if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        self._host_line = f"Host: {host_header}\r\n".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def request(self, method: str, path: str, body: bytes = b"", content_type: bytes = b"") -> tuple[int, bytes]:
        """Send one request, return (status, body). On any failure the connection is
        closed (the next request opens a new one) and the error raised: `OSError`
        (including `ConnectionError`), `asyncio.IncompleteReadError`, `ResponseError`."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
            self.connects += 1
        assert self._reader is not None
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode() + self._host_line
        if content_type:
            head += b"Content-Type: " + content_type + b"\r\n"
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        try:
            self._writer.write(head + body)
            status, reply = await read_response(self._reader)
        except BaseException:  # a failure, or cancelled mid-request: the stream is out of step
            self.close()
            raise
        try:
            return int(status), reply
        except ValueError:
            self.close()
            raise ResponseError(f"bad status {status!r}") from None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
