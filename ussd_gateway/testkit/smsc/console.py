"""The SMSC simulator's PDUs as text: one line a PDU for the console, and the text a PDU carries.

`ussd-gateway smsc` prints every PDU with `format_pdu`; the control API's `GET /pdus` adds
the decoded text with `pdu_text`. Both only read a `LoggedPdu`, so they live apart from the
wire and the tester API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ussd_gateway.channels.smpp.encoding import decode_sms, decode_text
from ussd_gateway.testkit.smsc.records import LoggedPdu


def pdu_text(fields: Mapping[str, Any], packed: bool) -> str | None:
    """The text a PDU carries, for the log (None when it carries none)."""
    data_coding = int(fields.get("data_coding", 0) or 0)
    payload = fields.get("message_payload")
    if isinstance(payload, bytes) and payload:
        return decode_text(data_coding, payload, packed=packed)
    short_message = fields.get("short_message")
    if not isinstance(short_message, bytes) or not short_message:
        return None
    return decode_sms(data_coding, int(fields.get("esm_class", 0) or 0), short_message, packed=packed)[1]


def format_pdu(entry: LoggedPdu, *, mask: Callable[[str], str] = lambda number: number, packed: bool = False) -> str:
    """One line for a PDU: time, direction, bind, command, sequence, status, key fields.

    Addresses of 8 characters or more are passed through `mask` (phone numbers are
    personal data); shorter ones are short or service codes and shown as they are.
    """
    clock = time.strftime("%H:%M:%S", time.localtime(entry.at)) + f".{int(entry.at * 1000) % 1000:03d}"
    parts = [clock, f"{entry.direction:<3}", f"#{entry.bind_id}", entry.command, f"seq={entry.sequence}"]
    if entry.status or entry.command.endswith("_resp") or entry.command == "generic_nack":
        parts.append(f"status=0x{entry.status:08X}")
    fields = entry.fields
    for name, label in (("source_addr", "from"), ("destination_addr", "to")):
        if fields.get(name):
            address = str(fields[name])
            parts.append(f"{label}={mask(address) if len(address) >= 8 else address}")
    for name, label in (
        ("system_id", "system_id"), ("message_id", "message_id"), ("service_type", "service_type"),
        ("esm_class", "esm"), ("data_coding", "dc"), ("ussd_service_op", "op"),
        ("receipted_message_id", "receipt"), ("message_state", "state"), ("error", "error"),
    ):  # fmt: skip
        value = fields.get(name)
        if value not in (None, "", 0) or (name == "ussd_service_op" and value is not None):
            parts.append(f"{label}={value}")
    if fields.get("its_session_info") is not None:
        parts.append(f"session=0x{int(fields['its_session_info']):04X}")
    text = pdu_text(fields, packed)
    if text is not None:
        parts.append(f"text={text[:60] + ('…' if len(text) > 60 else '')!r}")
    return " ".join(parts)
