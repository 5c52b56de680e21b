"""SMS text <-> SMPP short_message / message_payload octets.

Outbound text goes out in the GSM 03.38 default alphabet (data_coding 0) when every
character has a GSM-7 code, and as UCS-2 / UTF-16-BE (data_coding 8) otherwise; GSM-7
is sent one septet per octet ("unpacked", what most SMSCs expect over SMPP) or packed
8 characters in 7 octets, per bind. Text longer than one SMS is split into parts with
a concatenation UDH (3GPP TS 23.040 §9.2.3.24.1) or sent whole in message_payload.

Inbound octets come from the network: every decoder here returns text for any input
and never raises, since a bad octet must not take the link down.

The character tables are menus.text's (one GSM 03.38 alphabet in the project), so
what the menu engine measures is exactly what goes on the wire.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ussd_gateway.menus.text import GSM7_BASIC_TABLE, GSM7_ESC, GSM7_EXTENSION_TABLE, is_gsm7

__all__ = [
    "DC_BINARY",
    "DC_GSM7",
    "DC_IA5",
    "DC_LATIN1",
    "DC_UCS2",
    "ESM_UDHI",
    "GSM7_PART_SEPTETS",
    "GSM7_SINGLE_SEPTETS",
    "UCS2_PART_UNITS",
    "UCS2_SINGLE_UNITS",
    "Concat",
    "SmsPart",
    "choose_encoding",
    "decode_sms",
    "decode_text",
    "encode_text",
    "gsm7_decode",
    "gsm7_encode",
    "gsm7_pack",
    "gsm7_unpack",
    "parse_udh",
    "payload_sms",
    "split_sms",
    "udh_concat",
]

TextEncoding = Literal["gsm7", "ucs2"]

# data_coding values (SMPP 3.4 §5.2.19).
DC_GSM7 = 0x00
"""SMSC default alphabet; taken as GSM 03.38, as operators configure it."""
DC_IA5 = 0x01
DC_LATIN1 = 0x03
DC_BINARY = 0x04
DC_UCS2 = 0x08

ESM_UDHI = 0x40
"""esm_class bit: short_message starts with a User Data Header."""

GSM7_SINGLE_SEPTETS = 160
GSM7_PART_SEPTETS = 153
"""160 minus the 6-octet concatenation UDH (48 bits + 1 fill bit = 7 septets)."""
UCS2_SINGLE_UNITS = 70
UCS2_PART_UNITS = 67
"""70 minus the 6-octet UDH (3 UTF-16 units)."""

_CR = 0x0D
_ESC_BYTE = bytes([GSM7_ESC])
_ESC_RE = re.compile(re.escape(_ESC_BYTE) + b"(.?)", re.DOTALL)

# text -> unpacked septets, for str.translate (then latin-1 encode gives the octets).
_ENCODE_TABLE: dict[int, str] = {ord(ch): chr(code) for code, ch in enumerate(GSM7_BASIC_TABLE) if code != GSM7_ESC}
_ENCODE_TABLE.update({ord(ch): chr(GSM7_ESC) + chr(code) for ch, code in GSM7_EXTENSION_TABLE.items()})
# octet -> text, for octets 0..255 decoded latin-1: codes >= 0x80 are not septets.
_DECODE_TABLE: dict[int, str] = {code: ch for code, ch in enumerate(GSM7_BASIC_TABLE)}
_DECODE_TABLE.update({code: "?" for code in range(0x80, 0x100)})
_EXTENSION_DECODE: dict[int, str] = {code: ch for ch, code in GSM7_EXTENSION_TABLE.items()}

# Codecs for the national data_coding values (SMPP 3.4 §5.2.19), decoded leniently.
_NATIONAL_CODECS = {0x05: "shift_jis", 0x06: "iso8859_5", 0x07: "iso8859_8", 0x0A: "iso2022_jp", 0x0E: "euc_kr"}


@dataclass(frozen=True, slots=True)
class SmsPart:
    """One submit_sm's worth of an SMS."""

    data_coding: int
    esm_class: int
    """ESM_UDHI when short_message starts with a UDH, else 0."""
    short_message: bytes


@dataclass(frozen=True, slots=True)
class Concat:
    """Concatenation IE of a UDH: this is part `sequence` (1-based) of `total`."""

    reference: int
    total: int
    sequence: int


# --- GSM-7 -----------------------------------------------------------------------


def choose_encoding(text: str) -> TextEncoding:
    """"gsm7" when every character is in GSM 03.38 (basic or extension table), else "ucs2"."""
    return "gsm7" if is_gsm7(text) else "ucs2"


def gsm7_encode(text: str) -> bytes:
    """GSM 03.38 septets of `text`, one per octet; extension characters as ESC + code.

    Raises:
        ValueError: some character has no GSM-7 code (send the text as UCS-2).
    """
    if not is_gsm7(text):
        bad = next(ch for ch in text if not is_gsm7(ch))
        raise ValueError(f"{bad!r} is not in the GSM 03.38 alphabet")
    return text.translate(_ENCODE_TABLE).encode("latin-1")


def gsm7_decode(septets: bytes) -> str:
    """Text of unpacked septets (one per octet). Never raises.

    Octets >= 0x80 (not septets) read as "?". ESC + a code the extension table does
    not define reads as the basic-table character, and ESC ESC as a space, as TS
    23.038 §6.2.1.1 tells a receiver; a trailing lone ESC is dropped.
    """
    septets = bytes(septets)
    if _ESC_BYTE not in septets:
        return septets.decode("latin-1").translate(_DECODE_TABLE)

    def _ext(match: re.Match[bytes]) -> bytes:
        # Extension characters become private markers resolved after the table pass.
        code = match.group(1)
        if not code:
            return b""
        if code == _ESC_BYTE:
            return b" "
        if code[0] in _EXTENSION_DECODE:
            return b"\x80" + code  # 0x80 + code: marker for "extension code"
        return code

    marked = _ESC_RE.sub(_ext, septets.replace(b"\x80", b"\x81"))
    out: list[str] = []
    for i, chunk in enumerate(marked.split(b"\x80")):
        if i and chunk:
            out.append(_EXTENSION_DECODE[chunk[0]])
            chunk = chunk[1:]
        out.append(chunk.decode("latin-1").translate(_DECODE_TABLE))
    return "".join(out)


def gsm7_pack(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets 8 to 7 octets, least significant bits first (TS 23.038 §6.1.2.1.1).

    `fill_bits` zero bits come first, aligning the septets after a UDH. When the last
    octet would have 7 spare bits they hold CR, not zeros (which would read as "@"),
    per TS 23.038 §6.1.2.3.1; `gsm7_unpack` without a count drops that CR again.
    """
    _check_fill(fill_bits)
    bits = fill_bits
    acc = 0
    for septet in septets:
        acc |= (septet & 0x7F) << bits
        bits += 7
    octets = (bits + 7) // 8
    if octets * 8 - bits == 7:
        acc |= _CR << bits
    return acc.to_bytes(octets, "little")


def gsm7_unpack(data: bytes, septet_count: int | None = None, fill_bits: int = 0) -> bytes:
    """Unpack packed GSM-7 into one septet per octet. Never raises for any `data`.

    Without `septet_count` (SMPP's sm_length counts octets, not septets) every whole
    septet is returned, except a final CR in 7 spare bits, which is padding.
    A count larger than the data holds is clamped.

    Raises:
        ValueError: only for a bad argument: fill_bits outside 0..6, a negative count.
    """
    _check_fill(fill_bits)
    if septet_count is not None and septet_count < 0:
        raise ValueError(f"septet_count must be >= 0, got {septet_count}")
    data = bytes(data)
    bits = len(data) * 8 - fill_bits
    available = max(bits, 0) // 7
    count = available if septet_count is None else min(septet_count, available)
    acc = int.from_bytes(data, "little") >> fill_bits
    out = bytes((acc >> (7 * i)) & 0x7F for i in range(count))
    if septet_count is None and count and bits % 7 == 0 and out[-1] == _CR:
        out = out[:-1]
    return out


def _check_fill(fill_bits: int) -> None:
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, got {fill_bits}")


def _cr_stuffed(septets: bytes, fill_bits: int) -> bytes:
    """TS 23.038 §6.1.2.3.1: a packed message whose last character is CR and that ends
    on an octet boundary gets a second CR, so the receiver does not take its CR for
    padding (CR CR displays as CR)."""
    if septets and septets[-1] == _CR and (fill_bits + 7 * len(septets)) % 8 == 0:
        return septets + bytes([_CR])
    return septets


def _fill_bits_after(udh_octets: int) -> int:
    """Fill bits that put the first septet after a UDH on a septet boundary."""
    return (7 - (8 * udh_octets) % 7) % 7


# --- Text <-> octets ---------------------------------------------------------------


def encode_text(text: str, *, packed: bool) -> tuple[int, bytes]:
    """(data_coding, octets) for `text` in one piece: (0, GSM-7 unpacked or packed) or
    (8, UTF-16-BE). No UDH, no length limit: see split_sms / payload_sms for that."""
    if choose_encoding(text) == "gsm7":
        septets = gsm7_encode(text)
        return DC_GSM7, gsm7_pack(_cr_stuffed(septets, 0)) if packed else septets
    return DC_UCS2, text.encode("utf-16-be", "surrogatepass")


def decode_text(data_coding: int, payload: bytes, *, packed: bool = False, fill_bits: int = 0) -> str:
    """Text of `payload` (no UDH) per `data_coding`. Never raises for any octets.

    0 (and the GSM DCS groups that mean the default alphabet): GSM-7, unpacked unless
    `packed` (then `fill_bits` skip the alignment bits after a removed UDH); 1 IA5
    (ASCII); 3 Latin-1; 8 (and DCS UCS2 groups) UTF-16-BE, an odd octet or a lone
    surrogate becoming U+FFFD; 5/6/7/10/14 their national codecs; binary (2, 4, DCS
    8-bit) and unknown codings as lowercase hex, so nothing is silently lost.
    """
    payload = bytes(payload)
    kind = _coding_kind(data_coding)
    if kind == "gsm7":
        if packed:
            return gsm7_decode(gsm7_unpack(payload, fill_bits=min(max(fill_bits, 0), 6)))
        return gsm7_decode(payload)
    if kind == "ucs2":
        return payload.decode("utf-16-be", "replace")
    if kind == "binary":
        return payload.hex()
    return payload.decode(kind, "replace")


def _coding_kind(data_coding: int) -> str:
    """"gsm7", "ucs2", "binary" or a Python codec name for a data_coding octet.

    0x00-0x0F are SMPP's values; above, the octet is a GSM DCS (TS 23.038 §4): general
    data coding groups 0x10-0x3F (and the auto-deletion groups 0x40-0x7F) by bits 3-2,
    message waiting 0xC0-0xDF GSM-7 and 0xE0-0xEF UCS2, and 0xF0-0xFF by bit 2.
    """
    simple = {DC_GSM7: "gsm7", DC_IA5: "ascii", DC_LATIN1: "latin-1", DC_UCS2: "ucs2"}
    if data_coding in simple:
        return simple[data_coding]
    if data_coding in _NATIONAL_CODECS:
        return _NATIONAL_CODECS[data_coding]
    if 0x10 <= data_coding <= 0x7F:
        return ("gsm7", "binary", "ucs2", "binary")[(data_coding >> 2) & 0x03]
    if 0xC0 <= data_coding <= 0xDF:
        return "gsm7"
    if 0xE0 <= data_coding <= 0xEF:
        return "ucs2"
    if 0xF0 <= data_coding <= 0xFF:
        return "binary" if data_coding & 0x04 else "gsm7"
    return "binary"


# --- UDH and long SMS ----------------------------------------------------------------


def udh_concat(reference: int, total: int, sequence: int, *, ref16: bool = False) -> bytes:
    """A UDH with only a concatenation IE: 05 00 03 ref total seq (8-bit reference),
    or 06 08 04 ref_hi ref_lo total seq with `ref16`.

    Raises:
        ValueError: reference out of range for its size, total not 1..255, sequence
            not 1..total.
    """
    if not 0 <= reference <= (0xFFFF if ref16 else 0xFF):
        raise ValueError(f"concatenation reference {reference} out of range")
    if not 1 <= total <= 255 or not 1 <= sequence <= total:
        raise ValueError(f"part {sequence} of {total} is not a valid concatenation")
    if ref16:
        return bytes([6, 0x08, 4, reference >> 8, reference & 0xFF, total, sequence])
    return bytes([5, 0x00, 3, reference, total, sequence])


def parse_udh(short_message: bytes) -> tuple[Concat | None, bytes]:
    """Split a short_message that starts with a UDH (esm_class has ESM_UDHI).

    Returns:
        (concatenation IE or None, the user data after the UDH). 8-bit (IEI 0x00)
        and 16-bit (IEI 0x08) concatenation are recognised; other IEs are skipped; a
        concatenation IE with total 0 or sequence outside 1..total is ignored (TS
        23.040 §9.2.3.24.1). A UDH longer than the message is not a UDH: the octets
        come back unchanged with None. Never raises.
    """
    data = bytes(short_message)
    if not data or 1 + data[0] > len(data):
        return None, data
    header = data[1 : 1 + data[0]]
    concat: Concat | None = None
    pos = 0
    while pos + 2 <= len(header):
        iei, length = header[pos], header[pos + 1]
        value = header[pos + 2 : pos + 2 + length]
        pos += 2 + length
        if len(value) < length:
            break  # IE runs past the header: ignore it
        if iei == 0x00 and length == 3:
            found = Concat(value[0], value[1], value[2])
        elif iei == 0x08 and length == 4:
            found = Concat((value[0] << 8) | value[1], value[2], value[3])
        else:
            continue
        if found.total >= 1 and 1 <= found.sequence <= found.total:
            concat = found
    return concat, data[1 + data[0] :]


def decode_sms(data_coding: int, esm_class: int, short_message: bytes, *, packed: bool = False) -> tuple[Concat | None, str]:
    """(concatenation, text) of an inbound short_message: strips the UDH when
    esm_class has ESM_UDHI and skips the fill bits packed GSM-7 has after it.
    Never raises."""
    if not esm_class & ESM_UDHI:
        return None, decode_text(data_coding, short_message, packed=packed)
    concat, body = parse_udh(short_message)
    fill = _fill_bits_after(len(short_message) - len(body)) if packed else 0
    return concat, decode_text(data_coding, body, packed=packed, fill_bits=fill)


def payload_sms(text: str, *, packed: bool) -> tuple[int, bytes]:
    """(data_coding, message_payload) carrying the whole text, for binds that take
    long SMS in message_payload instead of concatenated parts."""
    return encode_text(text, packed=packed)


def split_sms(text: str, *, packed: bool, reference: int) -> list[SmsPart]:
    """The submit_sm parts that carry `text`.

    One part without a UDH when it fits (160 GSM-7 septets / 70 UTF-16 units);
    otherwise parts of at most 153 septets / 67 units, each behind an 8-bit-reference
    concatenation UDH with esm_class ESM_UDHI. A part never ends inside a GSM-7 escape
    pair or a UTF-16 surrogate pair (handsets would show garbage at the seam).

    Raises:
        ValueError: reference not 0..255, or more than 255 parts.
    """
    if not 0 <= reference <= 0xFF:
        raise ValueError(f"concatenation reference must be 0..255, got {reference}")
    if choose_encoding(text) == "gsm7":
        septets = gsm7_encode(text)
        if len(_cr_stuffed(septets, 0) if packed else septets) <= GSM7_SINGLE_SEPTETS:
            coding, body = encode_text(text, packed=packed)
            return [SmsPart(coding, 0, body)]
        chunks = _gsm7_chunks(septets, packed)
        fill = _fill_bits_after(6)
        bodies = [gsm7_pack(_cr_stuffed(c, fill), fill) if packed else c for c in chunks]
        coding = DC_GSM7
    else:
        octets = text.encode("utf-16-be", "surrogatepass")
        if len(octets) <= 2 * UCS2_SINGLE_UNITS:
            return [SmsPart(DC_UCS2, 0, octets)]
        bodies = _ucs2_chunks(octets)
        coding = DC_UCS2
    if len(bodies) > 255:
        raise ValueError(f"text needs {len(bodies)} parts, a concatenated SMS has at most 255")
    return [
        SmsPart(coding, ESM_UDHI, udh_concat(reference, len(bodies), i) + body) for i, body in enumerate(bodies, 1)
    ]


def _gsm7_chunks(septets: bytes, packed: bool) -> list[bytes]:
    """Cut septets into parts of <= 153, never between ESC and its code. Packed, a
    part that would need a stuffed CR (see _cr_stuffed) past the limit leaves its
    final CR to the next part instead."""
    fill = _fill_bits_after(6)
    chunks = []
    start = 0
    while start < len(septets):
        end = min(start + GSM7_PART_SEPTETS, len(septets))
        if septets[end - 1] == GSM7_ESC:
            end -= 1  # ESC is always the first octet of a pair in gsm7_encode output
        if packed and len(_cr_stuffed(septets[start:end], fill)) > GSM7_PART_SEPTETS:
            end -= 1
        chunks.append(septets[start:end])
        start = end
    return chunks


def _ucs2_chunks(octets: bytes) -> list[bytes]:
    """Cut UTF-16-BE into parts of <= 67 units, never inside a surrogate pair."""
    chunks = []
    start = 0
    limit = 2 * UCS2_PART_UNITS
    while start < len(octets):
        end = min(start + limit, len(octets))
        if end < len(octets) and 0xD8 <= octets[end - 2] <= 0xDB:
            end -= 2  # high surrogate: keep it with its low half
        chunks.append(octets[start:end])
        start = end
    return chunks
