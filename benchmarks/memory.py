"""Memory per live session: the server's RSS and Redis's bytes after N 3-hop dialogues.

Starts its own `redis-server` (default settings but no persistence) and `ussd-gateway
serve` on free loopback ports, like `hops.py`, then walks `--sessions` dialogues of
three hops each over the Africa's Talking dialect, each from a number of its own, and
leaves them open (live: within their TTL, resumable):

    ""     -> main menu            ("MobiFone *090#")
    "2"    -> buy a package        ("Mua goi cuoc")
    "2*1"  -> the data packages    ("Goi Data:"; the list screen, the biggest record)

Then it reports:
- Redis: `used_memory` growth divided by the sessions, and `MEMORY USAGE` of every key
  one subscriber holds (summed), for a sample of subscribers: min / median / max;
- the server: RSS (VmRSS) before and after, and the growth per session.

    .venv/bin/python benchmarks/memory.py [--sessions 20000] [--concurrency 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import HOST, group_pids, interrupt, server_env, server_executable, stop_group
from hops import _REQUEST_HEAD, wait_healthy
from ussd_gateway.testkit.load.client import read_response
from ussd_gateway.testkit.redis_server import RedisServer, free_port

HOPS: tuple[tuple[bytes, str], ...] = ((b"", "MobiFone *090#"), (b"2", "Mua goi cuoc"), (b"2%2A1", "Goi Data:"))
SAMPLE = 200


def redis_command(port: int, *args: str) -> bytes:
    """One command on a fresh connection; the raw RESP reply (small replies only)."""
    parts = [b"*%d\r\n" % len(args)] + [b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args]
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"".join(parts))
        data = b""
        while not data.endswith(b"\r\n") or (data.startswith(b"$") and len(data) < int(data[1 : data.index(b"\r\n")]) + 4):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def used_memory(port: int) -> int:
    for line in redis_command(port, "INFO", "memory").split(b"\r\n"):
        if line.startswith(b"used_memory:"):
            return int(line.split(b":")[1])
    raise RuntimeError("no used_memory in INFO")


def key_bytes(port: int, key: str) -> int:
    reply = redis_command(port, "MEMORY", "USAGE", key)
    return int(reply[1:].split(b"\r\n")[0]) if reply.startswith(b":") else 0


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def msisdn_of(n: int) -> bytes:
    return b"8491%07d" % n


async def walk(port: int, sessions: int, concurrency: int) -> int:
    """Every dialogue's three hops; returns the errors."""
    errors = 0
    next_session = iter(range(sessions))

    async def subscriber() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            for n in next_session:
                prefix = b"sessionId=mem-%d&serviceCode=%%2A090%%23&phoneNumber=%s&text=" % (n, msisdn_of(n))
                for text, expected in HOPS:
                    body = prefix + text
                    writer.write(_REQUEST_HEAD + b"%d\r\n\r\n" % len(body) + body)
                    status, reply = await read_response(reader)
                    if status != b"200" or expected.encode() not in reply:
                        errors += 1
                        break
        finally:
            writer.close()

    await asyncio.gather(*(subscriber() for _ in range(concurrency)))
    return errors


def run(args: argparse.Namespace) -> dict[str, object]:
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="ussd-mem-") as workdir:
        port = free_port()
        log_path = Path(workdir) / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [str(server_executable()), "serve", "--host", HOST, "--port", str(port), "--redis-url", redis.url],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir, env=server_env(),
                start_new_session=True,
            )
        try:
            wait_healthy(port, 1, server, log_path)
            pids = group_pids(server.pid)
            asyncio.run(walk(port, min(200, args.sessions), 10))  # warm the server (first-hop caches)
            redis_command(redis.port, "FLUSHALL")
            rss_0, mem_0 = rss_bytes(pids), used_memory(redis.port)
            errors = asyncio.run(walk(port, args.sessions, args.concurrency))
            rss_1, mem_1 = rss_bytes(pids), used_memory(redis.port)
            keys = int(redis_command(redis.port, "DBSIZE")[1:].split(b"\r\n")[0])
            step = max(1, args.sessions // SAMPLE)
            per_subscriber = []
            for n in range(0, args.sessions, step):
                found = redis_command(redis.port, "KEYS", f"*{{{msisdn_of(n).decode()}}}*")
                names = [line.decode() for line in found.split(b"\r\n")[1:] if line and not line.startswith(b"$")]
                per_subscriber.append(sum(key_bytes(redis.port, name) for name in names))
        finally:
            stop_group(server)
    per_subscriber.sort()
    return {
        "sessions": args.sessions,
        "errors": errors,
        "redis_keys": keys,
        "redis_used_memory_per_session": round((mem_1 - mem_0) / args.sessions),
        "redis_memory_usage_per_session": {
            "min": per_subscriber[0], "median": per_subscriber[len(per_subscriber) // 2], "max": per_subscriber[-1],
        },
        "server_rss_mb": {"before": round(rss_0 / 2**20, 1), "after": round(rss_1 / 2**20, 1)},
        "server_rss_per_session": round((rss_1 - rss_0) / args.sessions),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20_000, help="live 3-hop dialogues (default 20000)")
    parser.add_argument("--concurrency", type=int, default=50, help="connections walking them (default 50)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    import signal

    signal.signal(signal.SIGTERM, interrupt)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted; server and redis stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result))
    else:
        usage = result["redis_memory_usage_per_session"]
        rss = result["server_rss_mb"]
        print(
            f"{result['sessions']:,} live 3-hop dialogues, errors {result['errors']}, {result['redis_keys']:,} Redis keys\n"
            f"  Redis    used_memory growth {result['redis_used_memory_per_session']} B/session; "
            f"MEMORY USAGE of a subscriber's keys min {usage['min']} / median {usage['median']} / max {usage['max']} B\n"
            f"  server   RSS {rss['before']} MB -> {rss['after']} MB ({result['server_rss_per_session']} B/session)"
        )
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
