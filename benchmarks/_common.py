"""What the benchmarks share: where the server is, CPU accounting over /proc, stopping
a server's process group, percentiles and Ctrl-C / SIGTERM handling.

Imported by `hops.py` (HTTP) and `smpp.py` (SMPP); both run as scripts, so this
directory is on `sys.path`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def server_executable() -> Path:
    """The `ussd-gateway` console script of the repo's venv (else beside this Python)."""
    executable = ROOT / ".venv" / "bin" / "ussd-gateway"
    if not executable.exists():
        executable = Path(sys.executable).parent / "ussd-gateway"
    return executable


def server_env() -> dict[str, str]:
    """The environment for the server: ours, minus what would change what is measured."""
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from ussd_gateway.testkit.load.client import percentile  # noqa: E402,F401  (shared with `ussd-gateway load`)


# ---- CPU accounting (Linux /proc) ----------------------------------------------------------
def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def group_pids(pgid: int) -> list[int]:
    """The processes of one process group (a server and its workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


@dataclass(slots=True)
class CpuSample:
    """CPU seconds used so far by the server, Redis, this process and the machine."""

    server: float
    redis: float
    this_process: float
    machine: float

    @classmethod
    def take(cls, server_pids: list[int], redis_pid: int | None) -> CpuSample:
        import time

        return cls(
            server=cpu_seconds(server_pids),
            redis=cpu_seconds([redis_pid]) if redis_pid else 0.0,
            this_process=time.process_time(),
            machine=machine_busy_seconds(),
        )

    def shares_since(self, start: CpuSample, wall: float) -> dict[str, float]:
        """Percent of one core each used between `start` and this sample; `other` is
        the rest of the machine (figures are comparable only when it stays near 0)."""
        server = self.server - start.server
        redis = self.redis - start.redis
        mine = self.this_process - start.this_process
        other = max(0.0, self.machine - start.machine - server - redis - mine)
        return {
            "server": round(100 * server / wall, 1),
            "redis": round(100 * redis / wall, 1),
            "load_generator": round(100 * mine / wall, 1),
            "other": round(100 * other / wall, 1),
        }


# ---- the server's process group -------------------------------------------------------------
def stop_group(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (workers included), SIGKILL if it lingers."""
    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(timeout=10)


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the finally blocks stop the server and Redis."""
    raise KeyboardInterrupt


@dataclass(slots=True)
class Tally:
    """What a benchmark phase measured (only what finished inside the window counts)."""

    window_start: float = 0.0
    window_end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)

    def error(self, now: float, what: str) -> None:
        if self.window_start <= now <= self.window_end:
            self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(what)

    def summary(self, seconds: float, per_s: str) -> dict[str, object]:
        ordered = sorted(self.latencies)
        ms = 1000.0
        result: dict[str, object] = {
            "count": len(ordered),
            per_s: round(len(ordered) / seconds, 1),
            "p50_ms": round(percentile(ordered, 0.50) * ms, 2),
            "p90_ms": round(percentile(ordered, 0.90) * ms, 2),
            "p99_ms": round(percentile(ordered, 0.99) * ms, 2),
            "max_ms": round(ordered[-1] * ms, 2) if ordered else None,
            "errors": self.errors,
        }
        if self.first_errors:
            result["first_errors"] = self.first_errors
        return result
