"""Prometheus metrics. Labels are channels, outcomes and screens (`menu:screen` of the
compiled menus, a bounded set): never a phone number."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

MAX_SCREENS = 5000
"""Hop label sets (channel, outcome, screen) kept at most: the compiled screens of a
few menu versions times the outcomes stay well under it."""
HOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The gateway's metrics, in a registry of their own (one per app, so tests and
    several apps in one process never collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.hops = Counter(
            "ussd_hops",
            "Hops answered, by channel, outcome and the screen shown (menu:screen; empty for busy, replay, errors).",
            ["channel", "outcome", "screen"],
            registry=self.registry,
        )
        self.hop_seconds = Histogram(
            "ussd_hop_seconds", "Time to answer a hop, by the screen shown.", ["channel", "screen"], buckets=HOP_BUCKETS, registry=self.registry
        )
        self.funnel = Counter(
            "ussd_funnel",
            "Dialogues per screen (menu:screen): reached it, ended on it, dropped on it (event=timed_out: "
            "counted when the dialogue timeout passes or a new dial replaces it).",
            ["screen", "event"],
            registry=self.registry,
        )
        self.sessions_started = Counter(
            "ussd_sessions_started", "Dialogues started.", ["channel"], registry=self.registry
        )
        self.sessions_ended = Counter(
            "ussd_sessions_ended", "Dialogues ended by an END screen or a release.", ["channel", "how"], registry=self.registry
        )
        self.sessions_timed_out = Counter(
            "ussd_sessions_timed_out",
            "Dialogues dropped without an END (found when the subscriber dials again, or a hop arrives for an expired one).",
            ["channel"],
            registry=self.registry,
        )
        self.sms_dropped = Counter(
            "ussd_sms_dropped",
            "Outbound SMS dropped because the queue reached its cap (nothing drains it: SMPP off?).",
            registry=self.registry,
        )
        self.guard = GuardMetrics(self.registry)
        self._hop_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._session_children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}

    def observe_hop(self, channel: str, outcome: str, seconds: float, screen: str = "") -> None:
        """Count one hop; label children are cached (the labels() lookup is not free).
        `screen` comes from a saved record, so it names a compiled screen; past
        `MAX_SCREENS` distinct names (a tampered record?) the label is "other"."""
        key = (channel, outcome, screen)
        children = self._hop_children.get(key)
        if children is None:
            if screen and len(self._hop_children) >= MAX_SCREENS:
                return self.observe_hop(channel, outcome, seconds, "other")
            children = self._hop_children[key] = (self.hops.labels(channel, outcome, screen), self.hop_seconds.labels(channel, screen))
        children[0].inc()
        children[1].observe(seconds)

    def count_session(self, counter: Counter, *labels: str) -> None:
        """`counter.labels(*labels).inc()` for the session counters, with the child
        cached as in `observe_hop` (a dialogue starts on every first hop)."""
        key = (counter, labels)
        child = self._session_children.get(key)
        if child is None:
            child = self._session_children[key] = counter.labels(*labels)
        child.inc()

    def exposition(self) -> bytes:
        """The text format; merges every worker's numbers when running `--workers N`."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged, path=directory)
            return generate_latest(merged)
        return generate_latest(self.registry)


class GuardMetrics:
    """What the HTTP guard and the rate limits refused, by reason (never by number or
    address: a label per caller would let an attacker grow the registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "ussd_http_refused", "HTTP requests refused before any work, by reason.", ["reason"], registry=registry
        )
        self.limited = Counter(
            "ussd_limited", "Hops and SMS turned away by a rate limit, by limit.", ["limit"], registry=registry
        )

    def count_refused(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def count_limited(self, limit: str) -> None:
        self.limited.labels(limit).inc()
