"""`ussd-gateway report`: the menus' funnels for a time window, from Redis: per screen,
dialogues that reached it, ended on it, timed out on it, and the drop-off there.
A terminal table, JSON, or an SVG of funnel bars (docs/funnels.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape

from ussd_gateway.cli.serving import settings_from

_SPAN = re.compile(r"^(\d+)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


@dataclass(frozen=True, slots=True)
class Row:
    screen: str
    reached: int
    ended: int
    timed_out: int

    @property
    def drop_off(self) -> float | None:
        """Share of the dialogues that reached the screen and timed out on it."""
        return self.timed_out / self.reached if self.reached else None


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    r = commands.add_parser("report", help="the menus' funnels: reached, ended, timed out and drop-off per screen (docs/funnels.md)")
    r.add_argument("--menu", action="append", help="only this menu (repeatable; default: every menu counted)")
    r.add_argument("--since", default="", help="a window ending now: 30m, 1h, 7d (default 1h)")
    r.add_argument("--from", dest="start", help="window start, ISO 8601 (UTC unless an offset is given)")
    r.add_argument("--to", dest="end", help="window end, ISO 8601 (default: now)")
    r.add_argument("--svg", help="also write the funnels as an SVG file")
    r.add_argument("--json", action="store_true", help="print JSON instead of the table")
    r.add_argument("--config")
    r.add_argument("--redis-url")
    r.set_defaults(func=report)


def parse_when(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def window(since: str, start: str | None, end: str | None, now: datetime) -> tuple[datetime, datetime]:
    """The report's window; ValueError with a reason when the flags make none."""
    if since and start:
        raise ValueError("give --since or --from, not both")
    stop = parse_when(end) if end else now
    if start:
        begin = parse_when(start)
    else:
        match = _SPAN.match(since or "1h")
        if match is None:
            raise ValueError(f"--since wants a number and a unit (s, m, h, d), like 30m or 7d; got {since!r}")
        begin = datetime.fromtimestamp(stop.timestamp() - int(match[1]) * _SECONDS[match[2]], timezone.utc)
    if begin >= stop:
        raise ValueError("the window's start must come before its end")
    return begin, stop


def rows_of(screens: dict[str, dict[str, int]]) -> list[Row]:
    """A menu's screens, the most reached first (a funnel narrows downwards)."""
    rows = [Row(screen, c.get("reached", 0), c.get("ended", 0), c.get("timed_out", 0)) for screen, c in screens.items()]
    return sorted(rows, key=lambda row: (-row.reached, -row.ended - row.timed_out, row.screen))


def table(menus: dict[str, list[Row]], begin: datetime, end: datetime) -> str:
    lines = [f"Funnels {begin:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"]
    if not menus:
        lines.append("(no dialogues counted in this window)")
    for menu, rows in menus.items():
        width = max(len("screen"), *(len(row.screen) for row in rows))
        lines += ["", f"menu {menu}", f"{'screen':<{width}}  {'reached':>8}  {'ended':>8}  {'timed out':>9}  {'drop-off':>8}"]
        for row in rows:
            drop = f"{row.drop_off:.1%}" if row.drop_off is not None else "-"
            lines.append(f"{row.screen:<{width}}  {row.reached:>8}  {row.ended:>8}  {row.timed_out:>9}  {drop:>8}")
        # All of the menu: the drop-off against its most reached screen (the funnel's top).
        ended, timed_out = sum(r.ended for r in rows), sum(r.timed_out for r in rows)
        lines.append(f"{'(all)':<{width}}  {rows[0].reached:>8}  {ended:>8}  {timed_out:>9}  {_share(timed_out, rows[0].reached):>8}")
    return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


BAR_W, ROW_H, LABEL_W = 420, 22, 260


def svg(menus: dict[str, list[Row]], begin: datetime, end: datetime) -> str:
    """Funnel bars: per screen a grey bar as long as the dialogues that reached it,
    with the part that ended there (green) and timed out there (red) marked on it."""
    height = 40 + sum(30 + ROW_H * len(rows) for rows in menus.values()) + 30
    width = LABEL_W + BAR_W + 170
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">Funnels {begin:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC</text>',
    ]
    y = 40
    for menu, rows in menus.items():
        top = max([row.reached for row in rows] + [row.ended + row.timed_out for row in rows] + [1])
        out.append(f'<text x="10" y="{y + 18}" font-size="14" font-weight="bold">menu {escape(menu)}</text>')
        y += 30
        for row in rows:
            scale = BAR_W / top
            reached_w = round(row.reached * scale, 1)
            ended_w = round(row.ended * scale, 1)
            timed_w = round(row.timed_out * scale, 1)
            drop = f"{row.drop_off:.1%}" if row.drop_off is not None else "-"
            out += [
                f'<g class="screen" data-screen="{escape(row.screen)}" data-reached="{row.reached}" data-ended="{row.ended}" data-timed-out="{row.timed_out}">',
                f'<text x="10" y="{y + 15}">{escape(row.screen)}</text>',
                f'<rect x="{LABEL_W}" y="{y + 3}" width="{reached_w}" height="{ROW_H - 6}" fill="#c8cdd3"><title>reached {row.reached}</title></rect>',
                f'<rect x="{LABEL_W}" y="{y + 3}" width="{ended_w}" height="{ROW_H - 6}" fill="#3a9d5d"><title>ended {row.ended}</title></rect>',
                f'<rect x="{LABEL_W + ended_w}" y="{y + 3}" width="{timed_w}" height="{ROW_H - 6}" fill="#d9534f"><title>timed out {row.timed_out}</title></rect>',
                f'<text x="{LABEL_W + BAR_W + 10}" y="{y + 15}">{row.reached} · drop-off {drop}</text>',
                "</g>",
            ]
            y += ROW_H
    out += [
        f'<rect x="10" y="{y + 8}" width="12" height="12" fill="#c8cdd3"/><text x="26" y="{y + 18}">reached</text>',
        f'<rect x="90" y="{y + 8}" width="12" height="12" fill="#3a9d5d"/><text x="106" y="{y + 18}">ended</text>',
        f'<rect x="160" y="{y + 8}" width="12" height="12" fill="#d9534f"/><text x="176" y="{y + 18}">timed out</text>',
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def report(args: argparse.Namespace) -> int:
    from ussd_gateway.sessions.funnel_store import minute_of, read_counts

    settings = settings_from(args)
    if not settings.sessions.redis_url:
        print("The funnels are counted in Redis: pass --redis-url (or set [sessions] redis_url).", file=sys.stderr)
        return 2
    try:
        begin, end = window(args.since, args.start, args.end, datetime.now(timezone.utc))
    except ValueError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2

    async def fetch() -> dict[str, dict[str, dict[str, int]]]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.sessions.redis_url)
        try:
            return await read_counts(client, minute_of(begin.timestamp()), minute_of(end.timestamp()), args.menu)
        finally:
            await client.aclose()

    try:
        counts = asyncio.run(fetch())
    except OSError as error:
        print(f"report: cannot reach Redis: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # redis-py's ConnectionError and friends
        print(f"report: cannot read the funnels from Redis: {error.__class__.__name__}", file=sys.stderr)
        return 1
    menus = {menu: rows_of(screens) for menu, screens in counts.items()}
    if args.svg:
        Path(args.svg).write_text(svg(menus, begin, end), encoding="utf-8")
    if args.json:
        body = {
            "from": begin.isoformat(),
            "to": end.isoformat(),
            "menus": {
                menu: [
                    {"screen": r.screen, "reached": r.reached, "ended": r.ended, "timed_out": r.timed_out, "drop_off": r.drop_off}
                    for r in rows
                ]
                for menu, rows in menus.items()
            },
        }
        print(json.dumps(body, indent=2))
    else:
        print(table(menus, begin, end))
    return 0
