"""`ussd-gateway push`: begin a USSD dialogue on a subscriber's phone through a
running server (`POST /admin/ussd/push`, docs/campaigns.md "USSD push")."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser("push", help="push a USSD screen (e.g. a campaign offer) to a subscriber's phone through a running server")
    p.add_argument("msisdn", help="the subscriber")
    p.add_argument("entry", nargs="?", default="offer:start", help="the push entry of the menus (default offer:start)")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="a variable set before the screen (e.g. offer_code=MAX90)")
    p.add_argument("--bind", default="", help='the SMPP bind (default: the first one up); "web" for the web phone /sim')
    p.add_argument("--notify", action="store_true", help="notify only (USSN): no answer expected, the dialogue ends")
    p.add_argument("--care", action="store_true", help="a care/campaign push: refused in quiet hours and to subscribers who opted out")
    p.add_argument("--lang", choices=("vi", "vi_dau", "en"), help="default: the subscriber's remembered language")
    p.add_argument("--source", default="", help="source_addr of the submit_sm (default: the service code, e.g. *090)")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the server (default the local one)")
    p.add_argument("--token", help="the admin token (default: $USSD_ADMIN_TOKEN)")
    p.set_defaults(func=push)


def push(args: argparse.Namespace) -> int:
    variables: dict[str, str] = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"push: --var takes NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        variables[name] = value
    body: dict[str, object] = {"msisdn": args.msisdn, "entry": args.entry, "vars": variables, "notify": args.notify, "care": args.care}
    for key in ("bind", "lang", "source"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    headers = {"Content-Type": "application/json"}
    token = args.token or os.environ.get("USSD_ADMIN_TOKEN", "")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(args.url.rstrip("/") + "/admin/ussd/push", data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        print(f"push: refused ({error.code}): {error.read().decode(errors='replace').strip()}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"push: cannot reach {args.url}: {getattr(error, 'reason', error)}. Is `ussd-gateway serve` running?", file=sys.stderr)
        return 1
    kind = "notify (USSN)" if answer.get("end") else "request (USSR)"
    print(f"pushed {kind} via {answer.get('bind')}, session {answer.get('session_id')}, screen {answer.get('screen')}:")
    print(answer.get("text", ""))
    return 0
