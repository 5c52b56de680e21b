"""The SMSC simulator's HTTP control API: drive a running simulator from another process.

`ussd-gateway smsc` serves it on `control_port` so the simulator and replay tools, load
runs and testers in other processes can open USSD dialogues, send MO SMS and receipts,
take MT SMS, read the PDU log and inject faults, all as JSON. The routes only call the
simulator's tester API; request checking and the JSON shapes are what this module adds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ussd_gateway.testkit.smsc.console import pdu_text
from ussd_gateway.testkit.smsc.faults import FAULT_NAMES, fault_action
from ussd_gateway.testkit.smsc.records import MtSms, SmscError, UssdScreen

if TYPE_CHECKING:
    from ussd_gateway.testkit.smsc.simulator import SmscSimulator, UssdDialogue


def _bad(reason: str, status: int = 400) -> web.Response:
    return web.json_response({"error": reason}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"the body is not JSON: {error}"}), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}), content_type="application/json")
    return body


def _field(body: Mapping[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    value = body.get(name, default)
    if value is ...:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name!r} is required"}), content_type="application/json")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name!r} must be {kind.__name__}, not {value!r}"}), content_type="application/json"
        )
    return value


def _timeout(body: Mapping[str, Any], default: float) -> float:
    timeout = _field(body, "timeout", float, default)
    if not 0 < timeout <= 60:
        raise web.HTTPBadRequest(text=json.dumps({"error": "'timeout' must be in (0, 60] seconds"}), content_type="application/json")
    return float(timeout)


def _screen_json(screen: UssdScreen) -> dict[str, Any]:
    return {"text": screen.text, "end": screen.end}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def control_app(sim: SmscSimulator) -> web.Application:
    """Routes for driving a running simulator from another process (all JSON)."""

    def dialogue_of(request: web.Request) -> UssdDialogue:
        try:
            number = int(request.match_info["id"])
        except ValueError:
            raise web.HTTPBadRequest(text=json.dumps({"error": "dialogue id must be an integer"}), content_type="application/json") from None
        dialogue = sim.dialogues.get(number)
        if dialogue is None:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no dialogue {number}"}), content_type="application/json")
        return dialogue

    async def screen_response(dialogue: UssdDialogue, timeout: float) -> web.Response:
        """The gateway's next screen for `dialogue`, or 504 when none comes in time."""
        try:
            screen = await dialogue.next_screen(timeout)
        except TimeoutError:
            return web.json_response({"error": "no screen from the gateway in time", "dialogue_id": dialogue.id}, status=504)
        return web.json_response({"dialogue_id": dialogue.id, "screen": _screen_json(screen)})

    async def ussd_start(request: web.Request) -> web.Response:
        body = await _json_body(request)
        msisdn = _field(body, "msisdn", str)
        code = _field(body, "code", str, "*090#")
        timeout = _timeout(body, 5.0)
        try:
            dialogue = await sim.start_ussd(msisdn, code)
        except SmscError as error:
            return _bad(str(error), 409)
        return await screen_response(dialogue, timeout)

    async def ussd_answer(request: web.Request) -> web.Response:
        dialogue = dialogue_of(request)
        body = await _json_body(request)
        text = _field(body, "text", str)
        timeout = _timeout(body, 5.0)
        try:
            await dialogue.answer(text)
        except SmscError as error:
            return _bad(str(error), 409)
        return await screen_response(dialogue, timeout)

    async def ussd_abort(request: web.Request) -> web.Response:
        dialogue = dialogue_of(request)
        try:
            await dialogue.abort()
        except SmscError as error:
            return _bad(str(error), 409)
        return web.json_response({"dialogue_id": dialogue.id, "aborted": True})

    async def ussd_push(request: web.Request) -> web.Response:
        """Take the next push (a dialogue the gateway began) to `msisdn`, waiting up to
        `timeout` seconds: its id and first screen, or 504 when none comes."""
        from ussd_gateway.testkit.smsc.push import next_push

        msisdn = request.query.get("msisdn") or None
        try:
            timeout = float(request.query.get("timeout", "5"))
        except ValueError:
            return _bad("'timeout' must be a number of seconds")
        if not 0 < timeout <= 60:
            return _bad("'timeout' must be in (0, 60] seconds")
        try:
            dialogue = await next_push(sim, msisdn, timeout)
        except TimeoutError:
            return web.json_response({"error": "no push from the gateway in time"}, status=504)
        return await screen_response(dialogue, 1.0)

    async def ussd_confirm(request: web.Request) -> web.Response:
        """The handset acknowledges a notify-only push (USSN confirm)."""
        from ussd_gateway.testkit.smsc.push import confirm_notify

        dialogue = dialogue_of(request)
        try:
            await confirm_notify(dialogue)
        except SmscError as error:
            return _bad(str(error), 409)
        return web.json_response({"dialogue_id": dialogue.id, "confirmed": True})

    async def mo(request: web.Request) -> web.Response:
        body = await _json_body(request)
        msisdn, short_code, text = _field(body, "msisdn", str), _field(body, "short_code", str), _field(body, "text", str)
        data_coding = _field(body, "data_coding", int, None)
        timeout = _timeout(body, 3.0)
        # `reply_from`: only an MT from this sender is the reply (a purchase confirmation
        # drained at the same moment is left queued for GET /mt).
        reply_from = _field(body, "reply_from", str, None)
        mark = sim._mt_serial  # MTs accepted before the MO are not its reply
        try:
            await sim.send_mo(msisdn, short_code, text, data_coding=data_coding)
        except ValueError as error:
            return _bad(str(error))
        except SmscError as error:
            return _bad(str(error), 409)
        try:
            reply = await sim._next_mt(msisdn, timeout, after=mark, sender=reply_from)
        except TimeoutError:
            return web.json_response({"reply": None})
        return web.json_response({"reply": reply.text, "parts": reply.parts})

    async def mt(request: web.Request) -> web.Response:
        """Take every MT SMS queued for `msisdn` (waiting up to `timeout` seconds for
        the first one; 0: do not wait): what a handset received. Replays use it for
        "expect an SMS" (a purchase confirmation drained through the bind)."""
        msisdn = request.query.get("msisdn", "")
        if not msisdn:
            return _bad("'msisdn' is required")
        try:
            timeout = float(request.query.get("timeout", "0"))
        except ValueError:
            return _bad("'timeout' must be a number of seconds")
        if not 0 <= timeout <= 60:
            return _bad("'timeout' must be in [0, 60] seconds")
        taken: list[MtSms] = []
        try:
            taken.append(await sim._next_mt(msisdn, timeout, after=0) if timeout else sim._next_mt_now(msisdn))
        except TimeoutError:
            pass
        while (more := sim._next_mt_now(msisdn)) is not None:
            taken.append(more)
        return web.json_response({"sms": [{"to": s.to, "from": s.sender, "text": s.text, "parts": s.parts} for s in taken if s is not None]})

    async def receipt(request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            sequence = await sim.send_receipt(
                _field(body, "msisdn", str), _field(body, "short_code", str),
                _field(body, "message_id", str), _field(body, "state", str, "DELIVRD"),
            )  # fmt: skip
        except ValueError as error:
            return _bad(str(error))
        except SmscError as error:
            return _bad(str(error), 409)
        return web.json_response({"sequence": sequence})

    async def pdus(request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return _bad("'since' must be an integer")
        if since < 0:
            return _bad("'since' must not be negative")
        start = max(since - sim.pdu_log_base, 0)
        entries = [
            {
                "index": sim.pdu_log_base + start + n,
                "at": entry.at,
                "direction": entry.direction,
                "bind_id": entry.bind_id,
                "command": entry.command,
                "sequence": entry.sequence,
                "status": entry.status,
                "fields": _jsonable(entry.fields),
                "text": pdu_text(entry.fields, sim.gsm7_packed),
            }
            for n, entry in enumerate(sim.pdus[start:])
        ]
        return web.json_response({"pdus": entries, "next": sim.pdu_log_base + len(sim.pdus)})

    async def binds(request: web.Request) -> web.Response:
        return web.json_response(
            {"binds": [{"bind_id": b.bind_id, "system_id": b.system_id, "mode": b.mode, "peer": b.peer} for b in sim.binds]}
        )

    async def faults(request: web.Request) -> web.Response:
        body = await _json_body(request)
        unknown = sorted(set(body) - FAULT_NAMES)
        if unknown or not body:
            return _bad(f"unknown fault(s) {', '.join(unknown)}; use {', '.join(sorted(FAULT_NAMES))}" if unknown else "no fault given")
        actions: list[Callable[[], Any]] = []
        try:
            for name, value in body.items():
                actions.append(fault_action(sim, name, value))
        except ValueError as error:
            return _bad(str(error))
        for action in actions:
            result = action()
            if asyncio.iscoroutine(result):
                await result
        return web.json_response({"applied": list(body)})

    app = web.Application()
    app.router.add_post("/ussd/start", ussd_start)
    app.router.add_post("/ussd/{id}/answer", ussd_answer)
    app.router.add_post("/ussd/{id}/abort", ussd_abort)
    app.router.add_get("/ussd/push", ussd_push)
    app.router.add_post("/ussd/{id}/confirm", ussd_confirm)
    app.router.add_post("/mo", mo)
    app.router.add_post("/receipt", receipt)
    app.router.add_get("/mt", mt)
    app.router.add_get("/pdus", pdus)
    app.router.add_get("/binds", binds)
    app.router.add_post("/faults", faults)
    return app
