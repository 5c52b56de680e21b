"""Random requests to every endpoint of a gateway started on 127.0.0.1; counts per
endpoint and status. Any 5xx or `timeout` (no answer within 5 s) is a bug.

    .venv/bin/python benchmarks/fuzz_http.py [--requests 100000] [--seed 0] [--json]

The server runs on the embedded defaults (in-memory store, loopback, so every route is
open) with the per-caller rate off: all the traffic comes from this one address, and a
429 would hide how the endpoints handle the input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ussd_gateway.app.config import Settings  # noqa: E402
from ussd_gateway.testkit.http_fuzz import ENDPOINTS, RunningServer, fuzz  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000, help="in total, spread evenly over the endpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings().replace("limits", peer_requests_per_second=0, msisdn_hops_per_minute=0,
                                  msisdn_sessions_per_minute=0, msisdn_sms_per_minute=0)
    import logging
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    started = time.monotonic()
    with RunningServer(settings) as server:
        counts = fuzz(server, max(1, args.requests // len(ENDPOINTS)), seed=args.seed)
    elapsed = time.monotonic() - started
    # /menus/graph answers 503 "Graphviz is not installed" where `dot` is missing: documented, not a bug.
    graphviz_missing = counts["/menus/graph"].get("503", 0)
    bad = sum(n for c in counts.values() for status, n in c.items() if status == "timeout" or status.startswith("5")) - graphviz_missing
    if args.json:
        print(json.dumps({"seconds": round(elapsed, 1), "counts": {p: dict(c) for p, c in counts.items()}, "bad": bad}))
    else:
        for path, c in counts.items():
            print(f"{path:22} " + "  ".join(f"{status}: {n}" for status, n in sorted(c.items())))
        print(f"{sum(sum(c.values()) for c in counts.values())} requests in {elapsed:.0f} s; 5xx or timeouts: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
