"""Hops per second through the real server: Redis store, Africa's Talking dialect.

Starts its own `redis-server` and `ussd-gateway serve --workers N` on free loopback
ports, then runs `--concurrency` virtual subscribers for `--seconds` (after one warm-up
second that is not counted). Each virtual subscriber holds one keep-alive HTTP/1.1
connection and walks 4-hop dialogues back to back:

    ""       -> main menu            ("MobiFone *090#")
    "2"      -> buy a package        ("Mua goi cuoc")
    "2*1"    -> the data packages    ("Goi Data:")
    "2*1*1"  -> package detail       ("Dang ky?", the purchase confirmation)

Every reply must be HTTP 200, start with "CON " and hold the expected screen text;
anything else counts as an error. Latency is per hop request (write to last byte).

Each dialogue dials from a number of its own (8490xxxxxxx, a block of numbers per
virtual subscriber): a redial of an unfinished dialogue from the same number within
the resume window would, by design, be offered "1 Continue / 2 Start over" instead of
the main menu.

The load generator shares the machine with the server, so it is kept lean: raw asyncio
streams on uvloop, one connection per virtual subscriber, requests built from
pre-encoded bytes, responses read by Content-Length.

    .venv/bin/python benchmarks/hops.py [--workers N] [--concurrency 50] [--seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import (  # noqa: E402  (this directory: the script's own)
    Tally,
    cpu_seconds as _cpu_seconds,
    group_pids as _group_pids,
    interrupt as _interrupt,
    machine_busy_seconds as _machine_busy_seconds,
    percentile,
    stop_group,
)
from ussd_gateway.testkit.load.client import read_response as _read_response  # noqa: E402  (shared with `ussd-gateway load`)
from ussd_gateway.testkit.redis_server import RedisServer, free_port  # noqa: E402

HOST = "127.0.0.1"
WARMUP_S = 1.0

# (the `text` field, pre-encoded as a gateway sends it; a fragment every reply must hold)
HOPS: tuple[tuple[bytes, str], ...] = (
    (b"", "MobiFone *090#"),
    (b"2", "Mua goi cuoc"),
    (b"2%2A1", "Goi Data:"),
    (b"2%2A1%2A1", "Dang ky?"),
)

_REQUEST_HEAD = (
    b"POST /ussd/africastalking HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: "
)


async def subscriber(number: int, port: int, concurrency: int, tally: Tally) -> None:
    """One virtual subscriber: a keep-alive connection, 4-hop dialogues until the end."""
    block = 10**7 // concurrency  # numbers of its own: 8490 + 7 digits
    session = 0
    clock = time.perf_counter
    writer = None
    try:
        while clock() < tally.window_end:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            msisdn = b"8490%07d" % (number * block + session % block)
            prefix = b"sessionId=bench-%d-%d&serviceCode=%%2A090%%23&phoneNumber=%s&text=" % (number, session, msisdn)
            session += 1
            for text, expected in HOPS:
                body = prefix + text
                request = _REQUEST_HEAD + b"%d\r\n\r\n" % len(body) + body
                started = clock()
                try:
                    writer.write(request)
                    status, reply = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                    tally.error(clock(), f"{exc.__class__.__name__}: {exc}")
                    writer.close()
                    writer = None
                    break  # a fresh connection and a fresh dialogue
                done = clock()
                text_reply = reply.decode("utf-8", "replace")
                if status != b"200" or not text_reply.startswith("CON ") or expected not in text_reply:
                    tally.error(done, f"hop {text!r}: HTTP {status.decode()} {text_reply[:80]!r}")
                    break
                if tally.window_start <= done <= tally.window_end:
                    tally.latencies.append(done - started)
                if done >= tally.window_end:
                    break
    finally:
        if writer is not None:
            writer.close()


async def drive(port: int, concurrency: int, seconds: float) -> Tally:
    now = time.perf_counter()
    tally = Tally(window_start=now + WARMUP_S, window_end=now + WARMUP_S + seconds)
    await asyncio.gather(*(subscriber(n, port, concurrency, tally) for n in range(concurrency)))
    return tally


# ---- the server under test --------------------------------------------------------------
def _listeners(port: int) -> int:
    """Sockets listening on 127.0.0.1:port (one per worker with SO_REUSEPORT)."""
    wanted = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return -1  # not Linux: trust /healthz alone
    return sum(1 for line in lines if line.split()[1] == wanted and line.split()[3] == "0A")


def wait_healthy(
    port: int, workers: int, server: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 20.0
) -> None:
    """Wait for /healthz and, with several workers, for every worker's listening socket:
    the kernel spreads connections only over the sockets bound when they connect."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}:\n{log_path.read_text()[-2000:]}")
        if 0 <= _listeners(port) < workers:
            time.sleep(0.05)
            continue
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the server did not answer /healthz within {timeout_s:.0f} s:\n{log_path.read_text()[-2000:]}")


def _redis_commands(port: int) -> int:
    """Commands Redis has processed so far (those run inside Lua scripts included)."""
    with socket.create_connection((HOST, port), timeout=2) as sock:
        sock.sendall(b"INFO stats\r\n")
        data = b""
        while b"total_commands_processed:" not in data or not data.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.split(b"\r\n"):
        if line.startswith(b"total_commands_processed:"):
            return int(line.split(b":")[1])
    return 0


def run(args: argparse.Namespace) -> dict[str, object]:
    executable = ROOT / ".venv" / "bin" / "ussd-gateway"
    if not executable.exists():
        executable = Path(sys.executable).parent / "ussd-gateway"
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="ussd-bench-") as workdir:
        port = free_port()
        log_path = Path(workdir) / "server.log"
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [str(executable), "serve", "--host", HOST, "--port", str(port), "--redis-url", redis.url,
                 "--workers", str(args.workers)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,  # no stray ./config.toml changes what is measured
                env=env,
                start_new_session=True,  # its own process group: one signal reaches every worker
            )
        try:
            wait_healthy(port, args.workers, server, log_path)
            pids = _group_pids(server.pid)
            print(f"server pid {server.pid} (pids {' '.join(map(str, pids))}), port {port}, {redis.url}", file=sys.stderr)
            try:
                import uvloop
            except ImportError:  # pragma: no cover
                uvloop = None
            server_cpu_0, client_cpu_0 = _cpu_seconds(pids), time.process_time()
            redis_cpu_0 = _cpu_seconds([redis._process.pid]) if redis._process else 0.0
            machine_0 = _machine_busy_seconds()
            redis_cmds_0 = _redis_commands(redis.port)
            wall_0 = time.perf_counter()
            runner = uvloop.run if uvloop is not None else asyncio.run
            tally = runner(drive(port, args.concurrency, args.seconds))
            wall = time.perf_counter() - wall_0
            server_cpu = _cpu_seconds(pids) - server_cpu_0
            client_cpu = time.process_time() - client_cpu_0
            redis_cpu = (_cpu_seconds([redis._process.pid]) if redis._process else 0.0) - redis_cpu_0
            other_cpu = max(0.0, _machine_busy_seconds() - machine_0 - server_cpu - client_cpu - redis_cpu)
            redis_cmds = _redis_commands(redis.port) - redis_cmds_0
            hop_lines = sum(1 for line in log_path.open("rb") if b'"event":"hop"' in line)
        finally:
            stop_group(server)

    ordered = sorted(tally.latencies)
    ms = 1000.0
    result: dict[str, object] = {
        "workers": args.workers,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "hops": len(ordered),
        "hops_per_s": round(len(ordered) / args.seconds, 1),
        "p50_ms": round(percentile(ordered, 0.50) * ms, 2),
        "p90_ms": round(percentile(ordered, 0.90) * ms, 2),
        "p99_ms": round(percentile(ordered, 0.99) * ms, 2),
        "max_ms": round(ordered[-1] * ms, 2) if ordered else None,
        "errors": tally.errors,
        # CPU share of one core over the whole run (warm-up included): where the time went.
        "cpu_pct": {
            "server": round(100 * server_cpu / wall, 1),
            "redis": round(100 * redis_cpu / wall, 1),
            "load_generator": round(100 * client_cpu / wall, 1),
            # Anything else running on the machine meanwhile: figures are only
            # comparable when this stays near zero.
            "other": round(100 * other_cpu / wall, 1),
        },
        "server_log_hop_lines": hop_lines,
        # Per hop the server answered (warm-up included, as the CPU figures): stable
        # under load from other processes, unlike hops/s.
        "server_cpu_us_per_hop": round(1e6 * server_cpu / hop_lines, 1) if hop_lines else None,
        "redis_cmds_per_hop": round(redis_cmds / hop_lines, 2) if hop_lines else None,
    }
    if tally.first_errors:
        result["first_errors"] = tally.first_errors
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=50, help="virtual subscribers, one connection each (default 50)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds, after 1 s of warm-up (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.workers < 1 or args.concurrency < 1 or args.seconds <= 0:
        parser.error("--workers and --concurrency must be at least 1, --seconds positive")

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted; server and redis stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result))
    else:
        cpu = result["cpu_pct"]
        print(
            f"workers {result['workers']}, {result['concurrency']} concurrent subscribers, {result['seconds']} s "
            f"(+{WARMUP_S:.0f} s warm-up), 4-hop dialogues, Africa's Talking dialect, Redis store\n"
            f"  hops/s   {result['hops_per_s']:>10,.1f}\n"
            f"  latency  p50 {result['p50_ms']} ms  p90 {result['p90_ms']} ms  p99 {result['p99_ms']} ms  "
            f"max {result['max_ms']} ms\n"
            f"  hops     {result['hops']:,}  errors {result['errors']}\n"
            f"  cpu      server {cpu['server']}%  redis {cpu['redis']}%  load generator {cpu['load_generator']}%  "
            f"other processes {cpu['other']}% (of one core)\n"
            f"  per hop  server CPU {result['server_cpu_us_per_hop']} µs  Redis commands {result['redis_cmds_per_hop']}"
        )
        if cpu["other"] > 10:
            print("  warning: other processes used the CPU during the run; the figures are not comparable")
        for line in result.get("first_errors", []):
            print(f"  error: {line}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
