"""HTTP routes for USSD push (admin: `channels/http/guard.py`'s admin token and
listener rules, as `/admin/...`).

`POST /admin/ussd/push` begins a dialogue on a subscriber's phone:

    {"msisdn": "84901234567", "entry": "offer:start", "vars": {"offer_code": "MAX90"},
     "bind": "vnpt", "notify": false, "lang": "vi", "source": "*090", "care": true}

`entry` is a screen of the menus ("menu:screen"); `vars` are set before it is shown;
`bind` names the SMPP bind (default: the first one up), or `"web"` for the web phone
(`/sim`), which takes the pushes addressed to its MSISDN with
`GET /admin/ussd/push?msisdn=...`; `notify` sends a notify-only push (USSN: no
answer, the dialogue ends); `care` applies the care campaigns' quiet hours and
opt-out (`[campaigns]`). 200 with the session id and the screen sent; 409 with a
`reason` (`open_dialogue`, `busy`, `bind_down`, `not_delivered`, `quiet_hours`,
`opted_out`) when no push was made; 400 for bad input; 503 when the store is down.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from aiohttp import web

from ussd_gateway.channels.http.body import read_json
from ussd_gateway.core.errors import BadRequest, DependencyDown
from ussd_gateway.core.formats import LANGUAGES
from ussd_gateway.core.msisdn import normalise_msisdn
from ussd_gateway.dispatch.push import PushRefused, Pusher

WEB = "web"
"""The `bind` of pushes for the web phone."""
WEB_PUSH_TTL_S = 60.0
"""A push for the web phone waits this long to be taken (a handset's push rings for
about as long before the network gives up)."""
MAX_VARS = 20


def _error(status: int, reason: str, code: str = "") -> web.Response:
    body: dict[str, str] = {"error": reason}
    if code:
        body["reason"] = code
    return web.json_response(body, status=status)


def _web_key(msisdn: str) -> str:
    return f"push:web:{msisdn}"


def _variables(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_VARS:
        raise BadRequest(f"vars must be an object of at most {MAX_VARS} names")
    for name, value in raw.items():
        if not name.isidentifier() or isinstance(value, bool) or not isinstance(value, (str, int)) or len(str(value)) > 160:
            raise BadRequest(f"vars[{name[:30]!r}] must be a string or an integer (names: letters, digits, _)")
    return dict(raw)


def _text(body: dict[str, Any], name: str, default: str = "") -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value.strip()


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


async def _care_refusal(gateway: Any, msisdn: str) -> web.Response | None:
    """Quiet hours and opt-out, as for care SMS; None when the push may go."""
    from ussd_gateway.campaigns.protect import OptOuts, QuietHours

    c = gateway.settings.campaigns
    clock = getattr(gateway.campaigns, "clock", None) or time.time
    if QuietHours(c.quiet_start, c.quiet_end, c.timezone, clock).quiet():
        return _error(409, f"quiet hours ({c.quiet_start}-{c.quiet_end}): no care push now", "quiet_hours")
    if gateway.redis is None:
        return _error(503, "care pushes need Redis ([sessions] redis_url) for the opt-out list")
    if await OptOuts(gateway.redis).is_out(msisdn):
        return _error(409, "the subscriber opted out of care messages (TC)", "opted_out")
    return None


async def push(request: web.Request) -> web.Response:
    """`POST /admin/ussd/push`."""
    from ussd_gateway.app.server import GATEWAY, SMPP

    gateway = request.app[GATEWAY]
    try:
        body = await read_json(request)
        msisdn = normalise_msisdn(_text(body, "msisdn"))
        entry = _text(body, "entry")
        bind = _text(body, "bind")
        source = _text(body, "source")
        notify, care = _flag(body, "notify"), _flag(body, "care")
        lang = body.get("lang")
        if lang is not None and lang not in LANGUAGES:
            raise BadRequest(f"lang must be one of {', '.join(LANGUAGES)}")
        variables = _variables(body.get("vars"))
        pusher = Pusher(gateway.dispatcher)
        pusher.check_entry(entry)
        if care and (refusal := await _care_refusal(gateway, msisdn)) is not None:
            return refusal
        if bind == WEB:
            session_id = "push-web-" + os.urandom(6).hex()
            pushed = await pusher.open(msisdn, session_id, entry, notify=notify, variables=variables, lang=lang)
            offer = {"session_id": session_id, "msisdn": msisdn, "service_code": pushed.service_code,
                     "text": pushed.reply.text, "end": pushed.reply.end}  # fmt: skip
            await gateway.store.swap(_web_key(msisdn), orjson.dumps(offer).decode(), WEB_PUSH_TTL_S)
            result = {"session_id": session_id, "bind": WEB, "text": pushed.reply.text, "end": pushed.reply.end,
                      "screen": pushed.screen, "message_id": ""}  # fmt: skip
        else:
            if SMPP not in request.app:
                raise BadRequest('no SMPP bind is configured: push to the web phone with "bind": "web"')
            from ussd_gateway.channels.smpp.push import push_over_smpp

            sent = await push_over_smpp(
                pusher, request.app[SMPP].links, msisdn, entry, bind_name=bind, notify=notify, source=source,
                variables=variables, lang=lang,
            )
            result = {"session_id": sent.session_id, "bind": sent.bind, "text": sent.text, "end": sent.end,
                      "screen": sent.screen, "message_id": sent.message_id}  # fmt: skip
    except BadRequest as error:
        return _error(400, str(error))
    except PushRefused as refused:
        return _error(409, str(refused), refused.reason)
    except DependencyDown:
        return _error(503, "service busy, try again later")
    return web.json_response(result)


async def web_pushes(request: web.Request) -> web.Response:
    """`GET /admin/ussd/push?msisdn=...`: the web phone takes the push waiting for its
    subscriber, if any (`{"push": null}` otherwise). Taken once."""
    from ussd_gateway.app.server import GATEWAY

    try:
        msisdn = normalise_msisdn(request.query.get("msisdn", ""))
    except BadRequest as error:
        return _error(400, str(error))
    try:
        held = await request.app[GATEWAY].store.swap(_web_key(msisdn), "", 0.001)
    except DependencyDown:
        return _error(503, "service busy, try again later")
    return web.json_response({"push": orjson.loads(held) if held else None})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/ussd/push", push)
    app.router.add_get("/admin/ussd/push", web_pushes)
