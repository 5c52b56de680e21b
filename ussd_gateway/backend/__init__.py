"""The subscriber backend port and its implementations.

`build_backend` picks one from configuration: the demo backend (in memory, or in Redis
so several gateway processes share its state) or an operator's billing API over HTTP.
"""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from ussd_gateway.backend.demo import DemoBackend, DemoData, load_demo_data
from ussd_gateway.backend.demo_redis import OutboxSink
from ussd_gateway.backend.http import HttpBackend
from ussd_gateway.backend.port import (
    CYCLE_DAYS,
    Account,
    ActivePackage,
    BundleChoice,
    BundleLevel,
    Catalogue,
    ChangeResult,
    Feedback,
    Kndl,
    Package,
    PurchaseResult,
    Reward,
    SubscriberBackend,
    UsageProfile,
    VasSubscription,
)

__all__ = [
    "CYCLE_DAYS",
    "Account",
    "ActivePackage",
    "BundleChoice",
    "BundleLevel",
    "Catalogue",
    "ChangeResult",
    "DemoBackend",
    "DemoData",
    "Feedback",
    "HttpBackend",
    "Kndl",
    "Package",
    "PurchaseResult",
    "Reward",
    "SubscriberBackend",
    "UsageProfile",
    "VasSubscription",
    "build_backend",
    "load_demo_data",
]

BACKEND_KINDS = ("demo", "memory", "redis", "http")


def build_backend(
    kind: str,
    *,
    redis_client: aioredis.Redis | None = None,
    demo_data_path: str | Path | None = None,
    http_url: str | None = None,
    http_timeout_s: float = 0.8,
    http_token: str | None = None,
    outbox: OutboxSink | None = None,
    redis_timeout_s: float = 0.3,
    money_wait: tuple[int, int] = (0, 0),
) -> SubscriberBackend:
    """The backend configuration asks for.

    `kind`: `memory` (demo, this process only), `redis` (demo, state in `redis_client`,
    shared by every process), `demo` (`redis` when a client is given, else `memory`), or
    `http` (the billing API at `http_url`). The caller keeps ownership of
    `redis_client`; `close()` the backend either way. `money_wait`: (replicas, timeout
    ms) each money write waits for (`WAIT`; replicas 0: none).

    Raises:
        ValueError: an unknown kind, or a kind whose required argument is missing.
    """
    if kind == "http":
        if not http_url:
            raise ValueError("backend kind 'http' needs the billing API's URL (http_url)")
        return HttpBackend(http_url, timeout_s=http_timeout_s, token=http_token or None)
    if kind not in BACKEND_KINDS:
        raise ValueError(f"unknown backend kind {kind!r}; choose one of {', '.join(BACKEND_KINDS)}")
    data = load_demo_data(demo_data_path)
    if kind == "redis" and redis_client is None:
        raise ValueError("backend kind 'redis' needs a Redis client (redis_client)")
    if kind == "memory" or redis_client is None:
        return DemoBackend.in_memory(data)
    return DemoBackend.on_redis(redis_client, data, outbox=outbox, timeout_s=redis_timeout_s, money_wait=money_wait)
