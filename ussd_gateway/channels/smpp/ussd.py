"""USSD `deliver_sm` -> the parts of a `Hop`, and a reply -> its `submit_sm`, per the
bind's `UssdDialect` (presets in `smpp/presets/`).

What differs between gateways is here: which op begins, continues or releases a
dialogue, what names the dialogue (`its_session_info`, `user_message_reference`, or
only the subscriber), where the dialled code is, and what identifies one hop so a
resent `deliver_sm` is answered once. Session ids never carry the MSISDN in clear:
`smpp:<bind>:<keyed hash of the MSISDN>[:<dialogue>]`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ussd_gateway.core.errors import BadRequest
from ussd_gateway.core.hop import HopKind, Reply
from ussd_gateway.core.inputs import split_service_code

from ussd_gateway.channels.smpp.config import BindSettings, UssdDialect
from ussd_gateway.channels.smpp.dcs import mt_data_coding
from ussd_gateway.channels.smpp.encoding import encode_text

__all__ = ["dialled_code", "hop_id", "op_kind", "push_address", "push_submit", "resend_fingerprint", "screen_submit", "session_id"]


def op_kind(dialect: UssdDialect, op: int, its: Any) -> HopKind | None:
    """What a `deliver_sm` with this op does to the dialogue; None: an op the dialect
    refuses."""
    if dialect.end_bit_aborts and its is not None and int(its) & dialect.end_bit:
        return HopKind.ABORT
    if op in dialect.op_begin:
        return HopKind.BEGIN
    if op in dialect.op_abort or op in dialect.op_push_confirm:
        return HopKind.ABORT
    if op in dialect.op_continue or dialect.op_other == "continue":
        return HopKind.CONTINUE
    return None


def session_id(bind: BindSettings, fields: dict[str, Any], msisdn: str) -> str:
    """The dialogue's id: the bind, a keyed hash of the subscriber, and what the
    dialect names the dialogue by (nothing for `msisdn`, or when it is missing)."""
    dialect = bind.ussd
    base = f"smpp:{bind.name}:{bind.msisdn_tag(msisdn)}"
    source = dialect.session_id_from
    its = fields.get("its_session_info")
    if source == "its_session_info" and its is not None:
        return f"{base}:{int(its) & dialect.session_mask}"
    if source == "user_message_reference" and fields.get("user_message_reference") is not None:
        return f"{base}:u{int(fields['user_message_reference'])}"
    if source == "receipted_message_id" and fields.get("receipted_message_id"):
        tag = hashlib.sha1(str(fields["receipted_message_id"]).encode()).hexdigest()[:12]
        return f"{base}:r{tag}"
    return base


def hop_id(dialect: UssdDialect, fields: dict[str, Any], text: str) -> str | None:
    """What identifies this hop within its dialogue when the gateway gives one: a
    `user_message_reference` that is not the dialogue's name, or `its_session_info`
    with per-message bits. None: the resend rule must decide (`resend_fingerprint`)."""
    umr = fields.get("user_message_reference")
    if umr is not None and dialect.session_id_from != "user_message_reference":
        return f"u:{umr}"
    its = fields.get("its_session_info")
    if its is not None and dialect.per_message_bits and dialect.session_id_from == "its_session_info":
        return f"i:{its}:{text}"
    return None


def resend_fingerprint(fields: dict[str, Any]) -> str:
    """The content of a `deliver_sm` a resend repeats exactly (not its sequence number:
    SMSCs resend with a new one)."""
    parts = [
        str(fields.get(name, ""))
        for name in ("ussd_service_op", "its_session_info", "user_message_reference", "data_coding", "destination_addr")
    ]
    body = bytes(fields.get("message_payload") or fields.get("short_message") or b"")
    return hashlib.sha1("|".join(parts).encode() + b"|" + body).hexdigest()[:16]


def dialled_code(bind: BindSettings, fields: dict[str, Any], text: str) -> tuple[str, tuple[str, ...]]:
    """(base code, inputs of a shortcut dial) of a begin: `*090*2*1#` is ("*090#",
    ("2", "1")). A code the bind does not carry becomes "*#", which no menu serves."""
    destination = str(fields.get("destination_addr", "")).strip()
    first, second = (text, destination) if bind.ussd.code_from == "short_message" else (destination, text)
    code = first or second
    if not code.startswith("*"):
        code = "*" + code
    if not code.endswith("#"):
        code += "#"
    try:
        service_code, inputs = split_service_code(code)
    except BadRequest:
        service_code, inputs = code, ()
    if bind.service_codes and service_code not in bind.service_codes:
        service_code = "*#"
    return service_code, inputs


def screen_submit(bind: BindSettings, fields: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """The `submit_sm` showing `reply`, answering the `deliver_sm` `fields`."""
    dialect = bind.ussd
    data_coding, short_message = encode_text(reply.text, packed=bind.gsm7_packed)
    source = str(fields.get("destination_addr", ""))
    if source.startswith("*") and "*" in source[1:]:
        # A shortcut dial (`*100*PIN#`): answer from the service code (`*100`), never
        # echoing what was dialled after it (a scratch-card PIN) back onto the network.
        source = source[: source.index("*", 1)]
    submit: dict[str, Any] = {
        "service_type": dialect.service_type,
        "source_addr_ton": fields.get("dest_addr_ton", 0),
        "source_addr_npi": fields.get("dest_addr_npi", 0),
        "source_addr": source,
        "dest_addr_ton": fields.get("source_addr_ton", 1),
        "dest_addr_npi": fields.get("source_addr_npi", 1),
        "destination_addr": fields.get("source_addr", ""),
        "data_coding": mt_data_coding(data_coding, dialect.screen_data_coding),
        "short_message": short_message,
        "ussd_service_op": dialect.op_reply_end if reply.end else dialect.op_reply_continue,
    }
    its = fields.get("its_session_info")
    if its is not None:
        its = int(its)
        submit["its_session_info"] = (its | dialect.end_bit) if reply.end else (its & ~dialect.end_bit)
    if fields.get("user_message_reference") is not None:
        submit["user_message_reference"] = fields["user_message_reference"]
    return submit


def push_address(bind: BindSettings, msisdn: str, number: int) -> tuple[str, dict[str, Any]]:
    """(session id, naming fields) of a dialogue we begin (a push) as dialogue `number`:
    the fields its `submit_sm` carries so that the subscriber's answer comes back under
    that session id (`session_id` of the answer's `deliver_sm`).

    Raises:
        BadRequest: the dialect names dialogues by something we cannot choose
            (`receipted_message_id`).
    """
    dialect = bind.ussd
    source = dialect.session_id_from
    fields: dict[str, Any] = {}
    if source == "its_session_info":
        mask = dialect.session_mask & 0xFFFF
        shift = (mask & -mask).bit_length() - 1
        its = ((number % (mask >> shift)) + 1) << shift  # in the mask's bits, never 0, end bit clear
        fields["its_session_info"] = its
    elif source == "user_message_reference":
        fields["user_message_reference"] = number % 0xFFFF + 1
    elif source == "receipted_message_id":
        raise BadRequest(f"bind {bind.name!r} names dialogues by receipted_message_id: a push cannot choose one")
    return session_id(bind, fields, msisdn), fields


def push_submit(bind: BindSettings, msisdn: str, source: str, naming: dict[str, Any], text: str, *, notify: bool) -> dict[str, Any]:
    """The `submit_sm` that begins a pushed dialogue: USSR (answer expected) or USSN
    (notify only, the end bit set), in the bind's dialect."""
    dialect = bind.ussd
    data_coding, short_message = encode_text(text, packed=bind.gsm7_packed)
    submit: dict[str, Any] = {
        "service_type": dialect.service_type,
        "source_addr_ton": 0,
        "source_addr_npi": 1,
        "source_addr": source,
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": msisdn,
        "data_coding": mt_data_coding(data_coding, dialect.screen_data_coding),
        "short_message": short_message,
        "ussd_service_op": dialect.op_push_notify if notify else dialect.op_push_request,
        **naming,
    }
    if notify and "its_session_info" in submit:
        submit["its_session_info"] |= dialect.end_bit
    return submit
