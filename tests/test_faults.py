"""The fault harness, short: purchases under load through Redis stops and kills and
worker kills and SIGTERMs, then every subscriber's debits, SMS and packages agree
(ussd_gateway/testkit/faults.py; run it longer with `--long`). And SIGTERM answers
every request the server had received."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson

from ussd_gateway.testkit import faults
from ussd_gateway.testkit.redis_server import RedisServer, free_port


async def test_every_fault_reconciles() -> None:
    lines: list[str] = []
    results = await faults.run(list(faults.FAULTS), subscribers=40, seconds=5.0, workers=2, out=lines.append)
    print("\n".join(lines))
    assert [r.fault for r in results] == list(faults.FAULTS)
    for figures in results:
        assert figures.problems == [], figures.line()
        assert figures.debits > 0, figures.line()


async def test_sigterm_answers_every_request_received(own_redis: RedisServer) -> None:
    """200 hops in flight when SIGTERM arrives: each gets its screen, none a reset."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "ussd-gateway"), "serve", "--port", str(port), "--redis-url", own_redis.url]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        faults._wait_port(port, 30)
        url = f"http://127.0.0.1:{port}/ussd"
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as http:

            async def hop(n: int) -> str:
                body = {"session_id": f"t{n}", "msisdn": f"849700{n:05d}", "service_code": "*090#", "event": "begin", "seq": 0}
                try:
                    async with http.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as response:
                        return "answered" if response.status == 200 and "MobiFone" in (await response.json())["text"] else "wrong"
                except (aiohttp.ClientError, OSError):
                    return "reset"

            tasks = [asyncio.create_task(hop(n)) for n in range(200)]
            await asyncio.sleep(0.05)
            server.send_signal(signal.SIGTERM)
            outcomes = await asyncio.gather(*tasks)
        counts = {k: outcomes.count(k) for k in set(outcomes)}
        print(counts)
        # Sent before the server stopped accepting: all of them (the connect came first).
        assert counts.get("wrong", 0) == 0
        assert counts.get("answered", 0) >= 1
        assert server.wait(15) == 0
        refused = counts.get("reset", 0)
        assert refused == 0, counts
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(5)
