"""The load run's report: one JSON-ready dict, its text form, and the exit status.

`report` turns what the run counted into latency percentiles, errors by kind, HTTP
statuses, dialogues over the deadline and the mix actually run; `format_report` prints
it for a person, and `exit_status` is 0 when every dialogue finished without error
within the deadline, 1 otherwise, 130 when interrupted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ussd_gateway.testkit.load.client import percentile
from ussd_gateway.testkit.load.diallers import ERROR_KINDS
from ussd_gateway.testkit.load.options import target_url
from ussd_gateway.testkit.load.tally import Run


def report(run: Run, wall: float) -> dict[str, Any]:
    """The run's report as one JSON-ready dict (`wall`: the seconds it ran)."""
    options, tally = run.options, run.tally
    ordered = sorted(tally.latencies)
    ms = 1000.0

    def rounded(value: float) -> float | None:
        return None if math.isnan(value) else round(value * ms, 2)

    failed = sum(tally.errors.values())
    result: dict[str, Any] = {
        "channel": "smpp" if options.smpp else options.channel,
        "target": target_url(options),
        "transcript": options.transcript,
        "sessions": options.sessions,
        "concurrency": options.concurrency,
        "stopped": run.stopped,
        "seconds": round(wall, 3),
        "dialogues": {
            "planned": run.planned,
            "started": tally.started,
            "finished": tally.finished,
            "ok": tally.ok,
            "failed": failed,
            "cut": tally.started - tally.finished,
        },
        "hops": len(ordered),
        "hops_per_s": round(len(ordered) / wall, 1) if wall > 0 else 0.0,
        "latency_ms": {
            "p50": rounded(percentile(ordered, 0.50)),
            "p95": rounded(percentile(ordered, 0.95)),
            "p99": rounded(percentile(ordered, 0.99)),
            "max": rounded(ordered[-1]) if ordered else None,
        },
        "errors": {"total": failed, **{kind: tally.errors.get(kind, 0) for kind in ERROR_KINDS}},
        "http_statuses": dict(sorted(tally.statuses.items())),
        "deadline_ms": options.deadline_ms,
        "over_deadline": tally.over_deadline,
        "mix": dict(sorted(tally.mix.items(), key=lambda kv: (-kv[1], kv[0]))),
        "msisdns": f"{run.msisdn(0)}..." if run.planned else "",
    }
    if tally.examples:
        result["error_examples"] = tally.examples
    return result


def exit_status(result: Mapping[str, Any]) -> int:
    """0 when every dialogue finished without error within the deadline, 1 otherwise, 130 when interrupted."""
    if result["stopped"] == "interrupted":
        return 130
    return 1 if result["errors"]["total"] or result["over_deadline"] else 0


def format_report(result: Mapping[str, Any]) -> str:
    """The report as lines for a person."""
    d, lat, errors = result["dialogues"], result["latency_ms"], result["errors"]
    what = f"transcript {result['transcript']}" if result["transcript"] else "the built-in mix"
    channel = {"africastalking": "Africa's Talking", "json": "JSON", "smpp": "SMPP (simulator)"}[result["channel"]]
    lines = [
        f"load: {d['finished']} of {d['planned']} dialogues of {what} at concurrency {result['concurrency']}, "
        f"{channel} via {result['target']}, {result['seconds']:.1f} s",
    ]
    if result["stopped"] == "max_seconds":
        lines.append(f"  stopped    after --max-seconds; {d['cut']} dialogue(s) cut short, {d['planned'] - d['started']} not started")
    elif result["stopped"] == "interrupted":
        lines.append(f"  stopped    interrupted; {d['cut']} dialogue(s) cut short, {d['planned'] - d['started']} not started")

    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    lines += [
        f"  dialogues  {d['ok']} ok, {d['failed']} failed",
        f"  hops       {result['hops']:,}  ({result['hops_per_s']:,.1f} hops/s)",
        f"  latency    p50 {show(lat['p50'])}  p95 {show(lat['p95'])}  p99 {show(lat['p99'])}  max {show(lat['max'])}",
    ]
    if errors["total"]:
        kinds = ", ".join(f"{kind} {errors[kind]}" for kind in ERROR_KINDS if errors[kind])
        statuses = ", ".join(f"{code} x{count}" for code, count in result["http_statuses"].items())
        lines.append(f"  errors     {errors['total']}: {kinds}" + (f" (HTTP {statuses})" if statuses else ""))
    else:
        lines.append("  errors     none")
    lines.append(
        f"  deadline   {result['over_deadline']} of {d['finished']} dialogues had a hop slower than {result['deadline_ms']:g} ms"
    )
    if result["mix"]:
        lines.append("  mix        " + ", ".join(f"{name} {count}" for name, count in result["mix"].items()))
    for example in result.get("error_examples", []):
        lines.append(f"  e.g.       {example}")
    return "\n".join(lines)
