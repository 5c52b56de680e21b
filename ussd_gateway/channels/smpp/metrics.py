"""Per-bind SMPP metrics: bind up, PDUs, window in use, throttling and reconnects.

Apart from the link so that the channel can make one set per app registry and hand it
to every bind's `SmppLink`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge


class SmppMetrics:
    """Per-bind SMPP metrics, in a registry of their own unless one is given (one per
    app, so tests and several apps in one process never collide). Labels are bind
    names, directions, command names and statuses: never a phone number."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.bind_up = Gauge(
            "smpp_bind_up",
            "1 while every connection of the bind is bound, else 0.",
            ["bind"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.pdus = Counter(
            "smpp_pdus",
            "PDUs by bind, direction (in/out), command and command_status.",
            ["bind", "direction", "command", "status"],
            registry=self.registry,
        )
        self.window_in_use = Gauge(
            "smpp_window_in_use",
            "submit_sm sent and awaiting a response.",
            ["bind"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.throttled = Counter(
            "smpp_throttled", "submit_sm answered ESME_RTHROTTLED or ESME_RMSGQFUL.", ["bind"], registry=self.registry
        )
        self.reconnects = Counter(
            "smpp_reconnects",
            "Reconnections after a drop, a refused bind or a failed connect.",
            ["bind"],
            registry=self.registry,
        )
        self._pdu_children: dict[tuple[str, str, str, int], Any] = {}

    def count_pdu(self, bind: str, direction: str, command: str, status: int) -> None:
        """Count one PDU; label children are cached (the labels() lookup is not free)."""
        key = (bind, direction, command, status)
        child = self._pdu_children.get(key)
        if child is None:
            child = self._pdu_children[key] = self.pdus.labels(bind, direction, command, f"0x{status:02x}")
        child.inc()
