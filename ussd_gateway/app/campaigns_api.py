"""HTTP routes for campaigns (admin) and tracked SMS (gateway policy).

Admin (`channels/http/guard.py`: the admin token, admin listener rules):
`POST /campaigns` create · `GET /campaigns` list · `GET /campaigns/{id}` status ·
`GET /campaigns/{id}/preview` · `GET /campaigns/{id}/hourly` (per-hour sent, delivered,
failed, conversions: JSON) · `GET /campaigns/{id}/chart.svg` (the same drawn) ·
`POST /campaigns/{id}/{start|pause|resume|cancel}`.
Gateway (bearer tokens, allow-list, signatures, like `/ussd`):
`POST /sms/send` one SMS or up to 100, idempotent with `Idempotency-Key` (or `key`) ·
`GET /sms/{id}` its state and receipt. All of them need Redis (503 otherwise).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ussd_gateway.channels.http.body import read_json
from ussd_gateway.core.errors import BadRequest, DependencyDown

Handler = Callable[[web.Request], Awaitable[web.Response]]
_NEEDS_REDIS = "campaigns and tracked SMS need Redis ([sessions] redis_url)"


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def _guarded(part: str, handler: Callable[[web.Request, Any], Awaitable[web.Response]]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        from ussd_gateway.app.server import GATEWAY

        target = getattr(request.app[GATEWAY], part)
        if target is None:
            return _error(503, _NEEDS_REDIS)
        try:
            return await handler(request, target)
        except BadRequest as error:
            return _error(404 if str(error).startswith("no campaign") else 400, str(error))
        except DependencyDown:
            return _error(503, "service busy, try again later")

    return handle


async def _create(request: web.Request, book: Any) -> web.Response:
    from ussd_gateway.campaigns.book import create_from_spec

    return web.json_response(await create_from_spec(book, await read_json(request)), status=201)


async def _list(request: web.Request, book: Any) -> web.Response:
    return web.json_response([await book.status(campaign_id) for campaign_id in await book.ids()])


async def _status(request: web.Request, book: Any) -> web.Response:
    return web.json_response(await book.status(request.match_info["id"]))


async def _preview(request: web.Request, book: Any) -> web.Response:
    return web.json_response(await book.preview(request.match_info["id"]))


async def _hourly(request: web.Request, book: Any) -> web.Response:
    campaign_id = request.match_info["id"]
    return web.json_response({"id": campaign_id, "timezone": book.settings.timezone, "hours": await book.hourly(campaign_id)})


async def _chart(request: web.Request, book: Any) -> web.Response:
    from ussd_gateway.campaigns.chart import svg_chart

    campaign_id = request.match_info["id"]
    series = await book.hourly(campaign_id)
    svg = svg_chart(series, f"{campaign_id}: SMS per hour ({book.settings.timezone})")
    return web.Response(text=svg, content_type="image/svg+xml")


async def _move(request: web.Request, book: Any) -> web.Response:
    action = request.match_info["action"]
    if action not in ("start", "pause", "resume", "cancel"):
        return _error(404, f"no action {action!r}: start, pause, resume or cancel")
    status = await book.move(request.match_info["id"], action)
    return web.json_response({"id": request.match_info["id"], "status": status})


async def _send(request: web.Request, ledger: Any) -> web.Response:
    body = await read_json(request)
    messages = body.get("messages", [body] if "to" in body else None)
    key = request.headers.get("Idempotency-Key") or body.get("key")
    if key is not None and not isinstance(key, str):
        raise BadRequest("the idempotency key must be a string")
    ids, replayed = await ledger.send(messages, key)
    return web.json_response({"ids": ids, "replayed": replayed}, status=200 if replayed else 202)


async def _sms(request: web.Request, ledger: Any) -> web.Response:
    found = await ledger.get(request.match_info["id"])
    return web.json_response(found) if found is not None else _error(404, "no such SMS (ids are kept 7 days)")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/campaigns", _guarded("campaigns", _create))
    app.router.add_get("/campaigns", _guarded("campaigns", _list))
    app.router.add_get("/campaigns/{id}", _guarded("campaigns", _status))
    app.router.add_get("/campaigns/{id}/preview", _guarded("campaigns", _preview))
    app.router.add_get("/campaigns/{id}/hourly", _guarded("campaigns", _hourly))
    app.router.add_get("/campaigns/{id}/chart.svg", _guarded("campaigns", _chart))
    app.router.add_post("/campaigns/{id}/{action}", _guarded("campaigns", _move))
    app.router.add_post("/sms/send", _guarded("ledger", _send))
    app.router.add_get("/sms/{id}", _guarded("ledger", _sms))
