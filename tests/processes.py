"""Real `ussd-gateway serve` processes for tests, and a client that spreads hops over
them round-robin the way a load balancer in front of several instances does."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from ussd_gateway.testkit.redis_server import free_port

PROJECT = Path(__file__).resolve().parents[1]


class Instance:
    """One `serve` process on a port of its own."""

    def __init__(self, config: Path, *args: str) -> None:
        self.config = config
        self.args = args
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession, seconds: float = 30.0) -> "Instance":
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ussd_gateway.cli", "serve", "--config", str(self.config), "--port", str(self.port), *self.args,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.config.parent,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if self.process.returncode is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}")
            try:
                async with session.get(self.url + "/healthz") as response:
                    if response.status == 200:
                        return self
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError("serve did not become healthy")

    async def stop(self) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


class RoundRobin:
    """Sends each request to the next instance in turn."""

    def __init__(self, session: aiohttp.ClientSession, instances: list[Instance]) -> None:
        self.session = session
        self.instances = instances
        self._next = itertools.cycle(instances)
        self.used: list[int] = []
        """The port of every request sent, in order."""

    def pick(self) -> Instance:
        instance = next(self._next)
        self.used.append(instance.port)
        return instance

    async def post_json(self, path: str, body: dict[str, Any], instance: Instance | None = None) -> tuple[int, Any]:
        target = instance or self.pick()
        async with self.session.post(target.url + path, json=body) as response:
            return response.status, await response.json(content_type=None)

    async def post_form(self, path: str, form: dict[str, str], instance: Instance | None = None) -> tuple[int, str]:
        target = instance or self.pick()
        async with self.session.post(target.url + path, data=form) as response:
            return response.status, await response.text()
