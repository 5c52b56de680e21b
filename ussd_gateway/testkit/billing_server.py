"""A billing HTTP server that serves the `docs/backend-http.md` contract on top of any
`SubscriberBackend` (in practice the demo one).

It exists so that `HttpBackend` is tested against a real server speaking the real
contract, and so that an operator's engineer can run the contract, poke it with `curl`
and compare it with their billing API. Every input is untrusted: bodies are capped,
decoded strictly, and a malformed request gets `400 {"error": reason}`, never a
traceback.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ussd_gateway.core.errors import BadRequest, DependencyDown
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.backend.http import CHANGE_STATUSES, PURCHASE_STATUSES
from ussd_gateway.backend.port import CYCLE_DAYS, BundleChoice, ChangeResult, Feedback, PurchaseResult, SubscriberBackend

MAX_BODY_BYTES = 16 * 1024
MAX_KEY_LENGTH = 200
MAX_CODE_LENGTH = 40
MAX_NAME_LENGTH = 40
MAX_TOPIC_LENGTH = 80
MAX_MESSAGE_LENGTH = 1000
MAX_FEEDBACK_LIMIT = 1000

_STATUS_OF_PURCHASE = {status: code for code, status in PURCHASE_STATUSES.items()}
_STATUS_OF_CHANGE = {status: code for code, status in CHANGE_STATUSES.items()}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_billing_app(backend: SubscriberBackend, *, token: str | None = None) -> web.Application:
    """The contract's routes over `backend`. With `token`, every request must carry
    `Authorization: Bearer <token>`. The caller owns `backend` and closes it."""
    app = web.Application(middlewares=[_json_errors, *([_bearer(token)] if token else [])], client_max_size=MAX_BODY_BYTES)
    api = _Api(backend)
    sub = "/v1/subscribers/{msisdn}"
    app.add_routes([
        web.get("/v1/catalogue", api.catalogue),
        web.get(sub, api.account),
        web.get(sub + "/usage", api.usage),
        web.post(sub + "/purchases", api.purchase),
        web.post(sub + "/bundles", api.bundle),
        web.post(sub + "/redemptions", api.redeem),
        web.post(sub + "/packages/{code}/cancel-renewal", api.cancel_renewal),
        web.delete(sub + "/vas/{code}", api.cancel_vas),
        web.post(sub + "/kndl", api.kndl_join),
        web.delete(sub + "/kndl", api.kndl_leave),
        web.post("/v1/feedback", api.add_feedback),
        web.get("/v1/feedback", api.list_feedback),
    ])
    from ussd_gateway.testkit.billing_selfcare import selfcare_routes  # it uses this module's helpers

    app.add_routes(selfcare_routes(backend))
    return app


# ---- Middlewares ----------------------------------------------------------------------


def _error(status: int, reason: str) -> web.Response:
    return _json({"error": reason}, status)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure answers JSON `{"error": reason}`, so clients parse one shape."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error(400, str(exc))
    except DependencyDown as exc:
        return _error(503, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)


def _bearer(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _error(401, "missing or wrong bearer token in the Authorization header")
        return await handler(request)

    return check


# ---- Request decoding -----------------------------------------------------------------


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise BadRequest("send a JSON object with Content-Type: application/json")
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise BadRequest("the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _text(value: Any, name: str, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"`{name}` must be a non-empty string")
    if len(value) > max_length:
        raise BadRequest(f"`{name}` is longer than {max_length} characters")
    return value


def _index(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise BadRequest(f"`{name}` must be a level index, an integer >= 0")
    return value


def _msisdn(request: web.Request) -> str:
    return normalise_msisdn(request.match_info["msisdn"])


def _code(request: web.Request) -> str:
    return _text(request.match_info["code"], "code", MAX_CODE_LENGTH)


def _idempotency_key(request: web.Request, body: dict[str, Any]) -> str:
    """The header and the body's `idempotency_key`: either will do, both must agree."""
    header = request.headers.get("Idempotency-Key")
    in_body = body.get("idempotency_key")
    if header is not None and in_body is not None and header != in_body:
        raise BadRequest("the Idempotency-Key header and the body's `idempotency_key` differ")
    return _text(header if header is not None else in_body, "idempotency_key", MAX_KEY_LENGTH)


def _purchase(result: PurchaseResult) -> web.Response:
    return _json(result, _STATUS_OF_PURCHASE[result.status])


def _change(result: ChangeResult) -> web.Response:
    return _json(result, _STATUS_OF_CHANGE[result.status])


# ---- Handlers -------------------------------------------------------------------------


class _Api:
    """One method per route; each decodes, calls the backend, encodes."""

    def __init__(self, backend: SubscriberBackend) -> None:
        self._backend = backend

    async def catalogue(self, request: web.Request) -> web.Response:
        return _json(await self._backend.catalogue())

    async def account(self, request: web.Request) -> web.Response:
        return _json(await self._backend.account(_msisdn(request)))

    async def usage(self, request: web.Request) -> web.Response:
        return _json(await self._backend.usage_profile(_msisdn(request)))

    async def purchase(self, request: web.Request) -> web.Response:
        msisdn, body = _msisdn(request), await _body(request)
        code = _text(body.get("package_code"), "package_code", MAX_CODE_LENGTH)
        key = _idempotency_key(request, body)
        return _purchase(await self._backend.purchase(msisdn, code, key))

    async def bundle(self, request: web.Request) -> web.Response:
        msisdn, body = _msisdn(request), await _body(request)
        cycle = body.get("cycle")
        if cycle not in CYCLE_DAYS:
            raise BadRequest(f"`cycle` must be one of {', '.join(CYCLE_DAYS)}")
        choice = BundleChoice(
            data=_index(body.get("data"), "data"),
            sms=_index(body.get("sms"), "sms"),
            voice=_index(body.get("voice"), "voice"),
            cycle=cycle,
            name=_text(body.get("name"), "name", MAX_NAME_LENGTH),
        )
        key = _idempotency_key(request, body)
        return _purchase(await self._backend.buy_bundle(msisdn, choice, key))

    async def redeem(self, request: web.Request) -> web.Response:
        msisdn, body = _msisdn(request), await _body(request)
        code = _text(body.get("reward_code"), "reward_code", MAX_CODE_LENGTH)
        key = _idempotency_key(request, body)
        return _purchase(await self._backend.redeem(msisdn, code, key))

    async def cancel_renewal(self, request: web.Request) -> web.Response:
        return _change(await self._backend.cancel_renewal(_msisdn(request), _code(request)))

    async def cancel_vas(self, request: web.Request) -> web.Response:
        return _change(await self._backend.cancel_vas(_msisdn(request), _code(request)))

    async def kndl_join(self, request: web.Request) -> web.Response:
        return _change(await self._backend.kndl_join(_msisdn(request)))

    async def kndl_leave(self, request: web.Request) -> web.Response:
        return _change(await self._backend.kndl_leave(_msisdn(request)))

    async def add_feedback(self, request: web.Request) -> web.Response:
        body = await _body(request)
        feedback = Feedback(
            msisdn=normalise_msisdn(_text(body.get("msisdn"), "msisdn", 20)),
            topic=_text(body.get("topic"), "topic", MAX_TOPIC_LENGTH),
            message=_text(body.get("message"), "message", MAX_MESSAGE_LENGTH),
        )
        await self._backend.add_feedback(feedback)
        return web.Response(status=204)

    async def list_feedback(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", "100")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= MAX_FEEDBACK_LIMIT):
            raise BadRequest(f"`limit` must be an integer from 1 to {MAX_FEEDBACK_LIMIT}")
        return _json({"feedback": await self._backend.list_feedback(int(raw))})
