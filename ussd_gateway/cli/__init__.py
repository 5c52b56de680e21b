"""The `ussd-gateway` command: serve, menus check, menus graph, sim, load, feedback, push, campaign."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ussd_gateway.app.config import ConfigError

from ussd_gateway.cli.campaigns import add_parser as add_campaign_parser
from ussd_gateway.cli import push as push_command
from ussd_gateway.cli.serving import serve
from ussd_gateway.cli.tools import (
    _replay,
    _sim,
    feedback_list,
    load,
    menus_announce,
    menus_check,
    menus_graph,
    smsc,
)


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
    s.add_argument("--wait-push", type=float, default=0.0, metavar="SECONDS",
                   help="with --smpp: dial nothing, wait this long for a USSD push to --msisdn and answer it")
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
    m.add_argument("--receipts", metavar="STATE", choices=("DELIVRD", "UNDELIV", "EXPIRED", "REJECTD"),
                   help="answer every SMS that asks for a delivery receipt with one in this state (default: none)")
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

    push_command.add_parser(commands)
    add_campaign_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as error:
        from ussd_gateway.core.secrets import scrub

        print(f"configuration error: {scrub(str(error))}", file=sys.stderr)
        return 2
