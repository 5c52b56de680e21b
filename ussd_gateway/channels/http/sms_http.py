"""SMS over HTTP: an MO SMS in as JSON, the keyword service's reply out in the response.

`POST /sms` `{"msisdn", "short_code", "text", "message_id"?}` -> `{"reply": str | null}`.
Aggregators that deliver MO SMS by HTTP callback, the web phone and the testers' replay
use it; over SMPP the same keywords arrive as `deliver_sm`. The reply is returned, not
queued: the caller delivers it. `message_id`, when given, makes a retried callback safe
(the same purchase is not made twice).

`GET /sms/outbound?to=MSISDN` lists what the outbound SMS queue holds for a subscriber
(purchase confirmations waiting for the SMS channel): for testers and operations.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import orjson
from aiohttp import web

from ussd_gateway.channels.http.body import read_json
from ussd_gateway.core.errors import BadRequest
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.core.inputs import check_input

_SHORT_CODE_CHARS = frozenset("0123456789*#+")


@dataclass(frozen=True, slots=True)
class MoSms:
    msisdn: str
    short_code: str
    text: str
    message_key: str


async def parse(request: web.Request) -> MoSms:
    body = await read_json(request)
    values = {}
    for name in ("msisdn", "short_code", "text"):
        value = body.get(name)
        if not isinstance(value, str):
            raise BadRequest(f"field {name!r} must be a string" if name in body else f"missing field {name!r}")
        values[name] = value
    short_code = values["short_code"].strip()
    if not short_code or len(short_code) > 15 or not set(short_code) <= _SHORT_CODE_CHARS:
        raise BadRequest(f"short_code {short_code[:20]!r} is not a short code like 9237")
    text = check_input(values["text"], "text")
    msisdn = normalise_msisdn(values["msisdn"])
    message_id = body.get("message_id")
    if message_id is not None and (not isinstance(message_id, str) or not 0 < len(message_id) <= 64):
        raise BadRequest("message_id must be a string of 1-64 characters")
    if message_id:
        key = hashlib.sha1(f"{msisdn}|{short_code}|{message_id}".encode()).hexdigest()[:20]
    else:
        key = uuid.uuid4().hex[:20]  # without a message id every callback is a new message
    return MoSms(msisdn, short_code, text, "http:" + key)


def render(reply: str | None) -> web.Response:
    return web.Response(body=orjson.dumps({"reply": reply}), content_type="application/json")


def render_error(error: BadRequest) -> web.Response:
    return web.Response(status=400, body=orjson.dumps({"error": str(error)}), content_type="application/json")
