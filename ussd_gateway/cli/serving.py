"""`ussd-gateway serve`: the settings from file, environment and flags, one worker,
or a supervisor of several sharing the listening sockets."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import sys
import tempfile

from ussd_gateway.app.config import ConfigError, Settings, load_settings


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings: config.toml, then the environment, then the command's flags."""
    settings = load_settings(getattr(args, "config", None))
    if getattr(args, "host", None):
        settings = settings.replace("http", host=args.host)
    if getattr(args, "port", None) is not None:
        settings = settings.replace("http", port=args.port)
    if getattr(args, "redis_url", None):
        settings = settings.replace("sessions", redis_url=args.redis_url)
    return settings


# ---- serve --------------------------------------------------------------------------------
GC_YOUNG_THRESHOLD = 10_000
"""Allocations between two young-generation collections in a serving worker."""


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_worker(settings: Settings, listeners: list[socket.socket] | None = None) -> None:
    """One serving process: compile menus, serve on `listeners` (bound by the
    supervisor and shared by the workers) or on its own, until SIGTERM/SIGINT."""
    from ussd_gateway.menus.compiler import MenuError

    from ussd_gateway.core.logs import configure_logging
    from ussd_gateway.core.secrets import mask_url
    from ussd_gateway.app.server import create_app
    from ussd_gateway.app.serving import run

    from ussd_gateway.app.serving import hold_hangups

    hold_hangups()
    configure_logging(level=settings.log.level, fmt=settings.log.format, stream=sys.stdout)
    _install_uvloop()
    try:
        app = create_app(settings)
    except MenuError as error:
        print("The menu definitions do not compile:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None
    # Speed: the compiled menus, transitions machines and imported modules are ~55,000
    # objects that live as long as the process; a full garbage collection walked them
    # all (~12 ms, a stall every few seconds under load, which was most of the p99).
    # Freezing them after start-up leaves the collector only what hops allocate.
    gc.collect()
    gc.freeze()
    # Speed: at the default threshold (700 allocations) a young collection ran every
    # ~40 hops and found most of the 50 hops in flight alive, walking them and moving
    # them to the older generations, which were then walked in turn: ~11 µs of every
    # hop's CPU went to the collector under load (gc.callbacks: 0.39 s in 8 s at
    # ~4,300 hops/s). At 10,000 young collections are 20 times rarer (~2.7 ms each)
    # and the collector takes ~5 µs a hop; the cycles it frees wait a little longer.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    store = f"redis {mask_url(settings.sessions.redis_url)}" if settings.sessions.redis_url else "memory"
    admin = f", admin on http://{settings.admin.host}:{settings.admin.port}" if settings.admin.port else ""
    print(
        f"ussd-gateway pid {os.getpid()} listening on http://{settings.http.host}:{settings.http.port}{admin} "
        f"(sessions: {store}, backend: {settings.backend.kind})",
        file=sys.stderr,
        flush=True,
    )
    run(app, settings, listeners=listeners)


def serve(args: argparse.Namespace) -> int:
    from ussd_gateway.app.exposure import check_exposure

    settings = settings_from(args)
    check_exposure(settings)  # before any worker starts: refuse to expose unprotected routes
    workers = args.workers
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if workers == 1:
        run_worker(settings)
        return 0
    if not settings.sessions.redis_url:
        raise ConfigError(
            f"--workers {workers} needs a shared session store: pass --redis-url (the memory store lives in one process)"
        )
    from ussd_gateway.app.serving import bind_listeners
    from ussd_gateway.app.supervisor import Supervisor

    # Every worker writes its metrics to files here; /metrics on any worker merges them.
    metrics_dir = tempfile.TemporaryDirectory(prefix="ussd-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir.name
    try:
        return Supervisor(run_worker, (settings, bind_listeners(settings)), workers).run()
    finally:
        metrics_dir.cleanup()
