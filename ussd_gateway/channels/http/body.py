"""Reading a request body without trusting it: every way a body can be malformed is the
caller's mistake and becomes `BadRequest` (HTTP 400 with the reason), never a traceback.

The dialects read their bodies only through here. A body must arrive whole within the
deadline (a caller trickling it would hold a connection and a handler otherwise); it
may be gzip- or deflate-compressed (aiohttp inflates it; a corrupt stream is a 400);
a form must be valid UTF-8 with valid percent-encoding in a charset we know.
"""

from __future__ import annotations

import asyncio
import codecs
import re
import zlib
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import unquote, unquote_to_bytes

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ussd_gateway.core.errors import BadRequest

DEFAULT_BODY_TIMEOUT_S = 10.0
BODY_TIMEOUT = web.AppKey("body_timeout_s", float)
"""Set by the app from `[http] body_timeout_s`; the default otherwise."""
RAW_BODIES = web.AppKey("raw_bodies", bool)
"""True when the server hands bodies over still compressed (`auto_decompress=False`,
as `app/serving.py` runs it): aiohttp's own inflater never answers some corrupt
deflate bodies, so we inflate here, bounded by the body size limit."""
_BROKEN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODINGS = ("", "identity", "gzip", "deflate", "x-gzip")


class BodyTimeout(BadRequest):
    """The body did not arrive within the deadline (HTTP 408)."""


def _check_encoding(request: web.Request) -> None:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _ENCODINGS:
        raise BadRequest(f"Content-Encoding {encoding[:20]!r} is not accepted (send identity, gzip or deflate)")


def _timeout(request: web.Request, timeout_s: float | None) -> float:
    return timeout_s if timeout_s is not None else request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_S)


T = TypeVar("T")


async def _arrived(reading: Awaitable[T], timeout_s: float) -> T:
    """What `reading` returns, or BodyTimeout when the body is slower than `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await reading
    except TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {timeout_s:g} s") from None


async def read_bytes(request: web.Request, timeout_s: float | None = None) -> bytes:
    """The whole body (inflated), or BadRequest. Too big stays aiohttp's 413."""
    encoded = "Content-Encoding" in request.headers
    if encoded:
        _check_encoding(request)
    try:
        # A body already whole in the buffer (a gateway's small form, in the same
        # segment as the head) needs no timer: ~3 µs a hop less.
        if request.content.is_eof():
            raw = await request.read()
        else:
            raw = await _arrived(request.read(), _timeout(request, timeout_s))
    except web.HTTPRequestEntityTooLarge:
        raise
    except (HttpProcessingError, zlib.error, ValueError, EOFError, OSError) as exc:
        raise BadRequest(f"the body could not be read: {exc.__class__.__name__}") from None
    except Exception as exc:  # aiohttp's decompressors raise their libraries' own errors
        raise BadRequest(f"the body could not be read: {exc.__class__.__name__}") from None
    if encoded and request.app.get(RAW_BODIES, False):
        return inflate(raw, request.headers.get("Content-Encoding", ""), request.app._client_max_size)
    return raw


def inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """`raw` decoded per its Content-Encoding, at most `limit` bytes; BadRequest when
    the stream is corrupt or cut short, 413 when it inflates beyond the limit."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    candidates = (31,) if encoding in ("gzip", "x-gzip") else (15, -15)  # deflate: zlib-wrapped, or raw as some send it
    for wbits in candidates:
        inflater = zlib.decompressobj(wbits)
        try:
            body = inflater.decompress(raw, limit + 1)
        except zlib.error:
            continue
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
        if inflater.eof and not inflater.unused_data:
            return body
    raise BadRequest(f"the body is not valid {encoding} data")


async def read_json(request: web.Request, timeout_s: float | None = None) -> dict[str, Any]:
    """A JSON object, or BadRequest with what is wrong."""
    raw = await read_bytes(request, timeout_s)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


_KNOWN_CHARSETS = {"utf-8"}


def _charset(request: web.Request) -> str:
    charset = (request.charset or "utf-8").strip()
    if charset in _KNOWN_CHARSETS:
        return charset
    try:
        codecs.lookup(charset)
    except LookupError:
        raise BadRequest(f"unknown charset {charset[:20]!r} (send utf-8)") from None
    if len(_KNOWN_CHARSETS) < 64:  # bounded: a caller cannot grow it without end
        _KNOWN_CHARSETS.add(charset)
    return charset


async def read_form(request: web.Request, timeout_s: float | None = None) -> dict[str, str]:
    """The fields of an urlencoded or multipart form (the first value of each name), or
    BadRequest. File parts are refused by the dialect, so they are kept as bytes."""
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request, _timeout(request, timeout_s))
    charset = _charset(request)
    raw = await read_bytes(request, timeout_s)
    try:
        text = raw.decode("ascii")  # an urlencoded body is ASCII; the charset is for what %XX decode to
        if "%" in text and _BROKEN_ESCAPE.search(text):
            raise BadRequest("the form has a broken percent-escape (% not followed by two hex digits)")
        return parse_form(text, charset)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(f"the form is not valid urlencoded {charset} text") from None


def parse_form(text: str, charset: str = "utf-8") -> dict[str, str]:
    """`urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=charset,
    errors="strict")`, first value of each name; the same pairs without its generic
    argument handling (5.3 -> 2 µs for a gateway's form). UnicodeDecodeError when a
    %XX sequence is not valid `charset`."""
    # On ASCII text (an urlencoded body is), `unquote` is `unquote_to_bytes` then one
    # decode: ~1 µs a field instead of ~3 (its per-run regular expression split).
    ascii_text = text.isascii()
    if ascii_text and "%" in text and _ESCAPED_SEPARATOR.search(text) is None:
        # No escaped `&` or `=`: decoding the whole body once, then splitting, reads the
        # same pairs as decoding each name and value (~1.5 µs a gateway form less).
        return _split_pairs(unquote_to_bytes(text.replace("+", " ")).decode(charset, "strict"))
    decode = _unquote_ascii if ascii_text else unquote
    form: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "%" in name:
            name = decode(name, charset, "strict")
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            value = decode(value, charset, "strict")
        if name not in form:
            form[name] = value
    return form


_ESCAPED_SEPARATOR = re.compile(r"%(?:26|3[dD])")


def _split_pairs(decoded: str) -> dict[str, str]:
    form: dict[str, str] = {}
    for pair in decoded.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            if name not in form:
                form[name] = value
    return form


def _unquote_ascii(text: str, charset: str, errors: str) -> str:
    return unquote_to_bytes(text).decode(charset, errors)


async def _read_multipart(request: web.Request, timeout_s: float) -> dict[str, str]:
    if "boundary=" not in request.headers.get("Content-Type", ""):
        raise BadRequest("multipart/form-data needs a boundary")
    _check_encoding(request)
    try:
        posted = await _arrived(request.post(), timeout_s)
    except web.HTTPRequestEntityTooLarge:
        raise
    except Exception as exc:  # aiohttp's multipart reader raises what the bytes provoke
        raise BadRequest(f"the multipart form could not be read: {exc.__class__.__name__}") from None
    form: dict[str, Any] = {}
    for name, value in posted.items():
        form.setdefault(name, value)
    return form
