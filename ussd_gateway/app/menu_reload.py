"""Reloading the menus without a restart, on every worker and instance.

A reload compiles the definitions in the menus directory and checks them as
`ussd-gateway menus check` does (compile errors, screens over the budget). A
definition with problems is refused and the running version goes on serving. A good
one becomes current for new dialogues at once; dialogues already open finish on the
version they began on (`menus.versions`).

Three ways in:

- `SIGHUP` to a process reloads that process (`serve --workers N`'s supervisor passes
  it on to every worker);
- `POST /admin/menus/reload` and `POST /admin/menus/rollback` (admin token required)
  act here, then publish on the Redis channel `ussd:menus`, so every other worker and
  instance sharing the Redis does the same (each from its own menus directory);
- `ussd-gateway menus reload|rollback` publishes on that channel.

A rollback makes the version that was current before this one current again, from
memory (the files are not read). A process started afterwards loads the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import web

from ussd_gateway.app.wiring import Gateway, menus_directory
from ussd_gateway.menus.check import check_screen_budget
from ussd_gateway.menus.compiler import MenuError, load_menus
from ussd_gateway.menus.model import MenuSet
from ussd_gateway.menus.versions import definitions_version
from ussd_gateway.services.keywords import KeywordRouter
from ussd_gateway.core.tasks import cancel_and_wait

CHANNEL = "ussd:menus"
"""The Redis pub/sub channel reloads and rollbacks are announced on."""
RESUBSCRIBE_S = 1.0
CLOSE_S = 1.0
"""How long closing the channel's connection may take."""


class MenusRefused(Exception):
    """The definitions fail `menus check`; `problems` lists why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def compile_checked(directory: Path, budget: Any, demo_data: Path | None) -> tuple[str, MenuSet]:
    """(version, compiled menus) of `directory`, or MenusRefused with every problem."""
    version = definitions_version(directory)
    try:
        menus = load_menus(directory)
    except MenuError as error:
        raise MenusRefused(error.problems) from None
    problems = check_screen_budget(menus, budget, demo_data)
    if problems:
        raise MenusRefused(problems)
    return version, menus


def announcement(op: str, version: str | None, origin: str) -> bytes:
    return orjson.dumps({"op": op, "version": version, "from": origin})


class MenuReloader:
    """Reloads and rolls back this process's menus, and relays through Redis."""

    def __init__(self, gateway: Gateway, on_change: Callable[[], None] | None = None) -> None:
        self.gateway = gateway
        self.on_change = on_change
        """Called when another version becomes current (the app empties its map cache)."""
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.log = structlog.get_logger("ussd_gateway.menus")
        self._lock = asyncio.Lock()
        self.listening = asyncio.Event()
        """Set once subscribed to the channel (tests wait for it)."""

    @property
    def version(self) -> str:
        return self.gateway.engine.version

    # ---- here ----------------------------------------------------------------------------
    async def reload(self, *, publish: bool = True) -> dict[str, Any]:
        """Compile and check the directory; make it current. Raises MenusRefused."""
        settings = self.gateway.settings
        demo = Path(settings.backend.demo_data) if settings.backend.demo_data else None
        async with self._lock:
            loop = asyncio.get_running_loop()
            directory = menus_directory(settings)
            try:
                version, menus = await loop.run_in_executor(None, compile_checked, directory, self.gateway.engine.budget, demo)
            except MenusRefused as refused:
                self.log.warning("menus_refused", problems=len(refused.problems), first=refused.problems[0], version=self.version)
                raise
            previous = self.version
            if version != previous:
                if self.gateway.engine.holds(version):
                    self.gateway.engine.rollback(to=version)
                else:
                    assert self.gateway.make_engine is not None
                    self.gateway.engine.install(version, self.gateway.make_engine(menus))
                self._follow()
                self.log.info("menus_reloaded", version=version, previous=previous)
        if publish:
            await self._publish("reload", version)
        return {"status": "reloaded" if version != previous else "unchanged", "version": version, "previous": previous}

    async def rollback(self, to: str | None = None, *, publish: bool = True) -> dict[str, Any]:
        """The previous version (or `to`) current again; status "none" when this
        process holds no such version."""
        async with self._lock:
            previous = self.version
            target = self.gateway.engine.rollback(to)
            if target is not None:
                self._follow()
                self.log.info("menus_rolled_back", version=target, previous=previous)
            else:
                self.log.warning("menus_rollback_impossible", wanted=to or "previous", version=previous)
        if publish and target is not None:
            await self._publish("rollback", target)
        return {"status": "rolled back" if target else "none", "version": self.version, "previous": previous}

    def _follow(self) -> None:
        """Point what is not per dialogue at the current menus: the menu map, the SMS
        keywords (updated in place: the SMPP channel holds the router)."""
        gateway = self.gateway
        menus = gateway.engine.menus
        gateway.menus = menus
        fresh = KeywordRouter(menus, gateway.backend, gateway.store, gateway.settings.services, default_lang=gateway.settings.screen.default_language)
        gateway.keywords.texts = fresh.texts
        gateway.keywords._routes = fresh._routes  # noqa: SLF001 - the same class, rebuilt
        if self.on_change is not None:
            self.on_change()

    # ---- everywhere -----------------------------------------------------------------------
    async def _publish(self, op: str, version: str) -> None:
        if self.gateway.redis is None:
            return
        try:
            await self.gateway.redis.publish(CHANNEL, announcement(op, version, self.origin))
        except Exception as exc:  # Redis down: this process changed; the others did not
            self.log.warning("menus_publish_failed", op=op, error=str(exc) or exc.__class__.__name__)

    async def on_message(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            op, version, origin = message["op"], message.get("version"), message.get("from")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.log.warning("menus_message_unreadable")
            return
        if origin == self.origin:
            return
        try:
            if op == "reload":
                result = await self.reload(publish=False)
                if version and result["version"] != version:
                    self.log.warning("menus_version_differs", here=result["version"], announced=version)
            elif op == "rollback":
                await self.rollback(version if version and self.gateway.engine.holds(version) else None, publish=False)
        except MenusRefused:
            pass  # logged by reload; the old version serves on

    async def listen(self, redis_url: str) -> None:
        """Follow the channel until cancelled, resubscribing after Redis drops (or, behind
        Sentinels, after a failover: the next client asks them for the new master)."""
        from ussd_gateway.sessions.redis_clients import is_cluster, make_client

        while True:
            client = make_client(redis_url, cluster=self.gateway.settings.sessions.cluster)
            pubsub = None
            try:
                if is_cluster(client):
                    await client.initialize()  # a cluster's pub/sub needs the slot map first
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(CHANNEL)
                self.listening.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self.on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                self.log.warning("menus_channel_lost", error=str(exc) or exc.__class__.__name__)
                await asyncio.sleep(RESUBSCRIBE_S)
            finally:
                # Bounded: a close must never hold the server's stop (redis-py has
                # waited forever on a socket whose read was cancelled).
                for closing in ((pubsub.aclose(),) if pubsub is not None else ()) + (client.aclose(),):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(closing, CLOSE_S)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: follow the channel while serving (Redis only)."""
        url = self.gateway.settings.sessions.redis_url
        task = asyncio.get_running_loop().create_task(self.listen(url)) if url else None
        yield
        if task is not None:
            if not await cancel_and_wait(task, timeout_s=2 * CLOSE_S):  # let the stop go on
                self.log.warning("menus_listener_not_stopped")


MENU_RELOADER = web.AppKey("menu_reloader", MenuReloader)


def _admin_token_set(request: web.Request) -> web.Response | None:
    # The guard checks the token when one is set; these routes change what every
    # subscriber sees, so without one they are off (SIGHUP still reloads).
    if not request.app[MENU_RELOADER].gateway.settings.admin.token:
        return web.json_response({"error": "set [admin] token to use this route (or send SIGHUP)"}, status=403)
    return None


async def reload_route(request: web.Request) -> web.Response:
    """`POST /admin/menus/reload`: 200 with the version, 422 with the problems."""
    if (refusal := _admin_token_set(request)) is not None:
        return refusal
    try:
        result = await request.app[MENU_RELOADER].reload()
    except MenusRefused as refused:
        return web.json_response(
            {"status": "refused", "version": request.app[MENU_RELOADER].version, "problems": refused.problems}, status=422
        )
    return web.json_response(result)


async def rollback_route(request: web.Request) -> web.Response:
    """`POST /admin/menus/rollback`: the previous version current again (409 if none)."""
    if (refusal := _admin_token_set(request)) is not None:
        return refusal
    result = await request.app[MENU_RELOADER].rollback()
    return web.json_response(result, status=200 if result["status"] == "rolled back" else 409)


def install(app: web.Application, gateway: Gateway, *, on_change: Callable[[], None] | None = None) -> MenuReloader:
    """Add the reloader, its routes and its channel listener to the app."""
    reloader = MenuReloader(gateway, on_change)
    app[MENU_RELOADER] = reloader
    app.cleanup_ctx.append(reloader.lifecycle)
    app.router.add_post("/admin/menus/reload", reload_route)
    app.router.add_post("/admin/menus/rollback", rollback_route)
    return reloader
