"""USSD hops per second and MO-SMS-to-reply throughput through one SMPP bind.

Starts its own `redis-server`, an SMSC simulator (`smpp.smsc.SmscSimulator`) in this
process on a free loopback port, and `ussd-gateway serve` with a temporary config.toml
holding one transceiver bind (window 10, short codes 9237 and 999) to the simulator;
waits until the simulator sees the bind, then runs two phases:

1. USSD, `--seconds` (after one warm-up second that is not counted): `--concurrency`
   virtual subscribers each walk 4-hop dialogues back to back, each dialogue from a
   number of its own (as `hops.py` does, so no resume offer gets in the way):

       dial *090#  -> main menu            ("MobiFone *090#")
       "2"         -> buy a package        ("Mua goi cuoc")
       "1"         -> the data packages    ("Goi Data:")
       "1"         -> package detail       ("Dang ky?", the purchase confirmation)

   A hop is one `deliver_sm` (begin op 1 or continue op 18) and the screen's
   `submit_sm` (op 2) back; its latency runs from handing the `deliver_sm` to the
   socket to the simulator having read and accepted the `submit_sm` (its
   `submit_sm_resp` written). Every screen must hold the expected text and not end
   the dialogue; anything else, or no screen within 5 s, counts as an error.

2. MO SMS, `--mo-seconds` (after half a second of warm-up): `--concurrency` senders
   each send "DIEM" to 9237 from a number never used before (the gateway answers a
   resent MO within 120 s once, by content and sender) and wait for the reply MT
   SMS; latency runs from the `deliver_sm` to the reply's `submit_sm`.

The simulator and the load share this Python process and the machine's cores with the
server and Redis, so the figures are printed with the CPU each used (share of one
core): when the load generator is near 100% of a core, it is the limit, not the gateway.

    .venv/bin/python benchmarks/smpp.py [--seconds 10] [--mo-seconds 5] [--concurrency 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# The repo first: this file is `smpp.py`, and `import smpp` must find the package.
sys.path[:] = [str(_HERE.parent), str(_HERE)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from _common import (  # noqa: E402
    HOST,
    CpuSample,
    group_pids,
    interrupt,
    server_env,
    server_executable,
    stop_group,
    Tally,
)
from ussd_gateway.testkit.smsc import SmscError, SmscSimulator  # noqa: E402
from ussd_gateway.testkit.redis_server import RedisServer, free_port  # noqa: E402

USSD_WARMUP_S = 1.0
MO_WARMUP_S = 0.5
SCREEN_TIMEOUT_S = 5.0
PDU_LOG_LIMIT = 10_000
"""The simulator keeps at most this many PDUs (and accepted submits, dialogues, unread
MTs) and drops the oldest half past it: memory stays flat however long the run."""

CODE = "*090#"
# (what the subscriber sends: None dials CODE; a fragment the screen must hold)
HOPS: tuple[tuple[str | None, str], ...] = (
    (None, "MobiFone *090#"),
    ("2", "Mua goi cuoc"),
    ("1", "Goi Data:"),
    ("1", "Dang ky?"),
)
WINDOW = 10
MO_SHORT_CODE = "9237"
MO_TEXT = "DIEM"
MO_EXPECTED = "diem"  # member or not, the points reply says "... diem ..."


# ---- phase 1: USSD dialogues ------------------------------------------------------------------
async def ussd_subscriber(sim: SmscSimulator, number: int, concurrency: int, tally: Tally) -> None:
    """One virtual subscriber: 4-hop dialogues back to back, a new number for each."""
    block = 10**7 // concurrency  # numbers of its own: 8490 + 7 digits
    session = 0
    clock = time.perf_counter
    while clock() < tally.window_end:
        msisdn = "8490%07d" % (number * block + session % block)
        session += 1
        dialogue = None
        for answer, expected in HOPS:
            started = clock()
            try:
                if dialogue is None:
                    dialogue = await sim.start_ussd(msisdn, CODE)
                else:
                    await dialogue.answer(answer)  # type: ignore[arg-type]
                screen = await dialogue.next_screen(SCREEN_TIMEOUT_S)
            except (TimeoutError, SmscError) as exc:
                tally.error(clock(), f"hop {answer or CODE!r}: {exc.__class__.__name__}: {exc}")
                if isinstance(exc, SmscError):
                    await asyncio.sleep(0.1)  # not bound: do not spin
                break  # a fresh dialogue from a fresh number
            done = clock()
            if screen.end or expected not in screen.text:
                tally.error(done, f"hop {answer or CODE!r}: {'END ' if screen.end else ''}{screen.text[:80]!r}")
                break
            if tally.window_start <= done <= tally.window_end:
                tally.latencies.append(done - started)
            if done >= tally.window_end:
                break
        if dialogue is not None and not dialogue.ended:
            # Left at the purchase confirmation, as hops.py leaves it; the simulator
            # forgets it (no PDU) so its table of open dialogues does not grow.
            sim._end_dialogue(dialogue)


async def drive_ussd(sim: SmscSimulator, concurrency: int, seconds: float) -> Tally:
    now = time.perf_counter()
    tally = Tally(window_start=now + USSD_WARMUP_S, window_end=now + USSD_WARMUP_S + seconds)
    await asyncio.gather(*(ussd_subscriber(sim, n, concurrency, tally) for n in range(concurrency)))
    return tally


# ---- phase 2: MO SMS and their replies --------------------------------------------------------
async def collect_replies(sim: SmscSimulator, waiting: dict[str, asyncio.Future[tuple[float, str]]],
                          stop: asyncio.Event) -> int:  # fmt: skip
    """Take every MT the gateway gets accepted and hand it to the sender waiting for it
    (one waiter on the simulator's MT queue, not one per sender: each would be woken by
    every MT). Returns how many MTs nobody waited for."""
    stray = 0
    clock = time.perf_counter
    while not stop.is_set():
        try:
            sms = await sim.next_mt(None, timeout=0.2)
        except TimeoutError:
            continue
        future = waiting.pop(sms.to, None)
        if future is None or future.done():
            stray += 1
        else:
            future.set_result((clock(), sms.text))
    return stray


async def mo_sender(sim: SmscSimulator, number: int, concurrency: int, tally: Tally,
                    waiting: dict[str, asyncio.Future[tuple[float, str]]]) -> None:  # fmt: skip
    block = 10**7 // concurrency
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    session = 0
    while clock() < tally.window_end:
        msisdn = "8493%07d" % (number * block + session % block)
        session += 1
        future: asyncio.Future[tuple[float, str]] = loop.create_future()
        waiting[msisdn] = future
        started = clock()
        try:
            await sim.send_mo(msisdn, MO_SHORT_CODE, MO_TEXT)
            done, text = await asyncio.wait_for(future, SCREEN_TIMEOUT_S)
        except (TimeoutError, SmscError) as exc:
            waiting.pop(msisdn, None)
            tally.error(clock(), f"MO from ...{msisdn[-3:]}: {exc.__class__.__name__}: {exc or 'no reply in time'}")
            if isinstance(exc, SmscError):
                await asyncio.sleep(0.1)
            continue
        if MO_EXPECTED not in text.lower():
            tally.error(done, f"MO reply {text[:80]!r}")
            continue
        if tally.window_start <= done <= tally.window_end:
            tally.latencies.append(done - started)


async def drive_mo(sim: SmscSimulator, concurrency: int, seconds: float) -> tuple[Tally, int]:
    now = time.perf_counter()
    tally = Tally(window_start=now + MO_WARMUP_S, window_end=now + MO_WARMUP_S + seconds)
    waiting: dict[str, asyncio.Future[tuple[float, str]]] = {}
    stop = asyncio.Event()
    collector = asyncio.create_task(collect_replies(sim, waiting, stop))
    try:
        await asyncio.gather(*(mo_sender(sim, n, concurrency, tally, waiting) for n in range(concurrency)))
    finally:
        stop.set()
        stray = await collector
    return tally, stray


# ---- the server under test --------------------------------------------------------------------
CONFIG = """\
[[smpp.binds]]
name = "bench"
host = "{host}"
port = {port}
system_id = "ussdgw"
password = "secret"
mode = "transceiver"
short_codes = ["9237", "999"]
window = {window}
"""


async def wait_bound(sim: SmscSimulator, server: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 30.0) -> None:
    """Until the simulator sees the gateway's bind (or the server dies)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            await sim.wait_bound(timeout=0.2, receiver=True)
            return
        except TimeoutError:
            pass
    raise RuntimeError(f"the server did not bind within {timeout_s:.0f} s:\n{log_path.read_text()[-2000:]}")


async def stop_server(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server while our loop (the simulator) still runs, so its unbind is
    answered and it exits cleanly; the caller's `stop_group` is the SIGKILL backstop."""
    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while server.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _cancel_on_signals() -> None:
    """Ctrl-C and SIGTERM cancel the run (once), so the `finally` blocks stop the server
    with the simulator still answering, then the simulator. A Python signal handler
    that raises cannot be relied on here: uvloop runs callbacks from C and may only
    log the exception. A SIGINT ignored (a background job) stays ignored."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def cancel() -> None:
        if not task.cancelling():
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, cancel)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        loop.add_signal_handler(signal.SIGINT, cancel)


async def bench(args: argparse.Namespace, redis: RedisServer, workdir: Path, started: list[subprocess.Popen[bytes]]) -> dict[str, object]:
    _cancel_on_signals()
    sim = SmscSimulator(HOST, 0, {"ussdgw": "secret"}, pdu_log_limit=PDU_LOG_LIMIT, on_pdu=None)
    await sim.start()
    try:
        config = workdir / "config.toml"
        config.write_text(CONFIG.format(host=HOST, port=sim.port, window=WINDOW), encoding="utf-8")
        http_port = free_port()
        log_path = workdir / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [str(server_executable()), "serve", "--config", str(config), "--redis-url", redis.url,
                 "--host", HOST, "--port", str(http_port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                env=server_env(),
                start_new_session=True,  # its own process group: one signal reaches it all
            )
        started.append(server)
        try:
            await wait_bound(sim, server, log_path)
            pids = group_pids(server.pid)
            redis_pid = redis._process.pid if redis._process else None
            print(f"server pid {server.pid}, http {http_port}, smsc simulator {HOST}:{sim.port}, {redis.url}",
                  file=sys.stderr)

            cpu_0, wall_0 = CpuSample.take(pids, redis_pid), time.perf_counter()
            ussd = await drive_ussd(sim, args.concurrency, args.seconds)
            cpu_1, wall_1 = CpuSample.take(pids, redis_pid), time.perf_counter()
            mo, stray = await drive_mo(sim, args.concurrency, args.mo_seconds)
            cpu_2, wall_2 = CpuSample.take(pids, redis_pid), time.perf_counter()
        finally:
            await stop_server(server)
        log_text = log_path.read_bytes()
    finally:
        await sim.stop(unbind=False)

    ussd_result = ussd.summary(args.seconds, "hops_per_s")
    ussd_result["cpu_pct"] = cpu_1.shares_since(cpu_0, wall_1 - wall_0)
    mo_result = mo.summary(args.mo_seconds, "replies_per_s")
    mo_result["cpu_pct"] = cpu_2.shares_since(cpu_1, wall_2 - wall_1)
    mo_result["stray_replies"] = stray
    return {
        "concurrency": args.concurrency,
        "window": WINDOW,
        "ussd_seconds": args.seconds,
        "mo_seconds": args.mo_seconds,
        "ussd": ussd_result,
        "mo": mo_result,
        "server_log": {
            "hop_lines": log_text.count(b'"event":"hop"'),
            "mo_sms_lines": log_text.count(b'"event":"mo_sms"'),
            "warning_lines": log_text.count(b'"level":"warning"'),
            "error_lines": log_text.count(b'"level":"error"'),
        },
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        uvloop = None
    runner = uvloop.run if uvloop is not None else asyncio.run
    started: list[subprocess.Popen[bytes]] = []
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="ussd-bench-smpp-") as workdir:
        try:
            return runner(bench(args, redis, Path(workdir), started))
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None  # a signal cancelled the run
        finally:
            for server in started:
                stop_group(server)  # a no-op when it already exited


def _print(result: dict[str, object]) -> None:
    ussd, mo = result["ussd"], result["mo"]
    assert isinstance(ussd, dict) and isinstance(mo, dict)

    def cpu_line(cpu: dict[str, float]) -> str:
        return (f"  cpu      server {cpu['server']}%  redis {cpu['redis']}%  simulator+load {cpu['load_generator']}%  "
                f"other processes {cpu['other']}% (of one core)")

    print(
        f"one transceiver bind, window {result['window']}, {result['concurrency']} concurrent, Redis store\n"
        f"USSD: {result['ussd_seconds']} s (+{USSD_WARMUP_S:.0f} s warm-up), 4-hop dialogues, deliver_sm -> screen submit_sm\n"
        f"  hops/s   {ussd['hops_per_s']:>10,.1f}\n"
        f"  latency  p50 {ussd['p50_ms']} ms  p90 {ussd['p90_ms']} ms  p99 {ussd['p99_ms']} ms  max {ussd['max_ms']} ms\n"
        f"  hops     {ussd['count']:,}  errors {ussd['errors']}\n"
        f"{cpu_line(ussd['cpu_pct'])}\n"
        f"MO SMS: {result['mo_seconds']} s (+{MO_WARMUP_S} s warm-up), {MO_TEXT} to {MO_SHORT_CODE} -> reply MT\n"
        f"  replies/s {mo['replies_per_s']:>9,.1f}\n"
        f"  latency  p50 {mo['p50_ms']} ms  p90 {mo['p90_ms']} ms  p99 {mo['p99_ms']} ms  max {mo['max_ms']} ms\n"
        f"  replies  {mo['count']:,}  errors {mo['errors']}  stray {mo['stray_replies']}\n"
        f"{cpu_line(mo['cpu_pct'])}"
    )
    for phase in (ussd, mo):
        if phase["cpu_pct"]["other"] > 10:
            print("  warning: other processes used the CPU during the run; the figures are not comparable")
            break
    for phase in (ussd, mo):
        for line in phase.get("first_errors", []):
            print(f"  error: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured USSD seconds, after 1 s of warm-up (default 10)")
    parser.add_argument("--mo-seconds", type=float, default=5.0, help="measured MO SMS seconds, after 0.5 s of warm-up (default 5)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent dialogues / MO senders (default 50)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.concurrency < 1 or args.seconds <= 0 or args.mo_seconds <= 0:
        parser.error("--concurrency must be at least 1, --seconds and --mo-seconds positive")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted; server, simulator and redis stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    ussd, mo = result["ussd"], result["mo"]
    assert isinstance(ussd, dict) and isinstance(mo, dict)
    return 1 if ussd["errors"] or mo["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
