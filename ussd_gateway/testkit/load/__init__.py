"""`ussd-gateway load`: many simulated subscribers against a running server.

N dialogues run at concurrency C, each from a number of its own (default block
8497xxxxxxx, never a named demo subscriber), each a walk of the built-in mix or a
transcript (`ussd_gateway.testkit.transcripts`) with its `{msisdn}` set to the
dialogue's number; the report counts latencies, errors by kind and dialogues over the
deadline. The modules: `options` (the command line and its checks), `client` (the lean
HTTP/1.1 client), `diallers` (one per channel), `mix` (the built-in walks), `tally`
(what a run counts), `runner` (the virtual subscribers and the CLI's `main`) and
`report`. The public names are re-exported here.
"""

from __future__ import annotations

from ussd_gateway.testkit.load.mix import MIX, plan_walk
from ussd_gateway.testkit.load.options import LoadOptions, validate
from ussd_gateway.testkit.load.report import exit_status, format_report, report
from ussd_gateway.testkit.load.runner import main, run_load

__all__ = [
    "MIX",
    "LoadOptions",
    "exit_status",
    "format_report",
    "main",
    "plan_walk",
    "report",
    "run_load",
    "validate",
]
