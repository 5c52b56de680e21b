"""Campaign throughput per SMPP bind: messages a second, delivery receipts included.

Starts its own `redis-server` (`testkit.redis_server`), the SMSC simulator
(`testkit.smsc.SmscSimulator`, in this process, on a free loopback port, answering
every SMS with a `DELIVRD` receipt) and, for each scenario, `ussd-gateway serve` with
a temporary config.toml holding one or two transceiver binds to it (window 50, quiet
hours and the frequency cap off). Each scenario creates a CSV campaign of fresh
numbers, starts it, and measures:

- `msg/s`: SMS a second from the first `submit_sm` the simulator reads to the moment
  the campaign's status counts every SMS `delivered` (the receipt matched and counted
  in Redis), so it is end to end: Redis claim and queue, the drain, the bind, the
  receipt back;
- `per bind`: each bind's share of the `submit_sm` and its own rate (between its first
  and last `submit_sm`);
- the CPU the server, Redis and this process (simulator and polling) used, in percent
  of one core.

Scenarios: one bind and two binds, uncapped and with `max_tps` (parts a second per
bind). Everything stops by itself (`--messages` per uncapped scenario, fewer when
capped so each lasts about `--capped-seconds`); the whole run stays within a minute.

    .venv/bin/python benchmarks/campaigns.py [--messages 3000] [--max-tps 200] [--capped-seconds 4] [--json]
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

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), str(_HERE)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from _common import HOST, CpuSample, group_pids, interrupt, server_env, server_executable, stop_group  # noqa: E402

from ussd_gateway.testkit.redis_server import RedisServer, free_port  # noqa: E402
from ussd_gateway.testkit.smsc import SmscSimulator  # noqa: E402
from ussd_gateway.testkit.smsc.records import LoggedPdu  # noqa: E402

DEADLINE_S = 55.0
"""The whole run stops here whatever is left (its scenarios are sized well inside it)."""


def config(redis_url: str, smsc_port: int, binds: int, max_tps: float) -> str:
    lines = [
        "[sessions]", f'redis_url = "{redis_url}"',
        "[campaigns]", 'quiet_start = "00:00"', 'quiet_end = "00:00"', "cap_per_subscriber = 0", "poll_s = 0.1",
        "[log]", 'level = "warning"',
    ]
    for index in range(binds):
        lines += ["[[smpp.binds]]", f'name = "b{index + 1}"', f"port = {smsc_port}", 'password = "secret"',
                  'short_codes = ["9090"]', "window = 50", f"max_tps = {max_tps}"]
    return "\n".join(lines) + "\n"


async def scenario(
    redis: RedisServer, smsc: SmscSimulator, submits: list[tuple[float, int]], bound: set[int], *, binds: int, max_tps: float,
    messages: int, first_number: int, deadline: float,
) -> dict[str, object]:
    import redis.asyncio as aioredis

    from ussd_gateway.backend import build_backend
    from ussd_gateway.campaigns.book import CampaignBook, create_from_spec
    from ussd_gateway.campaigns.settings import CampaignSettings

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_text(config(redis.url, smsc.port, binds, max_tps))
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            http_port = sock.getsockname()[1]
        server = subprocess.Popen(
            [str(server_executable()), "serve", "--config", str(path), "--port", str(http_port)],
            env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        client = aioredis.Redis.from_url(redis.url)
        backend = build_backend("demo", redis_client=client)
        redis_pid = redis._process.pid if redis._process else None  # noqa: SLF001  (its own child)
        try:
            started = time.monotonic()
            while len(bound) < binds:  # every bind up before the campaign starts
                if server.poll() is not None or time.monotonic() - started > 20:
                    raise RuntimeError("the server did not bind to the simulator")
                await asyncio.sleep(0.05)
            submits.clear()
            book = CampaignBook(client, backend, CampaignSettings())
            csv = "".join(f"{first_number + i}\n" for i in range(messages))
            name = f"bench {binds} {max_tps:g}"
            made = await create_from_spec(book, {"name": name, "texts": {"vi": "Cam on quy khach da dong hanh cung MobiFone."}, "csv": csv})
            before = CpuSample.take(group_pids(server.pid), redis_pid)
            wall_start = time.monotonic()
            await book.move(made["id"], "start")
            while True:
                status = await book.status(made["id"])
                if status["delivered"] + status["failed"] + status["expired"] >= messages:
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"out of time: {status['delivered']} of {messages} delivered")
                await asyncio.sleep(0.02)
            finished = time.time()
            wall = time.monotonic() - wall_start
            cpu = CpuSample.take(group_pids(server.pid), redis_pid).shares_since(before, wall)
        finally:
            await backend.close()
            await client.aclose()
            stop_group(server)
    first = min(at for at, _bind in submits)
    per_bind = {}
    for bind_id in sorted({b for _at, b in submits}):
        times = sorted(at for at, b in submits if b == bind_id)
        span = times[-1] - times[0]
        per_bind[f"bind {len(per_bind) + 1}"] = {"submits": len(times), "msg_per_s": round((len(times) - 1) / span, 1) if span else None}
    return {
        "binds": binds, "max_tps": max_tps or None, "messages": messages, "delivered": status["delivered"],
        "seconds": round(finished - first, 2), "msg_per_s": round(messages / (finished - first), 1),
        "per_bind": per_bind, "cpu_percent": cpu,
    }


async def run(args: argparse.Namespace) -> list[dict[str, object]]:
    deadline = time.time() + DEADLINE_S
    submits: list[tuple[float, int]] = []
    bound: set[int] = set()

    def seen(entry: LoggedPdu) -> None:
        if entry.command == "submit_sm" and entry.direction == "in":
            submits.append((entry.at, entry.bind_id))
        elif entry.command.startswith("bind_") and entry.command.endswith("_resp") and entry.direction == "out":
            bound.add(entry.bind_id)

    capped = max(1, int(args.max_tps * args.capped_seconds))
    plans = [(1, 0.0, args.messages), (2, 0.0, args.messages), (1, args.max_tps, capped), (2, args.max_tps, 2 * capped)]
    results = []
    with RedisServer() as redis:
        smsc = SmscSimulator(HOST, free_port(), {"ussdgw": "secret"}, control_port=None, enquire_link_s=None, on_pdu=seen, pdu_log_limit=1000)
        smsc.auto_receipts = lambda _to: "DELIVRD"
        async with smsc:
            for index, (binds, max_tps, messages) in enumerate(plans):
                bound.clear()
                result = await scenario(redis, smsc, submits, bound, binds=binds, max_tps=max_tps, messages=messages,
                                        first_number=84930000000 + index * 100_000, deadline=deadline)
                results.append(result)
                if not args.json:
                    print(line(result), flush=True)
    return results


def line(result: dict[str, object]) -> str:
    cap = f"max_tps {result['max_tps']:g}/bind" if result["max_tps"] else "uncapped"
    binds = ", ".join(f"{name} {b['submits']} at {b['msg_per_s']}/s" for name, b in result["per_bind"].items())  # type: ignore[attr-defined]
    cpu = result["cpu_percent"]
    return (f"{result['binds']} bind(s), {cap:<18} {result['messages']:>5} SMS delivered in {result['seconds']:>5} s: "
            f"{result['msg_per_s']:>7}/s  ({binds}; CPU server {cpu['server']}%, redis {cpu['redis']}%, "  # type: ignore[index]
            f"simulator+poll {cpu['load_generator']}%, other {cpu['other']}%)")  # type: ignore[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=3000, help="SMS per uncapped scenario (default 3000)")
    parser.add_argument("--max-tps", type=float, default=200.0, help="the cap per bind in the capped scenarios (default 200)")
    parser.add_argument("--capped-seconds", type=float, default=4.0, help="how long each capped scenario sends (default 4)")
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    args = parser.parse_args()
    if not 1 <= args.messages <= 20_000 or not 1 <= args.max_tps <= 5000 or not 0.5 <= args.capped_seconds <= 10:
        print("campaigns: --messages 1..20000, --max-tps 1..5000, --capped-seconds 0.5..10", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)
    try:
        results = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("campaigns: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except RuntimeError as error:
        print(f"campaigns: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
