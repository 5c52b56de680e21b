"""Fault harness: purchases under load while Redis and workers fail, then a reconciliation.

It starts a durable redis-server (AOF, fsync always, so a SIGKILL loses nothing
acknowledged) and `ussd-gateway serve --workers N` on loopback ports of their own, then
for each fault: a block of new subscribers buys D15 over and over through the JSON
dialect, the client retrying a hop that failed, timed out or was answered busy with
the same `seq` (as a gateway does); the fault is injected while they buy; afterwards,
for every subscriber of the block:

    debits (balance change / price) = confirmation SMS queued = D15 periods active
    success screens seen <= debits <= success screens + purchases given up

and a busy answer came within twice the hop deadline. It prints the figures and exits
1 on any mismatch. `python -m ussd_gateway.testkit.faults --help`; tests run a short
version (tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ussd_gateway.backend.demo_data import load_demo_data
from ussd_gateway.sessions.redis_clients import make_client
from ussd_gateway.testkit.redis_server import free_port

FAULTS = ("redis_stop_3s", "redis_stop_10s", "redis_kill", "worker_kill", "worker_term")
SUCCESS = "Dang ky thanh cong"
POOR = "khong du"
BUSY = "He thong dang ban"
DEADLINE_S = 0.8
CLIENT_TIMEOUT_S = 3.0
MAX_ATTEMPTS = 60
"""Attempts at one hop before the client gives up on the dialogue (bounded loops)."""
RETRY_PAUSE_S = 0.25


@dataclass
class Figures:
    """What one fault's run saw, and what Redis holds afterwards."""

    fault: str
    hops: int = 0
    busy: int = 0
    failed_requests: int = 0
    max_latency_ms: float = 0.0
    max_busy_latency_ms: float = 0.0
    successes: int = 0
    given_up: int = 0
    debits: int = 0
    sms: int = 0
    packages: int = 0
    problems: list[str] = field(default_factory=list)
    timeline: list[tuple[float, float, str]] = field(default_factory=list)
    """Every answer: (sent at, answered at, `ok`, `busy` or `failed`), monotonic seconds."""

    def line(self) -> str:
        return (
            f"{self.fault:15} hops {self.hops:6}  busy {self.busy:5}  failed requests {self.failed_requests:4}  "
            f"max latency {self.max_latency_ms:7.0f} ms (busy {self.max_busy_latency_ms:5.0f} ms)  "
            f"successes {self.successes:4}  given up {self.given_up:3}  debits {self.debits:4}  "
            f"SMS {self.sms:4}  packages {self.packages:4}  {'OK' if not self.problems else 'MISMATCH'}"
        )


class DurableRedis:
    """redis-server with an append-only file fsynced on every write: it can be killed
    and started again on the same port and data."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="ussd-faults-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        executable = shutil.which("redis-server") or "redis-server"
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", self.dir, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, 10)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait(10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Gateway:
    """`ussd-gateway serve --workers N` on a port of its own, logs to a file."""

    def __init__(self, redis_url: str, workers: int) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="ussd-faults-gw-", suffix=".log", delete=False)
        command = [str(Path(sys.executable).parent / "ussd-gateway"), "serve", "--host", "127.0.0.1",
                   "--port", str(self.port), "--redis-url", redis_url, "--workers", str(workers)]
        env = {**os.environ, "USSD_LOG_LEVEL": os.environ.get("USSD_LOG_LEVEL", "warning")}
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.workers = workers
        _wait_port(self.port, 30)
        # The supervisor listens before its workers run: requests sent now would wait
        # in the backlog while the workers start, and count as slow answers.
        _wait_ready(self.port, 30)

    def worker_pids(self) -> list[int]:
        """The supervisor's worker processes (not multiprocessing's resource tracker)."""
        pids = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        pids.append(int(pid))
                except OSError:
                    continue
        return pids

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()
        os.unlink(self.log.name)


def _wait_port(port: int, seconds: float) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def _wait_ready(port: int, seconds: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"127.0.0.1:{port}/readyz not ready after {seconds} s")


class Subscriber:
    """One number buying D15 in dialogue after dialogue until its balance runs out."""

    def __init__(self, msisdn: str, url: str, figures: Figures, http: aiohttp.ClientSession) -> None:
        self.msisdn = msisdn
        self.url = url
        self.figures = figures
        self.http = http
        self.dialogues = 0

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            outcome = await self._dialogue()
            if outcome == "poor":
                return

    async def _dialogue(self) -> str:
        self.dialogues += 1
        sid = f"f{self.msisdn[-6:]}-{self.dialogues}"
        steps = [("begin", ""), ("continue", "2"), ("continue", "1"), ("continue", "1"), ("continue", "1")]
        for seq, (event, value) in enumerate(steps):
            text = await self._hop(sid, seq, event, value)
            if text is None:
                if seq == len(steps) - 1:
                    self.figures.given_up += 1
                return "gave_up"
        if text is not None and SUCCESS in text:
            self.figures.successes += 1
            return "ok"
        return "poor" if text is not None and POOR in text else "other"

    async def _hop(self, sid: str, seq: int, event: str, value: str) -> str | None:
        body = {"session_id": sid, "msisdn": self.msisdn, "service_code": "*090#", "event": event, "seq": seq}
        if event == "continue":
            body["input"] = value
        payload = orjson.dumps(body)
        for _ in range(MAX_ATTEMPTS):
            started = time.perf_counter()
            try:
                async with self.http.post(self.url, data=payload, headers={"Content-Type": "application/json"}) as response:
                    data = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.figures.failed_requests += 1
                self.figures.timeline.append((started, time.perf_counter(), "failed"))
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.figures.hops += 1
            self.figures.max_latency_ms = max(self.figures.max_latency_ms, elapsed_ms)
            text = orjson.loads(data).get("text", "") if status == 200 else ""
            self.figures.timeline.append((started, time.perf_counter(), "ok" if status == 200 and BUSY not in text else "busy"))
            if status == 200 and BUSY not in text:
                return text
            if BUSY in text:
                self.figures.busy += 1
                self.figures.max_busy_latency_ms = max(self.figures.max_busy_latency_ms, elapsed_ms)
            await asyncio.sleep(RETRY_PAUSE_S)
        return None


async def _inject(fault: str, redis: DurableRedis, gateway: Gateway) -> None:
    if fault.startswith("redis_stop_"):
        seconds = float(fault.removeprefix("redis_stop_").removesuffix("s"))
        redis.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            redis.signal(signal.SIGCONT)
    elif fault == "redis_kill":
        redis.kill()
        await asyncio.sleep(1.0)
        redis.start()
    elif fault in ("worker_kill", "worker_term"):
        pids = gateway.worker_pids()
        if not pids:
            raise RuntimeError("no worker process found")
        os.kill(pids[0], signal.SIGKILL if fault == "worker_kill" else signal.SIGTERM)
    else:
        raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")


async def run_fault(fault: str, block: int, *, subscribers: int, seconds: float, redis: DurableRedis, gateway: Gateway) -> Figures:
    """Load with one fault injected a second in; then reconcile the block's subscribers."""
    figures = Figures(fault)
    url = f"http://127.0.0.1:{gateway.port}/ussd"
    msisdns = [f"8496{block:02d}{n:05d}" for n in range(subscribers)]
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=subscribers)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        until = time.monotonic() + seconds
        buyers = [asyncio.create_task(Subscriber(m, url, figures, http).run(until)) for m in msisdns]
        await asyncio.sleep(1.0)
        await _inject(fault, redis, gateway)
        # Bounded: every dialogue ends within its hops' attempts.
        await asyncio.wait_for(asyncio.gather(*buyers), timeout=seconds + 5 * MAX_ATTEMPTS * (CLIENT_TIMEOUT_S + RETRY_PAUSE_S))
    await reconcile(figures, msisdns, redis.url)
    return figures


async def reconcile(figures: Figures, msisdns: list[str], redis_url: str) -> None:
    """Per subscriber: debits = SMS = D15 periods; overall: success screens <= debits
    <= success screens + purchases given up. `redis_url`: any form of `redis_clients`."""
    data = load_demo_data()
    d15 = data.catalogue.package("D15")
    assert d15 is not None
    client = make_client(redis_url, socket_timeout=5)
    try:
        for _ in range(50):  # outboxes are moved to the queue in the background: let them
            if not [k async for k in client.scan_iter(match="ussd:{8496*}:outbox", count=1000)]:
                break
            await asyncio.sleep(0.1)
        sms_by_number: dict[str, int] = {}
        queued = await client.lrange("ussd:{sms}:out", 0, -1) + await client.lrange("ussd:{sms}:inflight", 0, -1)
        seen = set(queued)
        for raw in queued:
            to = orjson.loads(raw)["to"]
            sms_by_number[to] = sms_by_number.get(to, 0) + 1
        successes_left = figures.successes
        del successes_left
        for msisdn in msisdns:
            start = data.new_account(msisdn, date.today())
            raw = await client.get(f"ussd:{{{msisdn}}}:acct")
            account: dict[str, Any] = orjson.loads(raw) if raw else {"balance": start.balance, "packages": []}
            spent = start.balance - account["balance"]
            debits, rest = divmod(spent, d15.price)
            active = sum(p["data_left_mb"] for p in account["packages"] if p["code"] == "D15") // d15.data_mb
            # An SMS still in an outbox counts unless it was queued already (mid-move).
            left = [raw for raw in await client.lrange(f"ussd:{{{msisdn}}}:outbox", 0, -1) if raw not in seen]
            sms = sms_by_number.get(msisdn, 0) + len(left)
            figures.debits += debits
            figures.sms += sms
            figures.packages += active
            if rest or not debits == sms == active:
                figures.problems.append(f"{msisdn}: spent {spent}, SMS {sms}, D15 periods {active}")
    finally:
        await client.aclose()
    if not figures.successes <= figures.debits <= figures.successes + figures.given_up:
        figures.problems.append(
            f"success screens {figures.successes}, debits {figures.debits}, purchases given up {figures.given_up}"
        )
    if figures.max_busy_latency_ms > 2 * DEADLINE_S * 1000:
        figures.problems.append(f"a busy answer took {figures.max_busy_latency_ms:.0f} ms (deadline {DEADLINE_S * 1000:.0f} ms)")


async def run(faults: list[str], *, subscribers: int, seconds: float, workers: int, out: Callable[[str], None] = print) -> list[Figures]:
    redis = DurableRedis()
    redis.start()
    gateway = None
    try:
        gateway = Gateway(redis.url, workers)
        results = []
        for block, fault in enumerate(faults):
            figures = await run_fault(fault, block, subscribers=subscribers, seconds=seconds, redis=redis, gateway=gateway)
            out(figures.line())
            for problem in figures.problems[:10]:
                out(f"    {problem}")
            results.append(figures)
            await asyncio.sleep(1.0)  # a restarted worker is back before the next fault
        return results
    finally:
        if gateway is not None:
            gateway.close()
        redis.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--subscribers", type=int, default=200, help="concurrent subscribers per fault (default 200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="load per fault, fault included (default 20)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--long", action="store_true", help="a long run: 60 s per fault")
    args = parser.parse_args(argv)
    seconds = 60.0 if args.long else args.seconds
    faults = [f for f in args.faults.split(",") if f]
    results = asyncio.run(run(faults, subscribers=args.subscribers, seconds=seconds, workers=args.workers))
    bad = [r for r in results if r.problems]
    print(f"{len(results) - len(bad)} of {len(results)} faults reconciled")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
