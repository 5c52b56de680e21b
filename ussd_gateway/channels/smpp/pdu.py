"""SMPP PDU codec: bytes <-> `Pdu`, over smpplib's command classes, with no I/O.

smpplib (2.2.4) is used only as a codec (STYLE.md §6 and anti-patterns 7-8): its
command classes give the schema (mandatory field order, TLV tags, sizes) and build and
parse the bytes. It is never given a socket, a client or its sequence generator.

The classes are subclassed here, never patched globally, because smpplib 2.2.4 has
quirks that matter on a real USSD bind:

* `DeliverSM`/`DataSM` lack `ussd_service_op` (0x0501) in `params`, so parsing a USSD
  `deliver_sm` raises `KeyError: 'ussd_service_op'`, and encoding one silently drops
  the TLV. Our subclasses add it (and `its_session_info`, `user_message_reference`).
* A TLV it knows but the command does not list is a `KeyError`; an unknown tag is an
  `UnknownCommandError`; a TLV's length is ignored for integer TLVs (a 1-octet value
  sent in 2 octets desynchronises the rest). Our TLV walker checks lengths and skips
  what it does not know, as SMPP 3.4 §3.2.5 asks of a receiver.
* Parsing is not bounds-checked: a C-octet string without its NUL, a truncated integer
  or a `sm_length` past the end gives garbage or `struct.error`. Our mandatory-field
  walker checks every bound and raises `PduError` with the status to answer.
* `Command(..., sequence=n)` ignores `n` (the `sequence` property reads the shared
  `default_client().sequence`, 0, so `_set_vars` sees "already set"); without a
  `sequence` kwarg it calls `default_client().next_sequence()`, which does not exist.
  We always pass a sequence and then set it explicitly, with a private client object.
* `BindTransmitter.__init__` forces `interface_version = 0x34` over the kwarg; we set
  it after construction.
* `SubmitSM.params` gives `source_addr_subunit` 2 octets (the spec says 1); `DataSMResp`
  makes `network_error_code` and `delivery_failure_reason` C-strings (they are 3 octets
  and 1 octet). Fixed in the subclass schemas.
* Encoding truncates over-long C-strings silently; writes string TLVs UTF-8 encoded
  but with the character count as their length (a non-ASCII value corrupts the TLV
  stream); drops empty string and octet-string TLVs; writes a single NUL for a 0 (or
  unset) mandatory integer whatever its size; cannot encode flag TLVs at all; and
  silently ignores unknown keyword arguments (a misspelt field vanishes). `encode`
  validates names, ranges and lengths first, and the subclasses encode those cases
  exactly (latin-1 C-strings; empty string TLV = one NUL; empty octet TLV = length 0).
  Integer 0 in a 1-octet mandatory field and in TLVs of any size was already right.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

from smpplib import command as _sc
from smpplib import consts as _consts
from smpplib.ptypes import flag as _flag
from smpplib.ptypes import ostr as _ostr

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


class _NoClient:
    """Stands in for smpplib's client so no PDU ever touches a shared sequence
    generator (smpplib's `default_client()` default argument is shared by all PDUs)."""

    sequence = 0

    def next_sequence(self) -> int:  # pragma: no cover - guarded by always passing one
        raise RuntimeError("smpp.pdu always passes an explicit sequence")


class _Malformed(Exception):
    """Internal: a body that does not parse, with the SMPP status to answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# Fixed-size TLVs as SMPP 3.4 §5.3.2 defines them (smpplib gets a few wrong per class).
_USSD_TLVS: dict[str, _sc.Param] = {
    "user_message_reference": _sc.Param(type=int, size=2),
    "its_session_info": _sc.Param(type=int, size=2),
    "ussd_service_op": _sc.Param(type=int, size=1),
}


class _Codec:
    """Mixin over an smpplib command class: strict, bounds-checked parsing and exact
    encoding. Works on smpplib's own `params`/`params_order` schema and its
    `_parse_int`/`_parse_string`/`_parse_ostring` and `_generate_*` primitives."""

    params: ClassVar[dict[str, _sc.Param]]
    params_order: ClassVar[tuple[str, ...]]
    command: str

    _optional: ClassVar[frozenset[str]]
    """The schema's optional fields (TLVs), worked out once per class: smpplib's
    `field_is_optional` does it per field per PDU, a tenth of the codec's time."""
    _mandatory: ClassVar[tuple[str, ...]]
    _plan: ClassVar[tuple[tuple[str, Any, bool], ...]]
    """(field, type, optional) in wire order, for `generate_params`."""
    _none_by_default: ClassVar[frozenset[str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        forced = getattr(cls, "mandatory_fields", ())
        cls._optional = frozenset(f for f in cls.params if f not in forced and f in _consts.OPTIONAL_PARAMS)
        cls._mandatory = tuple(f for f in cls.params_order if f not in cls._optional)
        cls._plan = tuple((f, cls.params[f].type, f in cls._optional) for f in cls.params_order)
        for name in cls.params:
            # smpplib's __init__ sets every field to None on each instance (~40 setattr
            # calls); a class-level None reads the same and lets `_set_vars` skip them.
            if not hasattr(cls, name):
                setattr(cls, name, None)
        cls._none_by_default = frozenset(name for name in cls.params if getattr(cls, name) is None)

    def __init__(self, command: str, *, sequence: int, **kwargs: Any) -> None:
        super().__init__(command, sequence=sequence, client=_NoClient(), **kwargs)  # type: ignore[call-arg]
        self.sequence = sequence  # smpplib ignores the kwarg (see module docstring)
        self.present: list[str] = []
        """Field names found while parsing, in wire order."""

    def _set_vars(self, **kwargs: Any) -> None:
        """smpplib's: set each attribute that is missing or None. Setting None over a
        field that reads None by default changes nothing, so it is skipped."""
        none_by_default = self._none_by_default
        for key, value in kwargs.items():
            if value is None and key in none_by_default:
                continue
            if getattr(self, key, None) is None:
                setattr(self, key, value)

    def field_is_optional(self, field: str) -> bool:
        """smpplib's rule (not forced mandatory, and a known TLV name), cached per class."""
        if field in self._optional:
            return True
        if field in self.params:
            return False
        return _sc.Command.field_is_optional(self, field)  # type: ignore[arg-type]

    # -- parsing ----------------------------------------------------------------
    def parse(self, data: bytes) -> None:
        """smpplib's header parse, then the body even when it is empty (smpplib skips
        an empty body, which would accept a 16-octet deliver_sm)."""
        super().parse(data)  # type: ignore[misc]
        if len(data) == HEADER_BYTES:
            self.parse_params(b"")

    def mandatory(self) -> list[str]:
        """Mandatory fields in wire order."""
        return list(self._mandatory)

    def _parse_int(self, name: str, data: bytes, pos: int) -> tuple[bytes, int]:
        """smpplib's (big-endian, the field's size), without slicing a copy first."""
        size = self.params[name].size
        (value,) = _INT_STRUCTS[size].unpack_from(data, pos)
        setattr(self, name, value)
        return data, pos + size

    def parse_params(self, data: bytes) -> None:
        """Parse the mandatory fields, then the TLVs; every bound is checked.

        A response may come with no body at all (SMPP 3.4 §4: e.g. submit_sm_resp and
        bind_*_resp carry none when command_status is an error); otherwise every
        mandatory field must be there."""
        pos = 0
        end = len(data)
        for name in self._mandatory:
            if pos == end and self.command.endswith("_resp"):
                break  # responses may stop early (error status: no body)
            param = self.params[name]
            if param.type is int:
                if pos + param.size > end:
                    raise _Malformed(f"{name}: body ends inside the field", ESME_RINVCMDLEN)
                _, pos = self._parse_int(name, data, pos)  # type: ignore[attr-defined]
            elif param.type is str:
                nul = data.find(b"\0", pos, end)
                if nul < 0:
                    raise _Malformed(f"{name}: C-octet string without its NUL", ESME_RINVCMDLEN)
                _, pos = self._parse_string(name, data, pos)  # type: ignore[attr-defined]
            elif param.type is _ostr:
                length = int(getattr(self, param.len_field) or 0)
                if pos + length > end:
                    raise _Malformed(f"{name}: {length} octets declared, {end - pos} left", ESME_RINVCMDLEN)
                _, pos = self._parse_ostring(name, data, pos)  # type: ignore[attr-defined]
            self.present.append(name)
        if pos < end:
            self.parse_optional_params(data[pos:])

    def parse_optional_params(self, data: bytes) -> None:
        """Walk the TLVs: check each header and length, skip tags this command does
        not define (SMPP 3.4 §3.2.5: a receiver ignores unsupported optional
        parameters), parse the rest with smpplib's primitives."""
        pos = 0
        end = len(data)
        by_code = _tlv_names()
        while pos < end:
            if pos + 4 > end:
                raise _Malformed(f"{end - pos} stray octets after the last TLV", ESME_RINVOPTPARSTREAM)
            tag, length = struct.unpack_from(">HH", data, pos)
            pos += 4
            if pos + length > end:
                raise _Malformed(f"TLV 0x{tag:04x} declares {length} octets, {end - pos} left", ESME_RINVOPTPARSTREAM)
            value = data[pos : pos + length]
            pos += length
            name = by_code.get(tag)
            if name is None or name not in self._optional or name not in self.params:
                continue
            param = self.params[name]
            if param.type is int:
                if length != param.size:
                    raise _Malformed(f"TLV {name}: {length} octets, expected {param.size}", ESME_RINVPARLEN)
                self._parse_int(name, value, 0)  # type: ignore[attr-defined]
            elif param.type is str:
                setattr(self, name, value.split(b"\0", 1)[0])
            elif param.type is _ostr:
                self._parse_ostring(name, value, 0, length)  # type: ignore[attr-defined]
            else:  # flag: presence is the value
                setattr(self, name, True)
            if name not in self.present:
                self.present.append(name)

    # -- encoding ---------------------------------------------------------------
    def generate_params(self) -> bytes:
        """smpplib's `Command.generate_params` (same `prep`, same per-field generators,
        same order and omissions), over the per-class plan and joined once."""
        prep = getattr(self, "prep", None)
        if callable(prep):
            prep()
        parts = []
        for name, kind, optional in self._plan:
            if optional:
                if kind is int:
                    value = self._generate_int_tlv(name)
                elif kind is str:
                    value = self._generate_string_tlv(name)
                elif kind is _ostr:
                    value = self._generate_ostring_tlv(name)
                else:
                    continue
                if value:
                    parts.append(value)
            elif kind is int:
                parts.append(self._generate_int(name))
            elif kind is str:
                parts.append(self._generate_string(name))  # type: ignore[attr-defined]
            elif kind is _ostr:
                value = self._generate_ostring(name)  # type: ignore[attr-defined]
                if value:
                    parts.append(value)
        return b"".join(parts)

    def _generate_int(self, name: str) -> bytes:
        """smpplib writes one NUL for 0/None whatever the size; pack to size."""
        param = self.params[name]
        return struct.pack(">" + _consts.INT_PACK_FORMATS[param.size], getattr(self, name) or 0)

    def _generate_int_tlv(self, name: str) -> bytes | None:
        """smpplib's, returning at once for an absent TLV (most of them, every PDU)."""
        value = getattr(self, name)
        if value is None:
            return None
        size = self.params[name].size
        return struct.pack(">HH" + _consts.INT_PACK_FORMATS[size], _consts.OPTIONAL_PARAMS[name], size, value)

    def _generate_string_tlv(self, name: str) -> bytes | None:
        """smpplib UTF-8 encodes, truncates, and drops "": latin-1, exact, "" = NUL."""
        value = getattr(self, name)
        if value is None:
            return None
        raw = value.encode("latin-1") + b"\0"
        return struct.pack(">HH", _consts.OPTIONAL_PARAMS[name], len(raw)) + raw

    def _generate_ostring_tlv(self, name: str) -> bytes | None:
        """smpplib drops b"": an empty octet-string TLV is sent with length 0."""
        value = getattr(self, name, None)
        if value is None:
            return None
        return struct.pack(">HH", _consts.OPTIONAL_PARAMS[name], len(value)) + bytes(value)


_INT_STRUCTS = {size: struct.Struct(">" + fmt) for size, fmt in _consts.INT_PACK_FORMATS.items()}
_TLV_NAMES: dict[int, str] = {}


def _tlv_names() -> dict[int, str]:
    """Tag -> name, built once from smpplib's table (its lookup is a linear scan)."""
    if not _TLV_NAMES:
        _TLV_NAMES.update({code: name for name, code in _consts.OPTIONAL_PARAMS.items()})
    return _TLV_NAMES


def _with(base: type, extra: dict[str, _sc.Param]) -> tuple[dict[str, _sc.Param], tuple[str, ...]]:
    """`base`'s schema plus (or with corrected) `extra` TLVs, appended in order."""
    params = {**base.params, **extra}  # type: ignore[attr-defined]
    order = tuple(base.params_order) + tuple(n for n in extra if n not in base.params_order)  # type: ignore[attr-defined]
    return params, order


class _BindTransmitter(_Codec, _sc.BindTransmitter):
    pass


class _BindReceiver(_Codec, _sc.BindReceiver):
    pass


class _BindTransceiver(_Codec, _sc.BindTransceiver):
    pass


class _BindTransmitterResp(_Codec, _sc.BindTransmitterResp):
    pass


class _BindReceiverResp(_Codec, _sc.BindReceiverResp):
    pass


class _BindTransceiverResp(_Codec, _sc.BindTransceiverResp):
    pass


class _SubmitSM(_Codec, _sc.SubmitSM):
    params, params_order = _with(_sc.SubmitSM, {"source_addr_subunit": _sc.Param(type=int, size=1), **_USSD_TLVS})


class _SubmitSMResp(_Codec, _sc.SubmitSMResp):
    pass


class _DeliverSM(_Codec, _sc.DeliverSM):
    """deliver_sm that knows the USSD TLVs (smpplib 2.2.4's lacks ussd_service_op)."""

    params, params_order = _with(_sc.DeliverSM, _USSD_TLVS)


class _DeliverSMResp(_Codec, _sc.DeliverSMResp):
    pass


class _DataSM(_Codec, _sc.DataSM):
    """data_sm that knows the USSD TLVs (smpplib 2.2.4's lacks ussd_service_op)."""

    params, params_order = _with(_sc.DataSM, _USSD_TLVS)


class _DataSMResp(_Codec, _sc.DataSMResp):
    params, params_order = _with(
        _sc.DataSMResp,
        {
            "delivery_failure_reason": _sc.Param(type=int, size=1),
            "network_error_code": _sc.Param(type=_ostr, size=3),
        },
    )


class _QuerySM(_Codec, _sc.QuerySM):
    pass


class _QuerySMResp(_Codec, _sc.QuerySMResp):
    mandatory_fields = ("message_state",)  # smpplib has a str here, not a tuple


class _GenericNack(_Codec, _sc.GenericNAck):
    pass


class _Unbind(_Codec, _sc.Unbind):
    pass


class _UnbindResp(_Codec, _sc.UnbindResp):
    pass


class _EnquireLink(_Codec, _sc.EnquireLink):
    pass


class _EnquireLinkResp(_Codec, _sc.EnquireLinkResp):
    pass


class _AlertNotification(_Codec, _sc.AlertNotification):
    pass


_CLASSES: dict[str, type[_Codec]] = {
    "bind_transmitter": _BindTransmitter,
    "bind_transmitter_resp": _BindTransmitterResp,
    "bind_receiver": _BindReceiver,
    "bind_receiver_resp": _BindReceiverResp,
    "bind_transceiver": _BindTransceiver,
    "bind_transceiver_resp": _BindTransceiverResp,
    "submit_sm": _SubmitSM,
    "submit_sm_resp": _SubmitSMResp,
    "deliver_sm": _DeliverSM,
    "deliver_sm_resp": _DeliverSMResp,
    "data_sm": _DataSM,
    "data_sm_resp": _DataSMResp,
    "query_sm": _QuerySM,
    "query_sm_resp": _QuerySMResp,
    "generic_nack": _GenericNack,
    "unbind": _Unbind,
    "unbind_resp": _UnbindResp,
    "enquire_link": _EnquireLink,
    "enquire_link_resp": _EnquireLinkResp,
    "alert_notification": _AlertNotification,
}

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
    pdu = _CLASSES[name](name, sequence=sequence)
    try:
        pdu.parse(data)  # type: ignore[attr-defined]
    except _Malformed as exc:
        raise PduError(f"{name}: {exc}", sequence, command_id, exc.status) from exc
    except (struct.error, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        # Defence in depth: smpplib's primitives should not fail after our checks.
        raise PduError(f"{name}: {exc!r}", sequence, command_id, ESME_RSYSERR) from exc
    fields: dict[str, Any] = {}
    for fname in pdu.present:
        if fname == "sm_length":
            continue
        value = getattr(pdu, fname)
        if isinstance(value, bytes) and _CLASSES[name].params[fname].type is str:
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
    cls = _CLASSES.get(command)
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


def _check_field(cls: type[_Codec], command: str, name: str, value: Any) -> None:
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
