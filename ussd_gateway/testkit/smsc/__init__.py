"""The SMSC simulator: the operator's side of SMPP 3.4, for development and the tests.

The gateway is an ESME; to prove it end to end over real TCP it needs a peer that binds
it, hands it USSD dialogues and MO SMS the way an operator's SMSC / USSD gateway does,
records every PDU both ways, and misbehaves on demand (drops, throttling, withheld or
late responses, resent `deliver_sm`) so tests can show nothing is lost or duplicated.
One package, a module a concept: `records` (what it records and hands testers),
`server` (the wire: binds, PDUs, submit answering), `simulator` (the tester API on top:
USSD dialogues, MO SMS, receipts, MT SMS), `faults` (fault injection), `control` (the
HTTP control API) and `console` (PDUs as text). The public names are re-exported here.
"""

from __future__ import annotations

from ussd_gateway.testkit.smsc.console import format_pdu
from ussd_gateway.testkit.smsc.records import BindInfo, LoggedPdu, MtSms, SmscError, UssdScreen
from ussd_gateway.testkit.smsc.simulator import SmscSimulator, UssdDialogue

__all__ = [
    "BindInfo",
    "LoggedPdu",
    "MtSms",
    "SmscError",
    "SmscSimulator",
    "UssdDialogue",
    "UssdScreen",
    "format_pdu",
]
