"""Who may talk to the server: one aiohttp middleware in front of every route.

The gateway routes (`/ussd/africastalking`, `/ussd`, `/sms`, `/sms/outbound`) move money
and show subscribers' data, so a caller must pass what is configured, in this order:
the allow-list (403), a bearer token (401), an HMAC signature (401). The testers' and
operators' routes (`/sim`, `/sms/outbound`, `/menus/graph`, `/metrics`, `/admin/...`) are served on
the main listener only when `admin_on_main` (loopback binds, or explicitly), else on
the admin listener, each time behind the admin token when one is set. `/healthz` and
`/readyz` are always open (load balancers probe them).

Every caller is also held to a request rate (429 with `Retry-After`), counted across
workers and instances through Redis when the sessions are there (`sessions.peer_rate`:
each process adds its counts in one pipeline every 100 ms, not a command per request).

Tokens and secrets are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ussd_gateway.channels.http.body import BodyTimeout, read_bytes
from ussd_gateway.core.errors import BadRequest, DependencyDown
from ussd_gateway.core.metrics import GuardMetrics
from ussd_gateway.sessions.peer_rate import PeerRate

GATEWAY_PATHS = frozenset({"/ussd/africastalking", "/ussd", "/sms", "/sms/outbound", "/sms/send"})
GATEWAY_PREFIXES = ("/sms/",)
"""`/sms/send` and `GET /sms/{id}`: tracked SMS, held to the gateway routes' policy."""
ADMIN_PATHS = frozenset({"/sim", "/sms/outbound", "/menus/graph", "/metrics", "/campaigns"})
ADMIN_PREFIXES = ("/static/", "/admin/", "/campaigns/")
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
TIMESTAMP_HEADER = "X-Ussd-Timestamp"
SIGNATURE_HEADER = "X-Ussd-Signature"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ReplayCheck = Callable[[str, int], Awaitable[bool]]
"""`(key, ttl_s) -> True the first time`: the session store's `claim_once`."""


def parse_networks(values: Iterable[str], where: str) -> tuple[Network, ...]:
    """Addresses or CIDR networks; ValueError naming `where` and the bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{where}: {value[:50]!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


@dataclass(slots=True)
class GuardPolicy:
    """What the middleware enforces; built by the app from `[http]`, `[admin]`, `[limits]`."""

    tokens: tuple[str, ...] = ()
    allow_from: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    signing_secrets: tuple[str, ...] = ()
    signature_max_age_s: int = 300
    admin_token: str = ""
    admin_on_main: bool = True
    peer_requests_per_second: int = 0
    admin_ports: set[int] = field(default_factory=set)
    """Local ports of the admin listener(s), filled in once they are bound."""


def client_address(request: web.Request, trusted: tuple[Network, ...]) -> str:
    """The caller's address: the TCP peer, or, when that peer is a trusted proxy, the
    nearest address in `X-Forwarded-For` that is not itself a trusted proxy."""
    peer = request.remote or ""
    if not trusted or not _in(peer, trusted):
        return peer
    forwarded = [part.strip() for part in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if part.strip()]
    for address in reversed(forwarded):
        if not _in(address, trusted):
            try:
                return str(ipaddress.ip_address(address))
            except ValueError:
                return peer  # a proxy that writes garbage: judge the proxy itself
    return peer


def _matches(presented: str, secrets: Iterable[str]) -> bool:
    """Constant-time comparison against every configured secret (no early exit)."""
    wanted = presented.encode("utf-8", "surrogateescape")
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(wanted, secret.encode())
    return found


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def signature_of(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of `timestamp + "." + body` under `secret` (what signers send)."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Guard:
    """The middleware (`guard.middleware`) and its counters."""

    def __init__(
        self, policy: GuardPolicy, metrics: GuardMetrics, replay_check: ReplayCheck, *,
        redis: Any = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.metrics = metrics
        self.replay_check = replay_check
        self.clock = clock
        self.peers = PeerRate(policy.peer_requests_per_second, redis)

    def _refuse(self, request: web.Request, status: int, reason: str, label: str, headers: dict[str, str] | None = None) -> web.Response:
        self.metrics.count_refused(label)
        if request.path == "/ussd/africastalking":
            return web.Response(status=status, text=reason + "\n", content_type="text/plain", headers=headers)
        return web.Response(status=status, body=orjson.dumps({"error": reason}), content_type="application/json", headers=headers)

    def _on_admin_listener(self, request: web.Request) -> bool:
        if not self.policy.admin_ports or request.transport is None:
            return False
        sockname = request.transport.get_extra_info("sockname")
        return bool(sockname) and sockname[1] in self.policy.admin_ports

    def _admin_ok(self, request: web.Request) -> bool:
        presented = _bearer(request)
        return not self.policy.admin_token or (presented is not None and _matches(presented, (self.policy.admin_token,)))

    def _admin_refusal(self, request: web.Request) -> web.Response:
        return self._refuse(
            request, 401, "the admin token is missing or wrong (Authorization: Bearer <token>)", "admin_unauthorized",
            {"WWW-Authenticate": 'Basic realm="ussd-gateway admin", charset="UTF-8"'},
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in OPEN_PATHS:
            return await handler(request)
        policy = self.policy
        if policy.admin_ports and self._on_admin_listener(request):
            return await handler(request) if self._admin_ok(request) else self._admin_refusal(request)
        caller = client_address(request, policy.trusted_proxies)
        if not self.peers.allow(caller):
            retry = str(self.peers.retry_after_s())
            return self._refuse(request, 429, f"too many requests from this caller: retry after {retry} s", "rate_limited", {"Retry-After": retry})
        admin = path in ADMIN_PATHS or path.startswith(ADMIN_PREFIXES)
        if admin and not policy.admin_on_main:
            return self._refuse(request, 404, "not found (the admin routes are on the admin listener)", "admin_off")
        if admin and policy.admin_token:
            if self._admin_ok(request):
                return await handler(request)
            if path not in GATEWAY_PATHS and not path.startswith(GATEWAY_PREFIXES):
                return self._admin_refusal(request)
        if path in GATEWAY_PATHS or path.startswith(GATEWAY_PREFIXES):
            # Checked in line, with no coroutine of its own unless a signature must be read.
            refusal = self._check_caller(request, caller) if policy.allow_from or policy.tokens else None
            if refusal is None and policy.signing_secrets:
                refusal = await self._check_signature(request)
            if refusal is not None:
                return refusal
        return await handler(request)

    def _check_caller(self, request: web.Request, caller: str) -> web.Response | None:
        """The allow-list (403), then the bearer token (401)."""
        policy = self.policy
        if policy.allow_from and not _in(caller, policy.allow_from):
            return self._refuse(request, 403, "this address may not call the gateway routes", "forbidden")
        if policy.tokens:
            presented = _bearer(request) if request.headers.get("Authorization", "").lower().startswith("bearer ") else None
            if presented is None:
                return self._refuse(request, 401, "missing bearer token (Authorization: Bearer <token>)", "unauthorized")
            if not _matches(presented, policy.tokens):
                return self._refuse(request, 401, "the bearer token is not accepted", "unauthorized")
        return None

    async def _check_signature(self, request: web.Request) -> web.Response | None:
        timestamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
        signature = request.headers.get(SIGNATURE_HEADER, "").strip().lower().removeprefix("sha256=")
        if not timestamp or not signature:
            return self._refuse(request, 401, f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}", "bad_signature")
        try:
            age = abs(self.clock() - int(timestamp))
        except ValueError:
            return self._refuse(request, 401, f"{TIMESTAMP_HEADER} must be Unix seconds", "bad_signature")
        if age > self.policy.signature_max_age_s:
            return self._refuse(request, 401, f"the signature is stale (older than {self.policy.signature_max_age_s} s)", "bad_signature")
        try:
            body = await read_bytes(request)
        except BadRequest as error:
            status = 408 if isinstance(error, BodyTimeout) else 400
            return self._refuse(request, status, str(error), "bad_body")
        expected = [signature_of(secret, timestamp, body) for secret in self.policy.signing_secrets]
        if not _matches(signature, expected):
            return self._refuse(request, 401, "the signature does not match the body and timestamp", "bad_signature")
        try:
            first = await self.replay_check(f"sig:{signature}", self.policy.signature_max_age_s * 2)
        except DependencyDown:
            return self._refuse(request, 503, "service busy, try again later", "store_down")
        if not first:
            return self._refuse(request, 401, "this signature was already used (a replayed request)", "replayed_signature")
        return None

