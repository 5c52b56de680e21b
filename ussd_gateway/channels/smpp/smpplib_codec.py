"""smpplib's command classes, subclassed into a strict, exact codec schema for `pdu`.

smpplib (2.2.4) is used only as a codec: its command classes give the schema
(mandatory field order, TLV tags, sizes) and build and parse the bytes. It is never
given a socket, a client or its sequence generator; the gateway's own protocol code
(`protocol`, `link`) does all I/O and sequencing.

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
  walker checks every bound and raises `Malformed`, which `pdu.decode` turns into a
  `PduError` with the status to answer. smpplib also skips an empty body, which would
  accept a 16-octet deliver_sm; `pdu.decode` parses the empty body too.
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
  silently ignores unknown keyword arguments (a misspelt field vanishes). `pdu.encode`
  validates names, ranges and lengths first, and the subclasses encode those cases
  exactly (latin-1 C-strings; empty string TLV = one NUL; empty octet TLV = length 0).
  Integer 0 in a 1-octet mandatory field and in TLVs of any size was already right.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Literal

from smpplib import command as _sc
from smpplib import consts as _consts
from smpplib.ptypes import ostr as _ostr


class _NoClient:
    """Stands in for smpplib's client so no PDU ever touches a shared sequence
    generator (smpplib's `default_client()` default argument is shared by all PDUs)."""

    sequence = 0

    def next_sequence(self) -> int:  # pragma: no cover - guarded by always passing one
        raise RuntimeError("smpp.pdu always passes an explicit sequence")


MalformedPart = Literal["body", "tlv_stream", "tlv_length"]
"""Where a body fails to parse: its mandatory fields run past the end (`body`), a TLV
header or value runs past the end (`tlv_stream`), or a fixed-size TLV comes in another
size (`tlv_length`). `pdu.decode` answers each with its SMPP status."""


class Malformed(Exception):
    """A body that does not parse, and which part of it is wrong."""

    def __init__(self, message: str, part: MalformedPart) -> None:
        super().__init__(message)
        self.part = part


# Fixed-size TLVs as SMPP 3.4 §5.3.2 defines them (smpplib gets a few wrong per class).
_USSD_TLVS: dict[str, _sc.Param] = {
    "user_message_reference": _sc.Param(type=int, size=2),
    "its_session_info": _sc.Param(type=int, size=2),
    "ussd_service_op": _sc.Param(type=int, size=1),
}


class Codec:
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
                    raise Malformed(f"{name}: body ends inside the field", "body")
                _, pos = self._parse_int(name, data, pos)  # type: ignore[attr-defined]
            elif param.type is str:
                nul = data.find(b"\0", pos, end)
                if nul < 0:
                    raise Malformed(f"{name}: C-octet string without its NUL", "body")
                _, pos = self._parse_string(name, data, pos)  # type: ignore[attr-defined]
            elif param.type is _ostr:
                length = int(getattr(self, param.len_field) or 0)
                if pos + length > end:
                    raise Malformed(f"{name}: {length} octets declared, {end - pos} left", "body")
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
                raise Malformed(f"{end - pos} stray octets after the last TLV", "tlv_stream")
            tag, length = struct.unpack_from(">HH", data, pos)
            pos += 4
            if pos + length > end:
                raise Malformed(f"TLV 0x{tag:04x} declares {length} octets, {end - pos} left", "tlv_stream")
            value = data[pos : pos + length]
            pos += length
            name = by_code.get(tag)
            if name is None or name not in self._optional or name not in self.params:
                continue
            param = self.params[name]
            if param.type is int:
                if length != param.size:
                    raise Malformed(f"TLV {name}: {length} octets, expected {param.size}", "tlv_length")
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


class _BindTransmitter(Codec, _sc.BindTransmitter):
    pass


class _BindReceiver(Codec, _sc.BindReceiver):
    pass


class _BindTransceiver(Codec, _sc.BindTransceiver):
    pass


class _BindTransmitterResp(Codec, _sc.BindTransmitterResp):
    pass


class _BindReceiverResp(Codec, _sc.BindReceiverResp):
    pass


class _BindTransceiverResp(Codec, _sc.BindTransceiverResp):
    pass


class _SubmitSM(Codec, _sc.SubmitSM):
    params, params_order = _with(_sc.SubmitSM, {"source_addr_subunit": _sc.Param(type=int, size=1), **_USSD_TLVS})


class _SubmitSMResp(Codec, _sc.SubmitSMResp):
    pass


class _DeliverSM(Codec, _sc.DeliverSM):
    """deliver_sm that knows the USSD TLVs (smpplib 2.2.4's lacks ussd_service_op)."""

    params, params_order = _with(_sc.DeliverSM, _USSD_TLVS)


class _DeliverSMResp(Codec, _sc.DeliverSMResp):
    pass


class _DataSM(Codec, _sc.DataSM):
    """data_sm that knows the USSD TLVs (smpplib 2.2.4's lacks ussd_service_op)."""

    params, params_order = _with(_sc.DataSM, _USSD_TLVS)


class _DataSMResp(Codec, _sc.DataSMResp):
    params, params_order = _with(
        _sc.DataSMResp,
        {
            "delivery_failure_reason": _sc.Param(type=int, size=1),
            "network_error_code": _sc.Param(type=_ostr, size=3),
        },
    )


class _QuerySM(Codec, _sc.QuerySM):
    pass


class _QuerySMResp(Codec, _sc.QuerySMResp):
    mandatory_fields = ("message_state",)  # smpplib has a str here, not a tuple


class _GenericNack(Codec, _sc.GenericNAck):
    pass


class _Unbind(Codec, _sc.Unbind):
    pass


class _UnbindResp(Codec, _sc.UnbindResp):
    pass


class _EnquireLink(Codec, _sc.EnquireLink):
    pass


class _EnquireLinkResp(Codec, _sc.EnquireLinkResp):
    pass


class _AlertNotification(Codec, _sc.AlertNotification):
    pass


CLASSES: dict[str, type[Codec]] = {
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
