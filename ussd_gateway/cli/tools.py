"""The other commands: menus check/graph/reload/rollback, load, feedback, smsc, sim
and replay (campaign: `cli.campaigns`) (most reach the testers' toolkit, imported when run)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO


if TYPE_CHECKING:
    from ussd_gateway.menus.model import MenuSet
    from ussd_gateway.menus.text import ScreenBudget

from ussd_gateway.cli.serving import settings_from as _settings


# ---- menus check ----------------------------------------------------------------------------
def _menu_inputs(args: argparse.Namespace) -> tuple[Path | None, ScreenBudget, Path | None]:
    """What the menus commands work on: the menus directory (`--dir`, else the
    configured one, else the packaged menus), the screen budget and the demo data file."""
    from ussd_gateway.menus.text import ScreenBudget

    settings = _settings(args)
    directory = Path(args.dir) if args.dir else (Path(settings.menus.directory) if settings.menus.directory else None)
    budget = ScreenBudget(gsm7=settings.screen.gsm7_limit, ucs2=settings.screen.ucs2_limit)
    demo = Path(settings.backend.demo_data) if settings.backend.demo_data else None
    return directory, budget, demo


def _compiled_or_report(directory: Path | None, problems_to: TextIO, closing: Callable[[int], str]) -> MenuSet | None:
    """The compiled menus, or None after printing every problem and a closing line."""
    from ussd_gateway.menus.compiler import MenuError, load_menus

    try:
        return load_menus(directory)
    except MenuError as error:
        for problem in error.problems:
            print(problem, file=problems_to)
        print(closing(len(error.problems)), file=sys.stderr)
        return None


def menus_check(args: argparse.Namespace) -> int:
    from ussd_gateway.menus.check import check_screen_budget

    directory, budget, demo = _menu_inputs(args)
    menus = _compiled_or_report(directory, sys.stdout, lambda n: f"{n} problem(s); the server would refuse to start.")
    if menus is None:
        return 1
    problems = check_screen_budget(menus, budget, demo)
    for problem in problems:
        print(problem)
    screens = sum(len(m.screens) for m in menus.menus.values())
    if problems:
        print(f"{len(problems)} problem(s) in {screens} screens.", file=sys.stderr)
        return 1
    print(f"OK: {len(menus.menus)} menus, {screens} screens, 3 languages, services {', '.join(sorted(menus.services))}.")
    return 0


# ---- menus reload / rollback --------------------------------------------------------------
def menus_announce(args: argparse.Namespace) -> int:
    """Tell every worker and instance on the Redis to reload (after checking the
    definitions here) or to roll back to their previous version."""
    from ussd_gateway.app.menu_reload import CHANNEL, MenusRefused, announcement, compile_checked
    from ussd_gateway.app.wiring import menus_directory

    settings = _settings(args)
    if not settings.sessions.redis_url:
        print("menus: the servers are told through Redis; pass --redis-url (or set [sessions] redis_url). "
              "A single server without Redis reloads on SIGHUP.", file=sys.stderr)
        return 2
    op = args.menus_command
    version = None
    if op == "reload":
        directory, budget, demo = _menu_inputs(args)
        try:
            version, _menus = compile_checked(directory or menus_directory(settings), budget, demo)
        except MenusRefused as refused:
            for problem in refused.problems:
                print(problem)
            print(f"{len(refused.problems)} problem(s): nothing was reloaded.", file=sys.stderr)
            return 1

    async def publish() -> int:
        from ussd_gateway.sessions.redis_clients import is_cluster, make_client

        client = make_client(settings.sessions.redis_url, cluster=settings.sessions.cluster)
        try:
            receivers = int(await client.publish(CHANNEL, announcement(op, version, f"cli:{socket.gethostname()}")))
            if is_cluster(client):  # PUBLISH reaches every node but counts the listeners on one
                receivers = sum(int(n) for _channel, n in await client.pubsub_numsub(CHANNEL, target_nodes=client.ALL_NODES))
            return receivers
        finally:
            await client.aclose()

    receivers = asyncio.run(publish())
    what = f"reload (version {version})" if version else "rollback"
    print(f"{what} announced to {receivers} server process(es)")
    return 0 if receivers else 1


# ---- menus graph --------------------------------------------------------------------------
def menus_graph(args: argparse.Namespace) -> int:
    from ussd_gateway.menus.graph import GraphvizMissing, render_graph

    directory, budget, demo = _menu_inputs(args)
    menus = _compiled_or_report(directory, sys.stderr, lambda _: "The menu definitions do not compile; run `ussd-gateway menus check`.")
    if menus is None:
        return 1
    try:
        drawing = render_graph(menus, args.format, lang=args.lang, budget=budget, demo_data=demo)
    except GraphvizMissing as error:
        print(f"menus graph: {error}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_bytes(drawing)
        print(f"wrote {args.output} ({args.format}, {len(drawing):,} bytes)", file=sys.stderr)
    else:
        sys.stdout.buffer.write(drawing)
        sys.stdout.flush()
    return 0


# ---- load ---------------------------------------------------------------------------------
def load(args: argparse.Namespace) -> int:
    from ussd_gateway.testkit.load import LoadOptions, main as load_main, validate

    options = LoadOptions(
        sessions=args.sessions,
        concurrency=args.concurrency,
        url=args.url,
        smpp=args.smpp,
        channel=args.channel,
        transcript=args.transcript,
        deadline_ms=args.deadline_ms,
        timeout_s=args.timeout,
        max_seconds=args.max_seconds,
        msisdn_prefix=args.msisdn_prefix,
        seed=args.seed,
        progress=not args.no_progress,
        keep_msisdn=args.keep_msisdn,
    )
    problems = validate(options)
    if args.transcript and not Path(args.transcript).is_file():
        problems.append(f"--transcript {args.transcript}: no such file")
    elif args.transcript:
        from ussd_gateway.testkit.transcripts import TranscriptError, load_transcript

        try:
            load_transcript(args.transcript)
        except TranscriptError as error:
            problems.append(str(error))
    for problem in problems:
        print(f"load: {problem}", file=sys.stderr)
    if problems:
        return 2
    try:
        return load_main(options, as_json=args.json)
    except KeyboardInterrupt:  # before the run had started (its own handler takes over then)
        print("load: interrupted before the run started", file=sys.stderr)
        return 130


# ---- feedback -----------------------------------------------------------------------------
def feedback_list(args: argparse.Namespace) -> int:
    from ussd_gateway.backend import build_backend

    settings = _settings(args)
    if not settings.sessions.redis_url:
        print(
            "Feedback is kept by the running server's backend; with the memory store it lives in that process only. "
            "Pass --redis-url (or set [sessions] redis_url) to read it from Redis.",
            file=sys.stderr,
        )
        return 2

    async def fetch() -> int:
        import json

        from ussd_gateway.sessions.redis_clients import make_client

        client = make_client(settings.sessions.redis_url, cluster=settings.sessions.cluster)
        backend = build_backend("demo", redis_client=client)
        try:
            for item in await backend.list_feedback(args.limit):
                print(json.dumps({"at": item.at, "msisdn": item.msisdn, "topic": item.topic, "message": item.message}, ensure_ascii=False))
        finally:
            await backend.close()
            await client.aclose()
        return 0

    return asyncio.run(fetch())


# ---- smsc ---------------------------------------------------------------------------------
def smsc(args: argparse.Namespace) -> int:
    """Run the SMSC simulator until Ctrl-C/SIGTERM, printing one line per PDU (MSISDNs
    masked: the terminal output is a log like any other)."""
    from ussd_gateway.testkit.smsc import LoggedPdu, SmscSimulator, format_pdu

    from ussd_gateway.core.msisdn import mask_msisdn

    def show(entry: LoggedPdu) -> None:
        print(format_pdu(entry, mask=mask_msisdn), flush=True)

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        simulator = SmscSimulator(
            args.host,
            args.port,
            {args.system_id: args.password},
            control_port=args.control_port or None,
            enquire_link_s=args.enquire_link or None,
            on_pdu=None if args.quiet else show,
            preset=args.preset,
        )
        if args.receipts:
            simulator.auto_receipts = lambda _to: args.receipts
        async with simulator:
            control = f", control API http://127.0.0.1:{simulator.control_port}" if simulator.control_port else ""
            print(f"SMSC simulator on {args.host}:{simulator.port}{control} (system_id {args.system_id})", flush=True)
            await stopping.wait()

    asyncio.run(run())
    return 0


def _sim(args: argparse.Namespace) -> int:
    from ussd_gateway.testkit.sim import run_sim

    if args.smpp and args.lang:
        print("sim: --lang works over HTTP only; over SMPP choose the language in menu 7", file=sys.stderr)
        return 2
    if args.wait_push and args.record:
        print("sim: --record records dialled sessions; a pushed one has no transcript form", file=sys.stderr)
        return 2
    if args.wait_push and not args.smpp:
        print("sim: --wait-push works over SMPP (--smpp HOST:PORT); the web phone /sim receives pushes over HTTP", file=sys.stderr)
        return 2
    return run_sim(
        url=args.url, msisdn=args.msisdn, code=args.code, lang=args.lang, smpp=args.smpp, record=args.record, wait_push=args.wait_push
    )


def _replay(args: argparse.Namespace) -> int:
    from ussd_gateway.testkit.replay import parse_vars, replay

    channel = args.channel or ("smpp" if args.smpp else "json")
    if channel == "smpp" and not args.smpp:
        print("replay: --channel smpp needs --smpp HOST:PORT (the SMSC simulator's control API)", file=sys.stderr)
        return 2
    if channel != "smpp" and args.smpp:
        print(f"replay: --smpp drives the SMPP channel; drop --channel {channel} or use --url", file=sys.stderr)
        return 2
    if args.concurrency < 1 or not 0 < args.step_timeout <= 120:
        print("replay: --concurrency must be at least 1 and --step-timeout in (0, 120] seconds", file=sys.stderr)
        return 2
    try:
        variables = parse_vars(args.var)
    except ValueError as error:
        print(f"replay: {error}", file=sys.stderr)
        return 2
    return replay(
        args.paths,
        channel=channel,
        url=args.url or "http://127.0.0.1:8080",
        smpp=args.smpp,
        concurrency=args.concurrency,
        junit=args.junit,
        variables=variables,
        step_timeout_s=args.step_timeout,
    )
