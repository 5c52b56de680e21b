"""Reading `data_coding` as the sender meant it: USSD's data coding scheme, SMPP's
values, and the bind's overrides for SMSCs that break both.

USSD gateways usually copy the network's USSD data coding scheme into `data_coding`:
that is the Cell Broadcast DCS of 3GPP TS 23.038 §5, not SMPP 3.4's table (0x0F is
"GSM 7-bit, language unspecified", not a national character set). `ussd_alphabet`
reads that family; `decode_ussd` and `decode_mo` turn octets into text for USSD and SMS
`deliver_sm`, with a bind's `mo_data_coding_map` winning over every table. Nothing
here raises for any octets: bad input from the network becomes replacement
characters or hex, never a dead link.
"""

from __future__ import annotations

from collections.abc import Mapping

from ussd_gateway.channels.smpp.encoding import decode_text, gsm7_decode, gsm7_unpack, parse_udh

__all__ = ["decode_as", "decode_mo", "decode_ussd", "mt_data_coding", "ussd_alphabet"]

# 3GPP TS 23.038 §5, CBS data coding scheme: (alphabet, language-prefix kind).
# Alphabets: gsm7, ucs2, data8 (8-bit data), compressed (TS 23.042: not decodable
# here), binary (WAP-defined groups). Reserved values are "assumed to be the GSM 7 bit
# default alphabet" by a receiving entity (§5), which is what `ussd_alphabet` does.


def ussd_alphabet(dcs: int) -> tuple[str, str | None]:
    """(alphabet, language prefix) of a USSD/CBS data coding scheme octet.

    The prefix is None, "gsm7" (0x10: two GSM-7 letters of ISO 639 and a CR open the
    text) or "ucs2" (0x11: two letters in 7 bits padded to two octets, then UCS-2).
    """
    dcs &= 0xFF
    group = dcs >> 4
    if group == 0x0 or group == 0x2 or group == 0x3:
        return "gsm7", None  # languages (0x00-0x0F, 0x20-0x24) and reserved values
    if group == 0x1:
        if dcs == 0x10:
            return "gsm7", "gsm7"
        if dcs == 0x11:
            return "ucs2", "ucs2"
        return "gsm7", None  # 0x12-0x1F reserved
    if 0x4 <= group <= 0x7 or group == 0x9:
        # General data coding (01xx: bit 5 compressed, bit 4 class meaningful) and
        # messages with a UDH (1001): bits 3-2 the alphabet (11 reserved: GSM-7).
        if group <= 0x7 and dcs & 0x20:
            return "compressed", None
        return ("gsm7", "data8", "ucs2", "gsm7")[(dcs >> 2) & 0x03], None
    if group == 0xE:
        return "binary", None  # coding groups defined for WAP
    if group == 0xF:
        return ("data8" if dcs & 0x04 else "gsm7"), None  # bit 3 reserved, bits 1-0 class
    return "gsm7", None  # 0x8x, 0xAx-0xDx reserved


def decode_as(alphabet: str, payload: bytes, *, packed: bool, fill_bits: int = 0) -> str:
    """Text of `payload` in a named alphabet (the names of `mo_data_coding_map` and of
    `ussd_alphabet`). Never raises."""
    payload = bytes(payload)
    if alphabet == "gsm7":
        return gsm7_decode(gsm7_unpack(payload, fill_bits=fill_bits) if packed else payload)
    if alphabet == "ucs2":
        return payload.decode("utf-16-be", "replace")
    if alphabet in ("latin1", "data8"):
        return payload.decode("latin-1")
    if alphabet == "ia5":
        return payload.decode("ascii", "replace")
    if alphabet == "utf8":
        return payload.decode("utf-8", "replace")
    return payload.hex()  # binary, compressed: nothing silently lost


def decode_ussd(
    data_coding: int, payload: bytes, *, packed: bool, scheme: str = "ussd", overrides: Mapping[int, str] | None = None
) -> str:
    """Text of a USSD `deliver_sm`'s message.

    `scheme` "ussd" reads `data_coding` as the USSD DCS (TS 23.038 §5: the language
    groups, 0x10/0x11 with their language prefix dropped, the general groups, 0xFx);
    "smpp" with SMPP 3.4's table. 8-bit data reads as Latin-1 (USSD carries text);
    compressed text, which nothing here can expand, as hex. Never raises.
    """
    payload = bytes(payload)
    if overrides and data_coding in overrides:
        return decode_as(overrides[data_coding], payload, packed=packed)
    if scheme != "ussd":
        return decode_text(data_coding, payload, packed=packed)
    alphabet, prefix = ussd_alphabet(data_coding)
    if data_coding >> 4 == 0x9:
        _concat, payload = parse_udh(payload)
    if prefix == "ucs2":
        return decode_as("ucs2", payload[2:], packed=packed)
    text = decode_as(alphabet, payload, packed=packed)
    if prefix == "gsm7":
        text = text[3:] if text[2:3] == "\r" else text[2:]
    return text


def decode_mo(
    data_coding: int, payload: bytes, *, packed: bool, fill_bits: int = 0, overrides: Mapping[int, str] | None = None
) -> str:
    """Text of an SMS `deliver_sm`'s message (no UDH): SMPP 3.4's `data_coding`
    unless the bind maps that value. Never raises."""
    if overrides and data_coding in overrides:
        return decode_as(overrides[data_coding], payload, packed=packed, fill_bits=fill_bits)
    return decode_text(data_coding, payload, packed=packed, fill_bits=fill_bits)


def mt_data_coding(data_coding: int, mapping: Mapping[str, int] | None) -> int:
    """The `data_coding` to send for text our encoder coded as 0 (GSM-7) or 8 (UCS-2),
    per a bind's or dialect's {gsm7, ucs2} map."""
    if not mapping:
        return data_coding
    alphabet = "gsm7" if data_coding == 0 else "ucs2" if data_coding == 8 else None
    return mapping.get(alphabet, data_coding) if alphabet else data_coding
