"""The `ussd-gateway` command: serve, menus check, menus graph, sim, load, feedback, campaign."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ussd_gateway.app.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from ussd_gateway.menus.model import MenuSet
    from ussd_gateway.menus.text import ScreenBudget


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(getattr(args, "config", None))
    if getattr(args, "host", None):
        settings = settings.replace("http", host=args.host)
    if getattr(args, "port", None) is not None:
        settings = settings.replace("http", port=args.port)
    if getattr(args, "redis_url", None):
        settings = settings.replace("sessions", redis_url=args.redis_url)
    return settings


# ---- serve --------------------------------------------------------------------------------
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

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the server reloads menus on it
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

    settings = _settings(args)
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
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.sessions.redis_url)
        try:
            return int(await client.publish(CHANNEL, announcement(op, version, f"cli:{socket.gethostname()}")))
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

        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.sessions.redis_url)
        backend = build_backend("demo", redis_client=client)
        try:
            for item in await backend.list_feedback(args.limit):
                print(json.dumps({"at": item.at, "msisdn": item.msisdn, "topic": item.topic, "message": item.message}, ensure_ascii=False))
        finally:
            await backend.close()
            await client.aclose()
        return 0

    return asyncio.run(fetch())


# ---- campaign -----------------------------------------------------------------------------
def campaign(args: argparse.Namespace) -> int:
    """`campaign create|preview|start|pause|resume|cancel|status|list`, on the Redis the
    servers share (a running server with SMPP binds sends a started campaign)."""
    import json

    settings = _settings(args)
    if not settings.sessions.redis_url:
        print("campaign: campaigns live in Redis; pass --redis-url or set [sessions] redis_url", file=sys.stderr)
        return 2

    async def run() -> int:
        import redis.asyncio as aioredis

        from ussd_gateway.backend import build_backend
        from ussd_gateway.campaigns.book import CampaignBook, create_from_spec
        from ussd_gateway.core.errors import BadRequest

        client = aioredis.Redis.from_url(settings.sessions.redis_url)
        b = settings.backend
        backend = build_backend(b.kind, redis_client=client, demo_data_path=b.demo_data or None, http_url=b.http_url or None,
                                http_timeout_s=b.http_timeout_ms / 1000, http_token=b.http_token or None)
        book = CampaignBook(client, backend, settings.campaigns)
        action = args.campaign_command
        try:
            if action == "create":
                texts = {"vi": args.vi, "vi_dau": args.vi_dau or "", "en": args.en or ""}
                spec = {"name": args.name, "texts": texts, "sender": args.sender, "limits": {"max_parts": args.max_parts, "max_messages": args.max_messages}}
                if args.csv:
                    spec["csv"] = Path(args.csv).read_text(encoding="utf-8-sig")
                if args.filter is not None:
                    spec["filter"] = args.filter
                result = await create_from_spec(book, spec)
            elif action == "preview":
                result = await book.preview(args.id, args.sample)
            elif action in ("start", "pause", "resume", "cancel"):
                result = {"id": args.id, "status": await book.move(args.id, action)}
            elif action == "status":
                result = await book.status(args.id)
            else:
                result = [await book.status(campaign_id) for campaign_id in await book.ids()]
        except (BadRequest, OSError) as error:
            print(f"campaign {action}: {error}", file=sys.stderr)
            return 1
        finally:
            await backend.close()
            await client.aclose()
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0

    return asyncio.run(run())


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
        async with simulator:
            control = f", control API http://127.0.0.1:{simulator.control_port}" if simulator.control_port else ""
            print(f"SMSC simulator on {args.host}:{simulator.port}{control} (system_id {args.system_id})", flush=True)
            await stopping.wait()

    asyncio.run(run())
    return 0


# ---- entry point --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ussd-gateway", description="USSD and short-code self-service server.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run the server")
    p.add_argument("--config", help="a config.toml (default: ./config.toml if present, else embedded defaults)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--redis-url", help="keep sessions and demo data in Redis (redis://, rediss://, unix://)")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (needs --redis-url when > 1)")
    p.set_defaults(func=serve)

    menus = commands.add_parser("menus", help="menu definitions").add_subparsers(dest="menus_command", required=True)
    c = menus.add_parser("check", help="validate every menu definition")
    c.add_argument("--config")
    c.add_argument("--dir", help="a folder of definitions (default: the configured or packaged one)")
    c.set_defaults(func=menus_check)

    for name, text in (("reload", "check the definitions, then have every server on the Redis reload them"),
                       ("rollback", "have every server on the Redis go back to its previous menu version")):
        a = menus.add_parser(name, help=text)
        a.add_argument("--config")
        a.add_argument("--redis-url")
        if name == "reload":
            a.add_argument("--dir", help="a folder of definitions to check first (default: the configured or packaged one)")
        a.set_defaults(func=menus_announce)

    g = menus.add_parser("graph", help="draw every menu: screens, options, actions, paging (Mermaid, DOT or SVG)")
    g.add_argument("--format", choices=("mermaid", "dot", "svg"), default="mermaid", help="default mermaid; svg runs Graphviz's `dot`")
    g.add_argument("--output", "-o", help="write to this file (default: standard output)")
    g.add_argument("--lang", choices=("vi", "vi_dau", "en"), default="vi", help="the language of labels (default vi)")
    g.add_argument("--config")
    g.add_argument("--dir", help="a folder of definitions (default: the configured or packaged one)")
    g.set_defaults(func=menus_graph)

    s = commands.add_parser("sim", help="an interactive phone in the terminal")
    s.add_argument("code", nargs="?", default="*090#", help="the USSD code to dial (default *090#)")
    s.add_argument("--url", default="http://127.0.0.1:8080", help="the server (default the local one)")
    s.add_argument("--msisdn", default="84901234567", help="the subscriber (default the demo's 84901234567)")
    s.add_argument("--lang", choices=("vi", "vi_dau", "en"), help="the handset language")
    s.add_argument("--smpp", metavar="HOST:PORT", help="dial through `ussd-gateway smsc`'s control API (e.g. 127.0.0.1:2776) instead of HTTP")
    s.add_argument("--record", metavar="FILE", help="write the session played as a transcript to FILE (see docs/transcripts.md)")
    s.set_defaults(func=_sim)

    r = commands.add_parser("replay", help="run session transcripts against a running server (docs/transcripts.md)")
    r.add_argument("paths", nargs="+", metavar="PATH", help="transcript files or folders of *.toml (e.g. sessions/transcripts)")
    where = r.add_mutually_exclusive_group()
    where.add_argument("--url", help="the server over HTTP (default http://127.0.0.1:8080)")
    where.add_argument("--smpp", metavar="HOST:PORT", help="the SMSC simulator's control API the server is bound to (e.g. 127.0.0.1:2776)")
    r.add_argument("--channel", choices=("africastalking", "json", "smpp"), help="default: json with --url, smpp with --smpp")
    r.add_argument("--concurrency", type=int, default=8, help="transcripts at once (one subscriber's run in turn; default 8)")
    r.add_argument("--junit", metavar="FILE", help="write JUnit XML (one testcase per transcript) for CI")
    r.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="a variable for {NAME} (repeatable; e.g. msisdn=84910000001)")
    r.add_argument("--step-timeout", type=float, default=10.0, help="seconds a step may take before it fails (default 10)")
    r.set_defaults(func=_replay)

    m = commands.add_parser("smsc", help="an SMPP SMSC simulator to bind the gateway to (development, tests)")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=2775, help="SMPP port (default 2775; 0: any free port)")
    m.add_argument("--control-port", type=int, default=2776, help="HTTP control API on 127.0.0.1 (default 2776; 0: off)")
    m.add_argument("--system-id", default="ussdgw", help="the system_id accepted on bind (default ussdgw)")
    m.add_argument("--password", default="secret", help="its password (default secret)")
    m.add_argument("--enquire-link", type=float, default=30.0, help="seconds between our enquire_link (0: never)")
    m.add_argument("--quiet", action="store_true", help="do not print every PDU")
    m.add_argument("--preset", help="emulate a USSD gateway of smpp/presets/ (3gpp, sixdee, mica, msisdn; default 3gpp)")
    m.set_defaults(func=smsc)

    ld = commands.add_parser("load", help="drive many simulated subscribers against a running server")
    ld.add_argument("--url", default="http://127.0.0.1:8080", help="the server (default the local one)")
    ld.add_argument("--smpp", metavar="HOST:PORT", help="dial through `ussd-gateway smsc`'s control API instead of HTTP")
    ld.add_argument("--channel", choices=("africastalking", "json"), default="africastalking", help="HTTP dialect (default africastalking)")
    ld.add_argument("--sessions", type=int, default=100, help="dialogues to run (default 100)")
    ld.add_argument("--concurrency", type=int, default=10, help="virtual subscribers at once, one connection each (default 10)")
    ld.add_argument("--transcript", metavar="FILE", help="run this transcript ({msisdn} set per dialogue) instead of the built-in mix")
    ld.add_argument("--deadline-ms", type=float, default=1000.0, help="the gateway's per-screen deadline (default 1000)")
    ld.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for one hop before counting a timeout (default 5)")
    ld.add_argument("--max-seconds", type=float, default=300.0, help="stop after this long whatever is left (default 300)")
    ld.add_argument("--msisdn-prefix", default="8497", help="numbers dialled: this prefix + digits up to 11 (default 8497)")
    ld.add_argument("--seed", type=int, help="repeat the same mix and numbers")
    ld.add_argument("--keep-msisdn", action="store_true", help="a transcript naming its subscriber: every dialogue from that number (default: each its own)")
    ld.add_argument("--json", action="store_true", help="print one JSON object")
    ld.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    ld.set_defaults(func=load)

    f = commands.add_parser("feedback", help="subscribers' feedback").add_subparsers(dest="feedback_command", required=True)
    fl = f.add_parser("list", help="print the latest feedback, newest first, one JSON object a line")
    fl.add_argument("--config")
    fl.add_argument("--redis-url")
    fl.add_argument("--limit", type=int, default=100)
    fl.set_defaults(func=feedback_list)

    cp = commands.add_parser("campaign", help="care campaigns: create, preview, start, pause, resume, cancel, status, list (docs/campaigns.md)")
    cs = cp.add_subparsers(dest="campaign_command", required=True)
    cc = cs.add_parser("create", help="a draft campaign from a CSV of MSISDNs or a subscriber filter")
    cc.add_argument("name")
    cc.add_argument("--vi", required=True, help="the text without diacritics, e.g. 'Chao {name}, ban co {points|number} diem'")
    cc.add_argument("--vi-dau", help="the text with diacritics (default: the vi text)")
    cc.add_argument("--en", help="the English text (default: the vi text)")
    cc.add_argument("--sender", help="short code or brandname (default: [campaigns] default_sender)")
    target = cc.add_mutually_exclusive_group(required=True)
    target.add_argument("--csv", help="a CSV file: MSISDN first; a header row names per-row variables")
    target.add_argument("--filter", help="e.g. 'tier=Vang,Kim_cuong points>=10000 arpu=50000-200000 has=MAX90 lacks=D15 kndl=yes'")
    cc.add_argument("--max-parts", type=int, default=2, help="skip a subscriber whose text needs more SMS than this")
    cc.add_argument("--max-messages", type=int, default=0, help="stop after this many SMS (0: the whole target)")
    pv = cs.add_parser("preview", help="targets, SMS parts and sample texts, before starting")
    pv.add_argument("id")
    pv.add_argument("--sample", type=int, default=3)
    for name, text in (("start", "start sending"), ("pause", "stop sending for now"), ("resume", "continue a paused campaign"),
                       ("cancel", "stop for good"), ("status", "counts: sent, delivered, failed, opted out, capped, held")):
        cs.add_parser(name, help=text).add_argument("id")
    cs.add_parser("list", help="every campaign's status")
    for sub in cs.choices.values():
        sub.add_argument("--config")
        sub.add_argument("--redis-url")
    cp.set_defaults(func=campaign)
    return parser


def _sim(args: argparse.Namespace) -> int:
    from ussd_gateway.testkit.sim import run_sim

    if args.smpp and args.lang:
        print("sim: --lang works over HTTP only; over SMPP choose the language in menu 7", file=sys.stderr)
        return 2
    return run_sim(url=args.url, msisdn=args.msisdn, code=args.code, lang=args.lang, smpp=args.smpp, record=args.record)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as error:
        from ussd_gateway.core.secrets import scrub

        print(f"configuration error: {scrub(str(error))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
