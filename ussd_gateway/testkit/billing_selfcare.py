"""The self-care routes of the test billing server (`docs/backend-http.md`, "Self-care
services"): top-up, postpaid bill and payment, points history and transfers, ending a
package, offers, airtime advance. Same rules as the rest of the server: bodies decoded
strictly, a malformed request is `400 {"error": reason}`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from ussd_gateway.core.errors import BadRequest

from ussd_gateway.backend.http_selfcare import (
    ADVANCE_STATUSES,
    BILL_PAYMENT_STATUSES,
    END_PACKAGE_STATUSES,
    TOPUP_STATUSES,
    TRANSFER_STATUSES,
)
from ussd_gateway.backend.port import SubscriberBackend
from ussd_gateway.testkit.billing_server import _body, _code, _idempotency_key, _json, _msisdn, _text

MAX_PIN_LENGTH = 20
MAX_HISTORY = 50
MAX_AMOUNT = 10_000_000


def _http_status(table: dict[int, frozenset[str]], status: str) -> int:
    return next(code for code, statuses in table.items() if status in statuses)


def _result(table: dict[int, frozenset[str]], result: Any) -> web.Response:
    return _json(result, _http_status(table, result.status))


def _whole(value: Any, name: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise BadRequest(f"`{name}` must be an integer from {low} to {high}")
    return value


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "5")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= MAX_HISTORY):
        raise BadRequest(f"`limit` must be an integer from 1 to {MAX_HISTORY}")
    return int(raw)


def selfcare_routes(backend: SubscriberBackend) -> list[web.RouteDef]:
    """The routes, under `/v1/subscribers/{msisdn}`."""
    sub = "/v1/subscribers/{msisdn}"

    async def topup(request: web.Request) -> web.Response:
        msisdn, body = _msisdn(request), await _body(request)
        pin = _text(body.get("pin"), "pin", MAX_PIN_LENGTH)
        return _result(TOPUP_STATUSES, await backend.topup(msisdn, pin, _idempotency_key(request, body)))

    async def topups(request: web.Request) -> web.Response:
        return _json({"topups": await backend.topup_history(_msisdn(request), _limit(request))})

    async def bill(request: web.Request) -> web.Response:
        found = await backend.bill(_msisdn(request))
        return _json({"bill": None if found is None else {**dataclasses.asdict(found), "unpaid": found.unpaid}})

    async def pay_bill(request: web.Request) -> web.Response:
        msisdn, body = _msisdn(request), await _body(request)
        return _result(BILL_PAYMENT_STATUSES, await backend.pay_bill(msisdn, _idempotency_key(request, body)))

    async def points(request: web.Request) -> web.Response:
        return _json({"history": await backend.points_history(_msisdn(request), _limit(request))})

    async def transfer(request: web.Request) -> web.Response:
        msisdn, body = _msisdn(request), await _body(request)
        to = _text(body.get("to"), "to", 20)
        amount = _whole(body.get("points"), "points", 1, MAX_AMOUNT)
        return _result(TRANSFER_STATUSES, await backend.transfer_points(msisdn, to, amount, _idempotency_key(request, body)))

    async def end_package(request: web.Request) -> web.Response:
        return _result(END_PACKAGE_STATUSES, await backend.end_package(_msisdn(request), _code(request)))

    async def offers(request: web.Request) -> web.Response:
        return _json({"offers": await backend.offers(_msisdn(request))})

    async def advance(request: web.Request) -> web.Response:
        raw = request.query.get("missing", "")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
            raise BadRequest("`missing` must be a whole number of đồng")
        return _json(await backend.advance_quote(_msisdn(request), int(raw)))

    async def take_advance(request: web.Request) -> web.Response:
        msisdn, body = _msisdn(request), await _body(request)
        amount = _whole(body.get("amount"), "amount", 1, MAX_AMOUNT)
        return _result(ADVANCE_STATUSES, await backend.take_advance(msisdn, amount, _idempotency_key(request, body)))

    return [
        web.post(sub + "/topups", topup),
        web.get(sub + "/topups", topups),
        web.get(sub + "/bill", bill),
        web.post(sub + "/bill/payments", pay_bill),
        web.get(sub + "/points", points),
        web.post(sub + "/points/transfers", transfer),
        web.delete(sub + "/packages/{code}", end_package),
        web.get(sub + "/offers", offers),
        web.get(sub + "/advance", advance),
        web.post(sub + "/advances", take_advance),
    ]
