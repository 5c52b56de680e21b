"""The plain JSON dialect: `{"session_id", "msisdn", "service_code", "input", "event"}`
in, `{"text", "end"}` out.

`event` is `begin`, `continue` or `abort`. Optional fields: `seq` (the hop's number in
the session, 0 for begin; send it and a retried hop is answered from the saved reply
instead of being taken twice) and `language` (`vi`, `vi_dau`, `en`: the handset's or
the simulator's choice, remembered for the subscriber).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ussd_gateway.channels.http.body import read_json
from ussd_gateway.core.errors import BadRequest
from ussd_gateway.core.formats import LANGUAGES
from ussd_gateway.core.hop import Hop, HopKind, Reply
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.core.inputs import check_input, check_session_id, split_service_code

NAME = "json"
_EVENTS = {"begin": HopKind.BEGIN, "continue": HopKind.CONTINUE, "abort": HopKind.ABORT}


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"missing field {name!r}")
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} must be a string, got {type(value).__name__}")
    return value


async def parse(request: web.Request) -> Hop:
    """Read the JSON body. Raises BadRequest with the reason."""
    body = await read_json(request)
    event = _text(body, "event")
    if event not in _EVENTS:
        raise BadRequest(f"event must be begin, continue or abort, got {event[:20]!r}")
    kind = _EVENTS[event]
    code, embedded = split_service_code(_text(body, "service_code"))
    user_input = check_input(_text(body, "input", required=kind is HopKind.CONTINUE), "input")
    seq = body.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 0):
        raise BadRequest("seq must be a non-negative integer")
    language = body.get("language")
    if language is not None and language not in LANGUAGES:
        raise BadRequest(f"language must be one of {', '.join(LANGUAGES)}")
    if kind is HopKind.BEGIN:
        inputs = embedded
    elif kind is HopKind.CONTINUE:
        inputs = (user_input,)
    else:
        inputs = ()
    return Hop(
        channel=NAME,
        session_id=check_session_id(_text(body, "session_id")),
        msisdn=normalise_msisdn(_text(body, "msisdn")),
        service_code=code,
        kind=kind,
        inputs=inputs,
        hop_key=f"s:{seq}" if seq is not None else None,
        language=language,
    )


def render(reply: Reply) -> web.Response:
    return web.Response(body=orjson.dumps({"text": reply.text, "end": reply.end}), content_type="application/json")


def render_error(error: BadRequest) -> web.Response:
    return web.Response(status=400, body=orjson.dumps({"error": str(error)}), content_type="application/json")
