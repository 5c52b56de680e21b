"""`serve --workers N`: N worker processes on one port, kept at N.

A worker that dies (a crash, the OOM killer, SIGKILL, or a SIGTERM of its own) is
started again after a pause that doubles with each death in a row of that slot
(0.5 s up to 10 s; a worker that stayed up 30 s starts the count again), so a worker
that cannot start does not spin. Each restart is logged and counted
(`ussd_worker_restarts_total`, merged into every worker's `/metrics`). SIGTERM or
SIGINT to the supervisor stops restarting, passes SIGTERM on (each worker answers
what it received, then exits) and waits for them. SIGHUP is passed on to every
worker (each reloads its menus).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_S = 30.0
"""A worker up this long is healthy: its next death restarts after the first pause."""
POLL_S = 0.1
STOP_GRACE_S = 10.0
"""After SIGTERM, how long workers get to finish before they are killed (their own
shutdown takes at most about 5 s)."""


@dataclass
class _Slot:
    number: int
    process: Any = None
    started: float = 0.0
    deaths_in_a_row: int = 0
    restart_at: float | None = None


def _log(event: str, **fields: Any) -> None:
    """One JSON line on stderr, like the workers' logs (the supervisor has no hops)."""
    print(json.dumps({"event": event, "logger": "ussd_gateway.supervisor", **fields}), file=sys.stderr, flush=True)


class Supervisor:
    """Starts `workers` processes running `target(*args)` and keeps them running."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], workers: int) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._target = target
        self._args = args
        self._slots = [_Slot(n) for n in range(workers)]
        self._stopping = False
        self._restarts = self._restart_counter()

    @staticmethod
    def _restart_counter() -> Any:
        # In multiprocess mode (PROMETHEUS_MULTIPROC_DIR set by the caller) the value
        # goes to a file of this process that every worker's /metrics merges.
        from prometheus_client import Counter, values

        # prometheus_client picks its value store when first imported, which in this
        # process may be before the caller set PROMETHEUS_MULTIPROC_DIR: pick again, or
        # the count stays in this process's memory and no /metrics ever shows it.
        values.ValueClass = values.get_value_class()
        return Counter("ussd_worker_restarts", "Worker processes restarted after they died.")

    def _start(self, slot: _Slot) -> None:
        process = self._context.Process(target=self._target, args=self._args, name=f"worker-{slot.number}")
        process.start()
        slot.process, slot.started, slot.restart_at = process, time.monotonic(), None

    def stop(self, *_: object) -> None:
        """Stop restarting; ask every worker to finish and exit."""
        self._stopping = True
        for slot in self._slots:
            if slot.process is not None and slot.process.is_alive() and slot.process.pid:
                os.kill(slot.process.pid, signal.SIGTERM)

    def hangup(self, *_: object) -> None:
        """Pass SIGHUP on to every live worker."""
        for slot in self._slots:
            if slot.process is not None and slot.process.is_alive() and slot.process.pid:
                os.kill(slot.process.pid, signal.SIGHUP)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, self.hangup)
        for slot in self._slots:
            self._start(slot)
        while not self._stopping:
            self._tend(time.monotonic())
            time.sleep(POLL_S)
        return self._wait_all()

    def _tend(self, now: float) -> None:
        for slot in self._slots:
            process = slot.process
            if slot.restart_at is not None:
                if now >= slot.restart_at:
                    self._start(slot)
                    self._restarts.inc()
                    _log("worker_restarted", worker=slot.number, pid=slot.process.pid, deaths_in_a_row=slot.deaths_in_a_row)
                continue
            if process is None or process.is_alive():
                continue
            self._forget_metrics(process.pid)
            up = now - slot.started
            slot.deaths_in_a_row = 1 if up >= STABLE_S else slot.deaths_in_a_row + 1
            pause = min(BACKOFF_FIRST_S * 2 ** (slot.deaths_in_a_row - 1), BACKOFF_MAX_S)
            slot.restart_at = now + pause
            _log(
                "worker_died", worker=slot.number, pid=process.pid, exitcode=process.exitcode,
                up_s=round(up, 1), restart_in_s=pause, level="warning",
            )

    @staticmethod
    def _forget_metrics(pid: int | None) -> None:
        if pid and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)

    def _wait_all(self) -> int:
        deadline = time.monotonic() + STOP_GRACE_S
        code = 0
        for slot in self._slots:
            if slot.process is None:
                continue
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                _log("worker_killed", worker=slot.number, pid=slot.process.pid, level="warning")
                slot.process.kill()
                slot.process.join(5)
            code = code or (slot.process.exitcode or 0)
        return code
