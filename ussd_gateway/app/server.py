"""The HTTP server: an aiohttp app factory used by the CLI and the tests alike."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

from ussd_gateway.app.config import Settings
from ussd_gateway.app.exposure import check_exposure, guard_policy
from ussd_gateway.channels.http import africastalking, json_api, sms_http
from ussd_gateway.channels.http.body import BODY_TIMEOUT, BodyTimeout
from ussd_gateway.channels.http.guard import Guard
from ussd_gateway.core.errors import BadRequest, DependencyDown
from ussd_gateway.core.msisdn import normalise_msisdn
from ussd_gateway.core.secrets import mask_url, register_secrets
from ussd_gateway.sessions.redis_store import RedisStore
from ussd_gateway.app.wiring import Gateway, build_gateway
from ussd_gateway.app import menu_reload
from ussd_gateway.app.campaigns_api import add_routes as add_campaign_routes
from ussd_gateway.app.push_api import add_routes as add_push_routes
from ussd_gateway.core.tasks import cancel_and_wait

GATEWAY = web.AppKey("gateway", Gateway)
SMPP = web.AppKey("smpp", object)
"""The SMPP channel (`smpp.channel.SmppChannel`) when binds are configured."""
GUARD = web.AppKey("guard", Guard)
"""Who may call (tokens, allow-list, signatures, admin routes, per-caller rate)."""
GRAPH_CACHE = web.AppKey("menus_graph", dict)
"""GET /menus/graph's renderings, per format (emptied when the menus are reloaded)."""


def _dialect_handler(dialect) -> Callable[[web.Request], Awaitable[web.Response]]:  # type: ignore[no-untyped-def]
    async def handle(request: web.Request) -> web.Response:
        gateway = request.app[GATEWAY]
        try:
            hop = await dialect.parse(request)
        except BadRequest as error:
            return _with_status(dialect.render_error(error), error)
        return dialect.render(await gateway.dispatcher.handle(hop))

    return handle


def _with_status(response: web.Response, error: BadRequest) -> web.Response:
    """A body that never arrived whole is 408, not 400."""
    if isinstance(error, BodyTimeout):
        response.set_status(408)
    return response


async def mo_sms(request: web.Request) -> web.Response:
    """An MO SMS by HTTP: the keyword service's reply in the response."""
    gateway = request.app[GATEWAY]
    try:
        sms = await sms_http.parse(request)
    except BadRequest as error:
        return _with_status(sms_http.render_error(error), error)
    limiter = gateway.dispatcher.limiter
    try:
        if limiter is not None and (limit := await limiter.check_sms(sms.msisdn)) is not None:
            # Over the rate: no reply at all (an automated sender answering our replies
            # would otherwise loop with us), and 200 so the aggregator does not retry.
            gateway.metrics.guard.count_limited(limit)
            return sms_http.render(None)
        async with asyncio.timeout(gateway.dispatcher.settings.hop_deadline_s * 2):
            lang = await gateway.store.get_language(sms.msisdn)
            reply = await gateway.keywords.handle(sms.msisdn, sms.short_code, sms.text, message_key=sms.message_key, lang=lang)
    except (DependencyDown, TimeoutError):
        return web.json_response({"error": "service busy, try again later"}, status=503)
    return sms_http.render(reply)


async def outbound_sms(request: web.Request) -> web.Response:
    """What the outbound SMS queue holds for one subscriber (`?to=MSISDN`)."""
    try:
        msisdn = normalise_msisdn(request.query.get("to", ""))
    except BadRequest as error:
        return sms_http.render_error(error)
    try:
        queued = await request.app[GATEWAY].store.recent_sms(msisdn, 1000)
    except DependencyDown:
        return web.json_response({"error": "service busy, try again later"}, status=503)
    return web.json_response([{"from": s.sender, "text": s.text} for s in queued])


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The session store answers and, with `[smpp] readiness = "required"`, every
    configured bind is up; 503 otherwise (take this instance out of rotation). With
    "degraded" a bind down is reported in the body but the instance stays ready."""
    gateway = request.app[GATEWAY]
    store = mask_url(gateway.settings.sessions.redis_url) if gateway.settings.sessions.redis_url else "memory"
    body: dict[str, object] = {"store": store, "menus": gateway.engine.version}
    problems = []
    if not await gateway.store.ping():
        problems.append("store unreachable")
    if SMPP in request.app:
        binds = {name: "up" if link.up else "down" for name, link in request.app[SMPP].links.items()}
        body["smpp"] = binds
        down = sorted(name for name, state in binds.items() if state == "down")
        if down and gateway.settings.smpp.readiness == "required":
            problems.append("smpp bind down: " + ", ".join(down))
    if problems:
        return web.json_response({"status": "; ".join(problems), **body}, status=503)
    return web.json_response({"status": "ready", **body})


STATIC_DIR = Path(__file__).parent / "static"
# The web phone loads only its own files and talks only to this server.
_SIM_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


async def web_phone(request: web.Request) -> web.FileResponse:
    """`GET /sim`: the web phone (a USSD dialog, an SMS inbox and the trace)."""
    return web.FileResponse(STATIC_DIR / "sim.html", headers=_SIM_HEADERS)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[GATEWAY].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


_GRAPH_TYPES = {"svg": "image/svg+xml", "mermaid": "text/plain", "dot": "text/vnd.graphviz"}


async def menus_graph(request: web.Request) -> web.Response:
    """The menu map (`?format=svg|mermaid|dot`, default svg), rendered once per format."""
    from ussd_gateway.menus.graph import GraphvizMissing, render_graph

    fmt = request.query.get("format", "svg")
    if fmt not in _GRAPH_TYPES:
        return web.json_response({"error": f"format must be one of {', '.join(_GRAPH_TYPES)}"}, status=400)
    gateway = request.app[GATEWAY]
    cache: dict[str, bytes] = request.app[GRAPH_CACHE]
    if fmt not in cache:
        settings = gateway.settings
        demo = Path(settings.backend.demo_data) if settings.backend.demo_data else None
        render = functools.partial(render_graph, gateway.menus, fmt, budget=gateway.engine.budget, demo_data=demo)
        try:
            cache[fmt] = await asyncio.get_running_loop().run_in_executor(None, render)
        except GraphvizMissing as error:
            return web.json_response({"error": str(error)}, status=503)
        except RuntimeError:  # Graphviz is installed but failed (a broken install): not the caller's fault
            return web.json_response({"error": "Graphviz could not draw the map (see `dot -V`); try ?format=mermaid"}, status=503)
    charset = None if fmt == "svg" else "utf-8"
    return web.Response(body=cache[fmt], content_type=_GRAPH_TYPES[fmt], charset=charset, headers={"Cache-Control": "no-cache"})


def secrets_of(settings: Settings) -> list[str]:
    """Every configured secret, for the log scrubber (`core.secrets`)."""
    found = [*settings.http.tokens, *settings.http.signing_secrets, settings.admin.token, settings.backend.http_token]
    found += [settings.sessions.redis_url, settings.backend.http_url]
    found += [getattr(bind, "password", "") for bind in settings.smpp.binds]
    return [value for value in found if value]


def start_outbox_sweeper(store: object, every_s: float) -> asyncio.Task[None] | None:
    """Move the SMS outboxes a dead process left behind (it died between a debit and
    moving its SMS to the queue): at start, so a restarted worker picks them up, then
    every `every_s`. Only the Redis store has outboxes; 0 turns the sweep off."""
    sweep = getattr(store, "sweep_outboxes", None)
    if sweep is None or every_s <= 0:
        return None
    log = structlog.get_logger("ussd_gateway.outbox")

    async def run() -> None:
        while True:
            try:
                moved = await sweep()
                if moved:
                    log.warning("outbox_swept", moved=moved)
            except DependencyDown as exc:
                log.warning("outbox_sweep_failed", error=str(exc))
            await asyncio.sleep(every_s)

    return asyncio.get_running_loop().create_task(run())


def start_campaigns(gateway: Gateway) -> object | None:
    """The loop that sends running campaigns (`campaigns.runner`), when they are on
    (Redis). Returns what to `stop()` at shutdown."""
    if gateway.campaigns is None:
        return None
    from ussd_gateway.campaigns.runner import CampaignRunner

    runner = CampaignRunner(gateway.campaigns, gateway.ledger, gateway.store, clock=gateway.campaigns.clock)
    runner.start()
    return runner


def create_app(settings: Settings, *, gateway: Gateway | None = None) -> web.Application:
    """The gateway's web application. Menus compile here (a bad definition stops the
    start with every problem listed); connections open lazily and close on cleanup."""
    check_exposure(settings)
    register_secrets(secrets_of(settings))
    tracing = None
    if settings.tracing.enabled:  # imported only when on: off, OpenTelemetry is never loaded
        from ussd_gateway.app.tracing import start_tracing

        tracing = start_tracing(settings.tracing)
    built = gateway or build_gateway(settings)
    if tracing is not None:
        tracing.instrument_redis(built.redis)
        if isinstance(built.store, RedisStore):  # its lean hop client is not instrumented
            built.store.carry_hops_on_client()
    shared_counters = getattr(built.store, "client", None)  # Redis, when the sessions are there
    guard = Guard(guard_policy(settings), built.metrics.guard, built.store.claim_once, redis=shared_counters)
    app = web.Application(client_max_size=settings.http.max_body_bytes, middlewares=[guard.middleware])
    app[GATEWAY] = built
    app[GUARD] = guard
    app[BODY_TIMEOUT] = settings.http.body_timeout_s

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        channel = None
        prepare = getattr(app[GATEWAY].store, "prepare", None)  # the Redis store
        if prepare is not None:
            await prepare()
        sweeper = start_outbox_sweeper(app[GATEWAY].store, settings.sessions.outbox_sweep_s)
        campaigns = start_campaigns(app[GATEWAY])
        funnel = app[GATEWAY].dispatcher.funnel
        if funnel is not None:
            funnel.start()
        if settings.smpp.binds:
            from ussd_gateway.channels.smpp.channel import SmppChannel

            channel = SmppChannel(app[GATEWAY], settings.smpp.binds)
            await channel.start()
            app[SMPP] = channel
        yield
        if sweeper is not None:
            await cancel_and_wait(sweeper)
        if campaigns is not None:
            await campaigns.stop()
        if channel is not None:
            await channel.stop()
        if funnel is not None:
            await funnel.stop()  # the counts not yet in Redis
        await app[GATEWAY].close()

    async def unbind_first(app: web.Application) -> None:
        # On SIGTERM: finish in-flight hops and unbind before the sessions close.
        if SMPP in app:
            await app[SMPP].stop()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(unbind_first)
    app.router.add_post("/ussd/africastalking", _dialect_handler(africastalking))
    app.router.add_post("/ussd", _dialect_handler(json_api))
    app.router.add_post("/sms", mo_sms)
    app.router.add_get("/sms/outbound", outbound_sms)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app[GRAPH_CACHE] = {}
    app.router.add_get("/menus/graph", menus_graph)
    app.router.add_get("/sim", web_phone)
    app.router.add_static("/static/", STATIC_DIR, name="static")
    menu_reload.install(app, built, on_change=app[GRAPH_CACHE].clear)
    add_campaign_routes(app)
    add_push_routes(app)
    return app
