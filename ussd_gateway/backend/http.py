"""`HttpBackend`: the subscriber backend port over an operator's billing API (HTTP/JSON).

The contract is in `docs/backend-http.md`, and `billing_server.create_billing_app`
serves it on top of any backend, so this client is tested against a real server.

Every call is bounded by `timeout_s` (connect, send and read together): the gateway
must answer the subscriber well within a second. Anything that is not a well-formed
answer (no connection, a timeout, a 5xx, an unexpected status or body) becomes
`DependencyDown`, which the dispatcher turns into a "service busy" END; the business
outcomes (`insufficient`, `unknown`, `not_found`, `already`) arrive as 402/404/409 with
a result body and become ordinary results.

Responses are decoded strictly into the port's dataclasses: an amount sent as `1.5`
or `"1000"` is refused rather than silently rounded, because money is whole đồng.
"""

from __future__ import annotations

import asyncio
import dataclasses
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import quote

import aiohttp
import orjson

from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.backend.port import (
    Account,
    BundleChoice,
    Catalogue,
    ChangeResult,
    Confirm,
    Feedback,
    PurchaseResult,
    UsageProfile,
)

T = TypeVar("T")

PURCHASE_STATUSES: dict[int, str] = {200: "ok", 402: "insufficient", 404: "unknown"}
"""HTTP status of a purchase, bundle or redemption answer -> `PurchaseResult.status`."""
CHANGE_STATUSES: dict[int, str] = {200: "ok", 404: "not_found", 409: "already"}
"""HTTP status of a cancellation or membership answer -> `ChangeResult.status`."""


# ---- Strict decoding ------------------------------------------------------------------


class ContractError(ValueError):
    """A JSON value that does not fit the port's dataclasses."""


_HINTS: dict[type, dict[str, Any]] = {}


def decode(cls: type[T], value: Any) -> T:
    """Build `cls` (a port dataclass) from parsed JSON, checking every type.

    ints must be JSON integers (not floats, not strings, not booleans); tuples come
    from arrays; unknown keys are ignored (the API may grow); missing keys take the
    dataclass default or are an error.

    Raises:
        ContractError: naming the offending field.
    """
    return _decode(cls, value, cls.__name__)


def _decode(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, where)
    origin = get_origin(tp)
    if tp is int:
        if type(value) is int:
            return value
        if type(value) is float:
            raise ContractError(f"a non-integer amount at {where} ({_show(value)})")
        raise ContractError(f"an invalid value at {where} (expected an integer, got {_show(value)})")
    if tp is str or tp is bool:
        if type(value) is tp:
            return value
        raise ContractError(f"an invalid value at {where} (expected a {tp.__name__}, got {_show(value)})")
    if origin is Literal:
        if isinstance(value, str) and value in get_args(tp):
            return value
        raise ContractError(f"an invalid value at {where} (expected one of {', '.join(get_args(tp))}, got {_show(value)})")
    if origin is tuple:
        if not isinstance(value, list):
            raise ContractError(f"an invalid value at {where} (expected an array, got {_show(value)})")
        item = get_args(tp)[0]
        return tuple(_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ContractError(f"an invalid value at {where} (expected an object, got {_show(value)})")
        item = get_args(tp)[1]
        return {k: _decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin is Union or origin is types.UnionType:
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        return _decode(options[0], value, where)
    raise TypeError(f"no JSON decoding for {tp!r} at {where}")  # a port type we forgot


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:40] + "…"


def _decode_dataclass(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ContractError(f"an invalid value at {where} (expected an object, got {_show(value)})")
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = _decode(hints[f.name], value[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ContractError(f"no value at {where}.{f.name}")
    return cls(**kwargs)


def decode_answer(cls: type[T], payload: Any, label: str) -> T:
    """The billing API's answer as `cls`, or DependencyDown naming what was wrong."""
    try:
        return decode(cls, payload)
    except ContractError as exc:
        raise DependencyDown(f"billing API sent {exc} in its answer to {label}") from exc


def refusal(status: int, payload: Any, label: str) -> DependencyDown:
    """An answer the menus cannot use: a client error, or a status the contract does
    not give for this call. The subscriber sees "service busy"; the message is for
    the operator's logs."""
    reason = (payload.get("error") or payload.get("status")) if isinstance(payload, dict) else None
    hint = {401: "; check the API token", 403: "; check the API token", 404: "; check the base URL"}.get(status, "")
    return DependencyDown(f"billing API answered {label} with HTTP {status} ({reason or 'no reason given'}){hint}")


# ---- The client -----------------------------------------------------------------------

from ussd_gateway.backend.http_selfcare import SelfcareHttp as _SelfcareHttp  # noqa: E402 (it uses decode, above)



class HttpBackend(_SelfcareHttp):
    """`SubscriberBackend` over HTTP/JSON (see `docs/backend-http.md`).

    `session` lets the application share one connection pool; the backend then leaves
    it open in `close()`. Without one, a session is created on first use (it needs the
    running event loop) and closed in `close()`. `token` is sent as a bearer token.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 0.8,
        session: aiohttp.ClientSession | None = None,
        token: str | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._session = session
        self._owns_session = session is None
        self._token = token
        self._catalogue: Catalogue | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        return self._session

    async def _call(
        self,
        method: str,
        route: str,
        *,
        msisdn: str | None = None,
        code: str | None = None,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any, str]:
        """One request: (HTTP status, parsed JSON or None, a label for messages).

        The label is the route template, so messages and logs never carry the MSISDN.
        """
        label = f"{method} {route}"
        path = route.format(
            msisdn=quote(normalise_msisdn(msisdn), safe="") if msisdn is not None else "",
            code=quote(code, safe="") if code is not None else "",
        )
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._client().request(
                    method, self._base_url + path, data=data, headers=headers, params=query
                ) as response:
                    status = response.status
                    raw = await response.read()
        except TimeoutError as exc:
            raise DependencyDown(f"billing API did not answer {label} within {self._timeout_s} s") from exc
        except aiohttp.ClientError as exc:
            raise DependencyDown(
                f"billing API unreachable at {self._base_url} ({exc.__class__.__name__}); check the URL and that it is up"
            ) from exc
        if status >= 500:
            raise DependencyDown(f"billing API failed {label} with HTTP {status}; retry later")
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            if status < 400:
                raise DependencyDown(f"billing API answered {label} with HTTP {status} and a body that is not JSON") from exc
            payload = None  # an error page from a proxy or a wrong URL: the status says enough
        return status, payload, label

    async def _get(self, cls: type[T], route: str, **kwargs: Any) -> T:
        status, payload, label = await self._call("GET", route, **kwargs)
        if status != 200:
            raise refusal(status, payload, label)
        return decode_answer(cls, payload, label)

    async def _outcome(self, cls: type[T], statuses: dict[int, str], method: str, route: str, **kwargs: Any) -> T:
        """A business outcome: the HTTP status and the body's `status` must agree (a
        404 without a result body is a wrong URL, not an unknown package)."""
        status, payload, label = await self._call(method, route, **kwargs)
        expected = statuses.get(status)
        if expected is None or not isinstance(payload, dict) or payload.get("status") != expected:
            raise refusal(status, payload, label)
        return decode_answer(cls, payload, label)

    async def catalogue(self) -> Catalogue:
        if self._catalogue is None:
            self._catalogue = await self._get(Catalogue, "/v1/catalogue")
        return self._catalogue

    async def account(self, msisdn: str) -> Account:
        return await self._get(Account, "/v1/subscribers/{msisdn}", msisdn=msisdn)

    async def usage_profile(self, msisdn: str) -> UsageProfile:
        return await self._get(UsageProfile, "/v1/subscribers/{msisdn}/usage", msisdn=msisdn)

    queues_confirmations = False
    """The billing API cannot queue our SMS in its own transaction: the action queues
    it after the debit, retried and deduplicated by the idempotency key, so a hop cut
    off in between queues it when the gateway retries (docs/operations.md)."""

    async def purchase(
        self, msisdn: str, package_code: str, idempotency_key: str, confirm: Confirm | None = None
    ) -> PurchaseResult:
        return await self._outcome(
            PurchaseResult, PURCHASE_STATUSES, "POST", "/v1/subscribers/{msisdn}/purchases", msisdn=msisdn,
            body={"package_code": package_code, "idempotency_key": idempotency_key}, idempotency_key=idempotency_key,
        )

    async def buy_bundle(
        self, msisdn: str, choice: BundleChoice, idempotency_key: str, confirm: Confirm | None = None
    ) -> PurchaseResult:
        body = {**dataclasses.asdict(choice), "idempotency_key": idempotency_key}
        return await self._outcome(
            PurchaseResult, PURCHASE_STATUSES, "POST", "/v1/subscribers/{msisdn}/bundles", msisdn=msisdn,
            body=body, idempotency_key=idempotency_key,
        )

    async def redeem(self, msisdn: str, reward_code: str, idempotency_key: str) -> PurchaseResult:
        return await self._outcome(
            PurchaseResult, PURCHASE_STATUSES, "POST", "/v1/subscribers/{msisdn}/redemptions", msisdn=msisdn,
            body={"reward_code": reward_code, "idempotency_key": idempotency_key}, idempotency_key=idempotency_key,
        )

    async def cancel_renewal(self, msisdn: str, package_code: str) -> ChangeResult:
        return await self._outcome(
            ChangeResult, CHANGE_STATUSES, "POST", "/v1/subscribers/{msisdn}/packages/{code}/cancel-renewal",
            msisdn=msisdn, code=package_code,
        )

    async def cancel_vas(self, msisdn: str, vas_code: str) -> ChangeResult:
        return await self._outcome(
            ChangeResult, CHANGE_STATUSES, "DELETE", "/v1/subscribers/{msisdn}/vas/{code}", msisdn=msisdn, code=vas_code
        )

    async def kndl_join(self, msisdn: str) -> ChangeResult:
        return await self._outcome(ChangeResult, CHANGE_STATUSES, "POST", "/v1/subscribers/{msisdn}/kndl", msisdn=msisdn)

    async def kndl_leave(self, msisdn: str) -> ChangeResult:
        return await self._outcome(ChangeResult, CHANGE_STATUSES, "DELETE", "/v1/subscribers/{msisdn}/kndl", msisdn=msisdn)

    async def add_feedback(self, feedback: Feedback) -> None:
        body = {"msisdn": normalise_msisdn(feedback.msisdn), "topic": feedback.topic, "message": feedback.message}
        status, payload, label = await self._call("POST", "/v1/feedback", body=body)
        if status not in (200, 201, 204):
            raise refusal(status, payload, label)

    async def list_feedback(self, limit: int = 100) -> list[Feedback]:
        status, payload, label = await self._call("GET", "/v1/feedback", query={"limit": str(limit)})
        if status != 200:
            raise refusal(status, payload, label)
        if not isinstance(payload, dict) or not isinstance(payload.get("feedback"), list):
            raise DependencyDown(f"billing API answered {label} without a `feedback` array")
        return [decode_answer(Feedback, item, label) for item in payload["feedback"]]

    async def subscribers(self, wanted: Any, start: int = 0) -> Any:
        """Not in the billing API's contract: campaigns over this backend target a CSV."""
        from ussd_gateway.backend.port import Unsupported

        raise Unsupported(
            "the HTTP billing backend cannot list subscribers: target this campaign with a CSV of MSISDNs "
            "(docs/campaigns.md), or use the demo backend for filters"
        )
        yield  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()
