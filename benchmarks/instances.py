"""Hops per second with 1, 2, 4 ... instances on one Redis: where Redis becomes the limit.

For each count N it starts N `ussd-gateway serve` processes (one worker each, ports
of their own, as separate machines would run them) on one `redis-server` it starts
itself, and spreads `--concurrency` virtual subscribers over them round-robin (the
same 4-hop dialogues as `hops.py`: main menu, buy, data packages, package detail,
every screen checked). It reads the CPU of Redis from /proc/<redis pid>/stat and
prints, per N: hops/s, p99, the CPU share of Redis and of the instances, the Redis
CPU time per hop, and the hops/s at which Redis (single-threaded) would use a whole
core at that cost: the ceiling of this deployment, whatever the instance count.

    .venv/bin/python benchmarks/instances.py [--instances 1,2,4] [--concurrency 60] [--seconds 5] [--json]

On a small machine the instances compete with each other and with Redis for cores,
so hops/s stops growing well before Redis is the limit; the projected ceiling is the
figure that carries over to bigger machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import (  # noqa: E402  (this directory: the script's own)
    Tally,
    cpu_seconds,
    interrupt,
    machine_busy_seconds,
    percentile,
    server_env,
    server_executable,
    stop_group,
)
from hops import WARMUP_S, subscriber, wait_healthy  # noqa: E402

from ussd_gateway.testkit.redis_server import RedisServer, free_port  # noqa: E402

HOST = "127.0.0.1"


async def drive(ports: list[int], concurrency: int, seconds: float) -> Tally:
    now = time.perf_counter()
    tally = Tally(window_start=now + WARMUP_S, window_end=now + WARMUP_S + seconds)
    await asyncio.gather(*(subscriber(n, ports[n % len(ports)], concurrency, tally) for n in range(concurrency)))
    return tally


def measure(count: int, args: argparse.Namespace) -> dict[str, object]:
    """One row: `count` instances on a fresh Redis."""
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="ussd-instances-") as workdir, ExitStack() as stack:
        servers: list[tuple[int, subprocess.Popen[bytes], Path]] = []
        for n in range(count):
            port = free_port()
            log_path = Path(workdir) / f"server-{n}.log"
            log = stack.enter_context(log_path.open("wb"))
            process = subprocess.Popen(
                [str(server_executable()), "serve", "--host", HOST, "--port", str(port), "--redis-url", redis.url],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir, env=server_env(),
                start_new_session=True,
            )
            stack.callback(stop_group, process)
            servers.append((port, process, log_path))
        for port, process, log_path in servers:
            wait_healthy(port, 1, process, log_path)
        pids = [process.pid for _, process, _ in servers]
        redis_pid = redis._process.pid if redis._process else 0
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run
        server_0, redis_0, machine_0 = cpu_seconds(pids), cpu_seconds([redis_pid]), machine_busy_seconds()
        client_0, wall_0 = time.process_time(), time.perf_counter()
        tally = runner(drive([port for port, _, _ in servers], args.concurrency, args.seconds))
        wall = time.perf_counter() - wall_0
        server_cpu, redis_cpu = cpu_seconds(pids) - server_0, cpu_seconds([redis_pid]) - redis_0
        machine = machine_busy_seconds() - machine_0
        client_cpu = time.process_time() - client_0
    ordered = sorted(tally.latencies)
    hops_per_s = len(ordered) / args.seconds
    # Hops over the whole run (warm-up included) to divide Redis's CPU by: the window's
    # rate times the wall time is close enough for a per-hop cost.
    redis_per_hop_us = 1e6 * redis_cpu / (hops_per_s * wall) if hops_per_s else 0.0
    return {
        "instances": count,
        "hops_per_s": round(hops_per_s, 1),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "errors": tally.errors,
        "redis_cpu_pct": round(100 * redis_cpu / wall, 1),
        "instances_cpu_pct": round(100 * server_cpu / wall, 1),
        "load_generator_cpu_pct": round(100 * client_cpu / wall, 1),
        "machine_busy_pct": round(100 * machine / wall, 1),
        "redis_us_per_hop": round(redis_per_hop_us, 1),
        "redis_ceiling_hops_per_s": round(1e6 / redis_per_hop_us) if redis_per_hop_us else None,
        "first_errors": tally.first_errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", default="1,2,4", help="instance counts to measure, comma-separated (default 1,2,4)")
    parser.add_argument("--concurrency", type=int, default=60, help="virtual subscribers in all (default 60)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row, after 1 s of warm-up (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    args = parser.parse_args()
    try:
        counts = [int(part) for part in args.instances.split(",") if part.strip()]
    except ValueError:
        parser.error("--instances takes whole numbers, e.g. 1,2,4")
    if not counts or min(counts) < 1 or args.concurrency < max(counts) or args.seconds <= 0:
        parser.error("--instances at least 1 each, --concurrency at least the largest count, --seconds positive")

    signal.signal(signal.SIGTERM, interrupt)
    rows = []
    try:
        for count in counts:
            rows.append(row := measure(count, args))
            print(f"measured {count} instance(s): {row['hops_per_s']:,.0f} hops/s", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; servers and redis stopped", file=sys.stderr)
        return 130
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"{args.concurrency} subscribers, {args.seconds:g} s per row, one Redis, 4-hop dialogues (Africa's Talking)")
        print("instances   hops/s  errors   p99 ms  redis cpu  instances cpu  machine busy  redis us/hop  redis ceiling hops/s")
        for row in rows:
            print(
                f"{row['instances']:>9} {row['hops_per_s']:>8,.0f} {row['errors']:>7} {row['p99_ms']:>8} {row['redis_cpu_pct']:>9}% "
                f"{row['instances_cpu_pct']:>13}% {row['machine_busy_pct']:>12}% {row['redis_us_per_hop']:>13} "
                f"{row['redis_ceiling_hops_per_s'] or '-':>21,}"
            )
        print("(cpu in % of one core; the ceiling is where Redis would use a whole core at this cost per hop)")
    for row in rows:
        for line in row["first_errors"]:  # type: ignore[attr-defined]
            print(f"  error ({row['instances']} instances): {line}", file=sys.stderr)
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
