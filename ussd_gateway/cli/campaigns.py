"""`ussd-gateway campaign create|preview|start|pause|resume|cancel|status|list`, on the
Redis the servers share (a running server with SMPP binds sends a started campaign).

`status --chart` draws the per-hour counts as text bars, `--svg FILE` writes them as
an SVG; `start|resume|status --follow` shows a progress bar (on a terminal; elsewhere a
line every `--interval` seconds) until the campaign is done, paused or cancelled, or
Ctrl-C (the campaign goes on: only the watching stops).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ussd_gateway.cli.serving import settings_from as _settings

STOPPED = ("done", "paused", "cancelled")
"""A followed campaign in one of these is no longer sending: following ends."""


def add_parser(commands: Any) -> None:
    """The `campaign` command and its subcommands."""
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
    cc.add_argument("--follow-up", metavar="CODE", default="", help="where the text sends them, e.g. '*090*4#' (shown in status)")
    cc.add_argument("--window-days", type=float, default=0, help="purchases within this many days count (default: [campaigns] attribution_days)")
    cc.add_argument("--packages", default="", help="only purchases of these packages count, e.g. MAX90,D15 (default: any)")
    cc.add_argument("--via", default="ussd,sms", help="channels whose purchases count: ussd, sms or both (default both)")
    pv = cs.add_parser("preview", help="targets, SMS parts and sample texts, before starting")
    pv.add_argument("id")
    pv.add_argument("--sample", type=int, default=3)
    for name, text in (("start", "start sending"), ("pause", "stop sending for now"), ("resume", "continue a paused campaign"),
                       ("cancel", "stop for good"), ("status", "counts: sent, delivered, failed, opted out, capped, held, conversions")):
        sub = cs.add_parser(name, help=text)
        sub.add_argument("id")
        if name in ("start", "resume", "status"):
            sub.add_argument("--follow", action="store_true", help="show progress until done, paused or cancelled (Ctrl-C stops watching)")
            sub.add_argument("--interval", type=float, default=5.0, help="with --follow off a terminal: seconds between lines (default 5)")
    st = cs.choices["status"]
    st.add_argument("--chart", action="store_true", help="the counts and a per-hour chart as text instead of JSON")
    st.add_argument("--svg", metavar="FILE", help="write the per-hour chart as an SVG file")
    cs.add_parser("list", help="every campaign's status")
    for sub in cs.choices.values():
        sub.add_argument("--config")
        sub.add_argument("--redis-url")
    cp.set_defaults(func=campaign)


def campaign(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.sessions.redis_url:
        print("campaign: campaigns live in Redis; pass --redis-url or set [sessions] redis_url", file=sys.stderr)
        return 2
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Any) -> int:
    from ussd_gateway.backend import build_backend
    from ussd_gateway.campaigns.book import CampaignBook, create_from_spec
    from ussd_gateway.core.errors import BadRequest

    from ussd_gateway.sessions.redis_clients import make_client

    client = make_client(settings.sessions.redis_url, cluster=settings.sessions.cluster)
    b = settings.backend
    backend = build_backend(b.kind, redis_client=client, demo_data_path=b.demo_data or None, http_url=b.http_url or None,
                            http_timeout_s=b.http_timeout_ms / 1000, http_token=b.http_token or None)
    book = CampaignBook(client, backend, settings.campaigns)
    action = args.campaign_command
    code = 0
    try:
        if action == "create":
            result: Any = await create_from_spec(book, _spec(args))
        elif action == "preview":
            result = await book.preview(args.id, args.sample)
        elif action in ("start", "pause", "resume", "cancel"):
            result = {"id": args.id, "status": await book.move(args.id, action)}
        elif action == "status":
            result = await book.status(args.id)
        else:
            result = [await book.status(campaign_id) for campaign_id in await book.ids()]
        if getattr(args, "follow", False):
            code, result = await follow(book, args.id, sys.stdout, args.interval)
        if action == "status" and args.svg:
            from ussd_gateway.campaigns.chart import svg_chart

            svg = svg_chart(await book.hourly(args.id), f"{args.id}: SMS per hour ({settings.campaigns.timezone})")
            Path(args.svg).write_text(svg, encoding="utf-8")
            print(f"wrote {args.svg}", file=sys.stderr)
        if action == "status" and args.chart:
            print(describe(result, await book.hourly(args.id), settings.campaigns.timezone))
            return code
    except (BadRequest, OSError) as error:
        print(f"campaign {action}: {error}", file=sys.stderr)
        return 1
    finally:
        await backend.close()
        await client.aclose()
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return code


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    texts = {"vi": args.vi, "vi_dau": args.vi_dau or "", "en": args.en or ""}
    spec: dict[str, Any] = {"name": args.name, "texts": texts, "sender": args.sender,
                            "limits": {"max_parts": args.max_parts, "max_messages": args.max_messages}}
    spec["follow_up"] = {
        "code": args.follow_up, "window_days": args.window_days,
        "packages": [p for p in args.packages.split(",") if p.strip()], "via": [v for v in args.via.split(",") if v.strip()],
    }
    if args.csv:
        spec["csv"] = Path(args.csv).read_text(encoding="utf-8-sig")
    if args.filter is not None:
        spec["filter"] = args.filter
    return spec


def progress_line(status: dict[str, Any], width: int = 30) -> str:
    """`[#########.....]  45%  450/1,000 handled · sent 420 · delivered 400 · failed 3 · running`.
    Progress is the targets walked less the SMS still waiting for the SMSC."""
    targets = int(status.get("targets") or 0)
    settled = max(0, int(status.get("handled") or 0) - int(status.get("waiting") or 0))
    share = 1.0 if status.get("status") == "done" else (min(1.0, settled / targets) if targets else 0.0)
    filled = int(share * width)
    note = f" ({status['note']})" if status.get("note") else ""
    return (f"[{'#' * filled}{'.' * (width - filled)}] {share * 100:3.0f}%  {settled:,}/{targets:,}"
            f" · sent {status['sent']:,} · delivered {status['delivered']:,} · failed {status['failed'] + status['expired']:,}"
            f" · {status['status']}{note}")


async def follow(book: Any, campaign_id: str, out: TextIO, interval: float = 5.0) -> tuple[int, dict[str, Any]]:
    """Show progress until the campaign stops sending (0) or Ctrl-C (130). On a
    terminal one line redrawn in place; elsewhere a line every `interval` seconds."""
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    tty = out.isatty()
    last_line = float("-inf")
    try:
        while True:
            status = await book.status(campaign_id)
            line = progress_line(status)
            finished = status["status"] in STOPPED or status["status"] == "draft"
            if tty:
                out.write("\r\033[K" + line)
            elif finished or time.monotonic() - last_line >= interval:
                out.write(line + "\n")
                last_line = time.monotonic()
            out.flush()
            if finished or interrupted.is_set():
                if tty:
                    out.write("\n")
                if interrupted.is_set() and not finished:
                    print("stopped watching; the campaign goes on", file=sys.stderr)
                    return 130, status
                return (0 if status["status"] != "draft" else 1), status
            try:
                await asyncio.wait_for(interrupted.wait(), 0.25 if tty else min(interval, 1.0))
            except TimeoutError:
                pass
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def describe(status: dict[str, Any], hours: list[dict[str, Any]], timezone: str) -> str:
    """`status --chart`: the counts in a few lines, then the per-hour bars."""
    from ussd_gateway.campaigns.chart import text_chart

    follow_up = f" · follow-up {status['follow_up']}" if status.get("follow_up") else ""
    lines = [
        f"{status['name']} ({status['id']}): {status['status']}" + (f" - {status['note']}" if status.get("note") else ""),
        f"targets {status['targets']:,} · handled {status['handled']:,} · queued {status['queued']:,} · sent {status['sent']:,}"
        f" · delivered {status['delivered']:,} · failed {status['failed']:,} · expired {status['expired']:,}",
        f"opted out {status['opted_out']:,} · capped {status['capped']:,} · too long {status['too_long']:,} · held {status['held']:,}",
        f"conversions {status['conversions']:,} · revenue {status['revenue']:,} đ{follow_up}",
        "",
        f"per hour ({timezone}):",
        text_chart(hours),
    ]
    return "\n".join(lines)
