"""The self-care half of `HttpBackend`: top-up, postpaid bill, points history and
transfers, ending a package, offers, airtime advance over the billing API.

The routes, bodies and status codes are in `docs/backend-http.md` ("Self-care
services"); decoding is as strict as for the rest of the contract, and every failure is
`DependencyDown`. A scratch-card PIN travels only in a request body, never in a URL,
and no message names it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.backend.http import decode_answer, refusal
from ussd_gateway.backend.port import (
    AdvanceQuote,
    AdvanceResult,
    Bill,
    BillPayment,
    ChangeResult,
    Offer,
    PointsEntry,
    TopupRecord,
    TopupResult,
    TransferResult,
)

T = TypeVar("T")

TOPUP_STATUSES: dict[int, frozenset[str]] = {200: frozenset({"ok"}), 404: frozenset({"invalid"}), 409: frozenset({"used"})}
BILL_PAYMENT_STATUSES: dict[int, frozenset[str]] = {
    200: frozenset({"ok"}), 402: frozenset({"insufficient"}), 409: frozenset({"nothing_due"}), 422: frozenset({"not_allowed"}),
}
TRANSFER_STATUSES: dict[int, frozenset[str]] = {
    200: frozenset({"ok"}), 402: frozenset({"insufficient"}),
    422: frozenset({"not_member", "recipient_not_member", "self", "invalid"}),
}
ADVANCE_STATUSES: dict[int, frozenset[str]] = {
    200: frozenset({"ok"}), 409: frozenset({"owed"}), 422: frozenset({"too_much", "not_allowed"}),
}
END_PACKAGE_STATUSES: dict[int, frozenset[str]] = {200: frozenset({"ok"}), 404: frozenset({"not_found"})}


class SelfcareHttp:
    """Mixed into `HttpBackend`, whose `_call` does the requests."""

    async def _call(self, method: str, route: str, **kwargs: Any) -> tuple[int, Any, str]:  # pragma: no cover - HttpBackend's
        raise NotImplementedError

    async def _answer(self, cls: type[T], statuses: dict[int, frozenset[str]], method: str, route: str, **kwargs: Any) -> T:
        status, payload, label = await self._call(method, route, **kwargs)
        allowed = statuses.get(status)
        if allowed is None or not isinstance(payload, dict) or payload.get("status") not in allowed:
            raise refusal(status, payload, label)
        return decode_answer(cls, payload, label)

    async def _listing(self, cls: type[T], field: str, route: str, **kwargs: Any) -> Any:
        status, payload, label = await self._call("GET", route, **kwargs)
        if status != 200:
            raise refusal(status, payload, label)
        if not isinstance(payload, dict) or field not in payload:
            raise DependencyDown(f"billing API answered {label} without `{field}`")
        value = payload[field]
        if value is None:
            return None
        if cls is Bill:
            return decode_answer(Bill, value, label)
        if not isinstance(value, list):
            raise DependencyDown(f"billing API answered {label} with `{field}` that is not an array")
        return tuple(decode_answer(cls, item, label) for item in value)

    async def topup(self, msisdn: str, pin: str, idempotency_key: str) -> TopupResult:
        return await self._answer(
            TopupResult, TOPUP_STATUSES, "POST", "/v1/subscribers/{msisdn}/topups", msisdn=msisdn,
            body={"pin": pin, "idempotency_key": idempotency_key}, idempotency_key=idempotency_key,
        )

    async def topup_history(self, msisdn: str, limit: int = 5) -> tuple[TopupRecord, ...]:
        found = await self._listing(TopupRecord, "topups", "/v1/subscribers/{msisdn}/topups", msisdn=msisdn, query={"limit": str(limit)})
        return found or ()

    async def bill(self, msisdn: str) -> Bill | None:
        found: Bill | None = await self._listing(Bill, "bill", "/v1/subscribers/{msisdn}/bill", msisdn=msisdn)
        return found

    async def pay_bill(self, msisdn: str, idempotency_key: str) -> BillPayment:
        return await self._answer(
            BillPayment, BILL_PAYMENT_STATUSES, "POST", "/v1/subscribers/{msisdn}/bill/payments", msisdn=msisdn,
            body={"idempotency_key": idempotency_key}, idempotency_key=idempotency_key,
        )

    async def points_history(self, msisdn: str, limit: int = 5) -> tuple[PointsEntry, ...]:
        found = await self._listing(PointsEntry, "history", "/v1/subscribers/{msisdn}/points", msisdn=msisdn, query={"limit": str(limit)})
        return found or ()

    async def transfer_points(self, msisdn: str, to: str, points: int, idempotency_key: str) -> TransferResult:
        return await self._answer(
            TransferResult, TRANSFER_STATUSES, "POST", "/v1/subscribers/{msisdn}/points/transfers", msisdn=msisdn,
            body={"to": normalise_msisdn(to), "points": points, "idempotency_key": idempotency_key}, idempotency_key=idempotency_key,
        )

    async def end_package(self, msisdn: str, package_code: str) -> ChangeResult:
        return await self._answer(
            ChangeResult, END_PACKAGE_STATUSES, "DELETE", "/v1/subscribers/{msisdn}/packages/{code}", msisdn=msisdn, code=package_code
        )

    async def offers(self, msisdn: str) -> tuple[Offer, ...]:
        found = await self._listing(Offer, "offers", "/v1/subscribers/{msisdn}/offers", msisdn=msisdn)
        return found or ()

    async def advance_quote(self, msisdn: str, missing: int) -> AdvanceQuote:
        status, payload, label = await self._call("GET", "/v1/subscribers/{msisdn}/advance", msisdn=msisdn, query={"missing": str(missing)})
        if status != 200:
            raise refusal(status, payload, label)
        return decode_answer(AdvanceQuote, payload, label)

    async def take_advance(self, msisdn: str, amount: int, idempotency_key: str) -> AdvanceResult:
        return await self._answer(
            AdvanceResult, ADVANCE_STATUSES, "POST", "/v1/subscribers/{msisdn}/advances", msisdn=msisdn,
            body={"amount": amount, "idempotency_key": idempotency_key}, idempotency_key=idempotency_key,
        )
