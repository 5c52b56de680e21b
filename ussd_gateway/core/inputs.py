"""HTTP gateway dialects: each turns one wire format into a `Hop` and a `Reply` back.

A new gateway dialect is one module here (with `parse` and `render`) and its tests;
the dispatcher and the menus never change for it.
"""

from __future__ import annotations

import re

from ussd_gateway.core.errors import BadRequest

_SERVICE_CODE = re.compile(r"^\*(\d{1,8})((?:\*[0-9A-Za-z]{0,32})*)#$")
_SESSION_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
MAX_INPUT_CHARS = 512


_SPLIT_CODES: dict[str, tuple[str, tuple[str, ...]]] = {}
"""Codes already split: a gateway sends the same few on every hop (bounded, as callers
choose the text)."""
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
"""Control characters other than tab, newline and carriage return."""


def split_service_code(raw: str) -> tuple[str, tuple[str, ...]]:
    """`*090*2*1#` -> (`*090#`, ("2", "1")): the code routes, the rest is inputs."""
    split = _SPLIT_CODES.get(raw)
    if split is not None:
        return split
    split = _split_service_code(raw)
    if len(_SPLIT_CODES) < 256:
        _SPLIT_CODES[raw] = split
    return split


def _split_service_code(raw: str) -> tuple[str, tuple[str, ...]]:
    code = raw.strip()
    match = _SERVICE_CODE.match(code)
    if match is None:
        raise BadRequest(f"service code {code[:40]!r} is not a USSD code like *090# or *090*2*1#")
    extra = tuple(part for part in match.group(2).split("*") if part)
    return f"*{match.group(1)}#", extra


def check_session_id(raw: str) -> str:
    if not _SESSION_ID.match(raw):
        raise BadRequest("session id must be 1-128 printable ASCII characters without spaces")
    return raw


def check_input(raw: str, field: str) -> str:
    if len(raw) > MAX_INPUT_CHARS:
        raise BadRequest(f"{field} is longer than {MAX_INPUT_CHARS} characters")
    if _CONTROL.search(raw) is not None:
        raise BadRequest(f"{field} contains control characters")
    return raw
