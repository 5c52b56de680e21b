"""CPU per hop of the dispatcher and below, in-process: repeatable on a busy machine.

```
.venv/bin/python benchmarks/hop_cpu.py                 # 3,000 dialogues of 3 hops, 50 at a time
.venv/bin/python benchmarks/hop_cpu.py --profile 30    # and cProfile's top 30 (SORT=tottime: by own time)
valgrind --tool=callgrind .venv/bin/python benchmarks/hop_cpu.py --dialogues 300
```

It starts a throw-away redis-server, builds the gateway as `serve` does (Redis store,
demo backend, limits, metrics, log line to /dev/null) and walks the 3-hop dialogue of
the side-by-side benchmark (`""`, `"2"`, `"2*1"`; each dialogue from a number of its
own) through `Dispatcher.handle`, `--concurrency` dialogues at a time, after a warm-up.
No HTTP: what aiohttp costs is the `hello` floor of `run_all.sh`. Prints this process's
CPU µs per hop (Redis runs in its own process and is not counted). Every reply is
checked against the screens the HTTP benchmark expects.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import sys
import time

import _common  # noqa: F401  (puts the repo on sys.path)

from ussd_gateway.app.config import Settings
from ussd_gateway.app.wiring import build_gateway
from ussd_gateway.channels.http.africastalking import NAME
from ussd_gateway.core.hop import Hop, HopKind
from ussd_gateway.core.logs import configure_logging
from ussd_gateway.testkit.redis_server import RedisServer

HOPS = (("", "MobiFone"), ("2", "Mua goi"), ("2*1", "Goi Data"))


async def dialogue(dispatcher: object, number: int) -> None:
    msisdn = f"8490{number:07d}"
    for text, expected in HOPS:
        hop = Hop(
            channel=NAME, session_id=f"s{number}", msisdn=msisdn, service_code="*090#",
            kind=HopKind.CONTINUE if text else HopKind.BEGIN, history=text, hop_key="t:" + text,
        )
        reply = await dispatcher.handle(hop)  # type: ignore[attr-defined]
        if reply.end or expected not in reply.text:
            raise SystemExit(f"unexpected reply to {text!r}: {reply.text!r}")


async def walk(dispatcher: object, first: int, count: int, concurrency: int) -> None:
    numbers = iter(range(first, first + count))

    async def subscriber() -> None:
        for number in numbers:
            await dialogue(dispatcher, number)

    await asyncio.gather(*(subscriber() for _ in range(concurrency)))


async def main(args: argparse.Namespace) -> None:
    with RedisServer() as redis, open(os.devnull, "wb") as sink:
        redis.start()
        configure_logging(fmt="json", stream=io.TextIOWrapper(sink))
        gateway = build_gateway(Settings().replace("sessions", redis_url=redis.url))
        try:
            await walk(gateway.dispatcher, 0, 200, args.concurrency)
            gc.freeze()  # as `serve` does after start-up
            profile = cProfile.Profile() if args.profile else None
            started = time.process_time()
            if profile is not None:
                profile.enable()
            await walk(gateway.dispatcher, 1000, args.dialogues, args.concurrency)
            if profile is not None:
                profile.disable()
            used = time.process_time() - started
            print(f"{args.dialogues * len(HOPS)} hops: {used / (args.dialogues * len(HOPS)) * 1e6:.1f} µs CPU per hop")
            if profile is not None:
                pstats.Stats(profile, stream=sys.stdout).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(args.profile)
        finally:
            await gateway.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dialogues", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args))
    except ImportError:
        asyncio.run(main(args))
