"""SMPP PDU codec: bytes <-> `Pdu`, with no I/O.

The public face of the codec: the command statuses and command ids, the decoded `Pdu`
and `PduError`, and `encode`/`decode`, which validate what smpplib would silently
drop, truncate or mangle. The smpplib command classes underneath, and the quirks of
smpplib 2.2.4 their subclasses work around, are in `smpplib_codec`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from smpplib import consts as _consts
from smpplib.ptypes import flag as _flag
from smpplib.ptypes import ostr as _ostr

from ussd_gateway.channels.smpp.smpplib_codec import CLASSES, Codec, Malformed, MalformedPart

__all__ = [
    "COMMAND_IDS",
    "ESME_RALYBND",
    "ESME_RBINDFAIL",
    "ESME_RINVBNDSTS",
    "ESME_RINVCMDID",
    "ESME_RINVCMDLEN",
    "ESME_RINVMSGLEN",
    "ESME_RINVOPTPARAMVAL",
    "ESME_RINVOPTPARSTREAM",
    "ESME_RINVPARLEN",
    "ESME_RINVPASWD",
    "ESME_RINVSRCADR",
    "ESME_RINVSYSID",
    "ESME_RMSGQFUL",
    "ESME_ROK",
    "ESME_RSYSERR",
    "ESME_RTHROTTLED",
    "HEADER_BYTES",
    "MAX_PDU_BYTES",
    "Pdu",
    "PduError",
    "command_name",
    "decode",
    "encode",
    "frame_length",
    "is_response",
    "response_name",
]

# --- Command statuses (SMPP 3.4 §5.1.3; same values in 5.0 §4.7.6) -----------------
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
"""Message length is invalid (short_message too long for its data_coding)."""
ESME_RINVCMDLEN = 0x02
"""Command length is invalid: command_length disagrees with the bytes, or the body
ends before its mandatory fields do."""
ESME_RINVCMDID = 0x03
"""Invalid command id: unknown or unsupported command_id (answered with generic_nack)."""
ESME_RINVBNDSTS = 0x04
"""Incorrect bind status for the given command (e.g. submit_sm before bind)."""
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RINVSRCADR = 0x0A
"""Invalid source address: a deliver_sm whose source_addr is not a subscriber number."""
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RTHROTTLED = 0x58
ESME_RINVOPTPARSTREAM = 0xC0
"""Error in the optional part of the PDU body: a TLV header or value runs past the end."""
ESME_RINVPARLEN = 0xC2
"""Invalid parameter length: a TLV whose length does not match its fixed size."""
ESME_RINVOPTPARAMVAL = 0xC4

HEADER_BYTES = 16
"""command_length, command_id, command_status, sequence_number: 4 octets each."""
MAX_PDU_BYTES = 64 * 1024
"""Largest PDU a reader accepts. The biggest legitimate PDU (a data_sm/submit_sm with
a 64 KiB message_payload) is just over 64 KiB; anything past this is a corrupt or
hostile length prefix, and the link should be dropped rather than buffer it."""

_RESPONSE_BIT = 0x80000000


COMMAND_IDS: dict[str, int] = {
    "generic_nack": 0x80000000,
    "bind_receiver": 0x00000001,
    "bind_receiver_resp": 0x80000001,
    "bind_transmitter": 0x00000002,
    "bind_transmitter_resp": 0x80000002,
    "query_sm": 0x00000003,
    "query_sm_resp": 0x80000003,
    "submit_sm": 0x00000004,
    "submit_sm_resp": 0x80000004,
    "deliver_sm": 0x00000005,
    "deliver_sm_resp": 0x80000005,
    "unbind": 0x00000006,
    "unbind_resp": 0x80000006,
    "bind_transceiver": 0x00000009,
    "bind_transceiver_resp": 0x80000009,
    "enquire_link": 0x00000015,
    "enquire_link_resp": 0x80000015,
    "alert_notification": 0x00000102,
    "data_sm": 0x00000103,
    "data_sm_resp": 0x80000103,
}
"""The commands this codec encodes and decodes (SMPP 3.4 §5.1.2). Others (outbind,
submit_multi, cancel_sm, replace_sm, ...) decode to PduError(ESME_RINVCMDID)."""
_NAMES_BY_ID = {v: k for k, v in COMMAND_IDS.items()}
_MALFORMED_STATUS: dict[MalformedPart, int] = {
    "body": ESME_RINVCMDLEN,
    "tlv_stream": ESME_RINVOPTPARSTREAM,
    "tlv_length": ESME_RINVPARLEN,
}
"""The status answering each kind of unparseable body."""


@dataclass(frozen=True, slots=True)
class Pdu:
    """One decoded PDU.

    `fields` holds the mandatory fields and the optional parameters that are present
    (absent TLVs are simply missing): integers as int, C-octet strings (addresses,
    system_id, message_id, ...) as str decoded latin-1 so no byte can fail, octet
    strings (`short_message`, `message_payload`, ...) as bytes, flag TLVs as True.
    `sm_length` is not included: it is `len(short_message)`.
    """

    command: str
    """smpplib's command name, e.g. "deliver_sm"."""
    command_id: int
    status: int
    """command_status (0 on requests)."""
    sequence: int
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def is_response(self) -> bool:
        """True for a response (command_id has the 0x80000000 bit), incl. generic_nack."""
        return bool(self.command_id & _RESPONSE_BIT)

    def get(self, name: str, default: Any = None) -> Any:
        """`fields.get`, for brevity at call sites."""
        return self.fields.get(name, default)


class PduError(Exception):
    """Bytes that are not a PDU we can decode.

    Attributes:
        message: what is wrong, for logs.
        sequence: the sequence_number when the header could be read, else None; the
            generic_nack (or *_resp) answering the PDU carries it.
        command_id: the command_id when the header could be read, else None.
        status: the SMPP command_status to answer with (ESME_RINVCMDLEN, ...).
    """

    def __init__(
        self,
        message: str,
        sequence: int | None = None,
        command_id: int | None = None,
        status: int = ESME_RSYSERR,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sequence = sequence
        self.command_id = command_id
        self.status = status

    def __repr__(self) -> str:
        cid = "None" if self.command_id is None else f"0x{self.command_id:08x}"
        return f"PduError({self.message!r}, sequence={self.sequence}, command_id={cid}, status=0x{self.status:02x})"


def command_name(command_id: int) -> str | None:
    """The command name for `command_id`, or None when this codec does not know it."""
    return _NAMES_BY_ID.get(command_id)


def is_response(command: str) -> bool:
    """True for "*_resp" commands and generic_nack."""
    return bool(COMMAND_IDS[command] & _RESPONSE_BIT)


def response_name(command: str) -> str:
    """The response to a request, e.g. "submit_sm" -> "submit_sm_resp".

    Raises:
        ValueError: `command` is a response or unknown (nothing answers it).
    """
    if command not in COMMAND_IDS or is_response(command):
        raise ValueError(f"{command!r} is not a request this codec knows")
    if command == "alert_notification":
        raise ValueError("alert_notification has no response (SMPP 3.4 §4.12)")
    return command + "_resp"


def frame_length(header: bytes) -> int:
    """command_length from the first 4 octets of `header` (bytes of a PDU, whole or
    not). Readers wait for that many octets, refusing anything below HEADER_BYTES or
    above MAX_PDU_BYTES (the stream cannot be resynchronised then: drop the link).

    Raises:
        ValueError: fewer than 4 octets.
    """
    if len(header) < 4:
        raise ValueError(f"need 4 octets for command_length, got {len(header)}")
    return int.from_bytes(header[:4], "big")


def decode(data: bytes) -> Pdu:
    """Decode one whole PDU (exactly command_length octets).

    Raises:
        PduError: and nothing else, for any malformed input, with the status to
            answer: ESME_RINVCMDLEN (length wrong or body truncated), ESME_RINVCMDID
            (unknown command), ESME_RINVOPTPARSTREAM (truncated TLV), ESME_RINVPARLEN
            (TLV of the wrong size for its type), ESME_RSYSERR (anything else).
    """
    data = bytes(data)
    if len(data) < HEADER_BYTES:
        raise PduError(f"{len(data)} octets, a PDU has at least {HEADER_BYTES}", status=ESME_RINVCMDLEN)
    length, command_id, status, sequence = struct.unpack_from(">LLLL", data)
    if length != len(data) or length > MAX_PDU_BYTES:
        raise PduError(
            f"command_length {length} but {len(data)} octets (max {MAX_PDU_BYTES})",
            sequence,
            command_id,
            ESME_RINVCMDLEN,
        )
    name = _NAMES_BY_ID.get(command_id)
    if name is None:
        raise PduError(f"unknown or unsupported command_id 0x{command_id:08x}", sequence, command_id, ESME_RINVCMDID)
    pdu = CLASSES[name](name, sequence=sequence)
    try:
        pdu.parse(data)  # type: ignore[attr-defined]
        if len(data) == HEADER_BYTES:
            # smpplib skips an empty body, which would accept a 16-octet deliver_sm.
            pdu.parse_params(b"")
    except Malformed as exc:
        raise PduError(f"{name}: {exc}", sequence, command_id, _MALFORMED_STATUS[exc.part]) from exc
    except (struct.error, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        # Defence in depth: smpplib's primitives should not fail after our checks.
        raise PduError(f"{name}: {exc!r}", sequence, command_id, ESME_RSYSERR) from exc
    fields: dict[str, Any] = {}
    for fname in pdu.present:
        if fname == "sm_length":
            continue
        value = getattr(pdu, fname)
        if isinstance(value, bytes) and CLASSES[name].params[fname].type is str:
            value = value.decode("latin-1")
        fields[fname] = value
    return Pdu(name, command_id, status, sequence, fields)


def encode(command: str, *, sequence: int, status: int = ESME_ROK, **fields: Any) -> bytes:
    """Encode one PDU with smpplib's command classes.

    `fields` are smpplib's field names. Missing mandatory fields are 0 / "" / b"";
    `sm_length` is computed. Bind requests default to interface_version 0x34. An
    error submit_sm_resp / bind_*_resp given no fields is header-only, as SMPP 3.4
    specifies; pass e.g. message_id="" to send a body anyway.

    Raises:
        ValueError: unknown command or field, a value out of range for its size, a
            C-string too long for its field or not latin-1, a flag TLV, both
            short_message and message_payload, or a short_message over 254 octets.
    """
    cls = CLASSES.get(command)
    if cls is None:
        raise ValueError(f"unsupported command {command!r}")
    _check_u32("sequence", sequence)
    _check_u32("status", status)
    if status != ESME_ROK and not fields and command in _NO_BODY_ON_ERROR:
        return struct.pack(">LLLL", HEADER_BYTES, COMMAND_IDS[command], status, sequence)
    if command.startswith("bind_") and not command.endswith("_resp"):
        fields.setdefault("interface_version", _consts.SMPP_VERSION_34)
    for name, value in fields.items():
        _check_field(cls, command, name, value)
    if fields.get("short_message") and "message_payload" in fields:
        raise ValueError("short_message and message_payload are exclusive (SMPP 3.4 §5.3.2.32)")
    pdu = cls(command, sequence=sequence)
    pdu.status = status  # type: ignore[attr-defined]
    for name, value in fields.items():
        if isinstance(value, bytearray):
            value = bytes(value)
        setattr(pdu, name, value)  # after __init__: it overrides some kwargs (bind)
    return pdu.generate()  # type: ignore[attr-defined, no-any-return]


_NO_BODY_ON_ERROR = frozenset(
    {"submit_sm_resp", "bind_transmitter_resp", "bind_receiver_resp", "bind_transceiver_resp"}
)
"""SMPP 3.4 §4.1.2, §4.4.2: "The body ... is not returned if the command_status field
contains a non-zero value". (5.0 returns it; `decode` accepts both.)"""


def _check_u32(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} must be an unsigned 32-bit int, got {value!r}")


def _check_field(cls: type[Codec], command: str, name: str, value: Any) -> None:
    """Refuse what smpplib would silently drop, truncate or mangle."""
    param = cls.params.get(name)
    if param is None or name == "sm_length":
        raise ValueError(f"{command} has no field {name!r}" if param is None else "sm_length is computed")
    if param.type is int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << (8 * param.size):
            raise ValueError(f"{command}.{name} must be an int of {param.size} octet(s), got {value!r}")
    elif param.type is str:
        if not isinstance(value, str):
            raise ValueError(f"{command}.{name} must be str, got {type(value).__name__}")
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{command}.{name} must be latin-1 text, got {value!r}") from None
        if b"\0" in raw:
            raise ValueError(f"{command}.{name} must not contain NUL")
        limit = getattr(param, "max", None)
        if limit is not None and len(raw) + 1 > limit:
            raise ValueError(f"{command}.{name} is {len(raw)} octets, at most {limit - 1}")
    elif param.type is _ostr:
        if not isinstance(value, (bytes, bytearray)):
            raise ValueError(f"{command}.{name} must be bytes, got {type(value).__name__}")
        if name == "short_message" and len(value) > 254:
            raise ValueError(f"short_message is {len(value)} octets, at most 254 (use message_payload)")
        size = getattr(param, "size", None)
        if size is not None and len(value) != size:
            raise ValueError(f"{command}.{name} must be {size} octets, got {len(value)}")
        if len(value) > 0xFFFF:
            raise ValueError(f"{command}.{name} is {len(value)} octets, a TLV holds at most 65535")
    elif param.type is _flag:
        raise ValueError(f"{command}.{name}: flag TLVs are not supported by smpplib's encoder")
