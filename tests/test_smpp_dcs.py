"""The USSD data coding scheme (3GPP TS 23.038 §5) and data_coding overrides."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ussd_gateway.channels.smpp.dcs import decode_as, decode_mo, decode_ussd, mt_data_coding, ussd_alphabet
from ussd_gateway.channels.smpp.encoding import decode_text, gsm7_encode, gsm7_pack
from ussd_gateway.menus.text import GSM7_BASIC_TABLE

GSM7_TEXT = st.text(alphabet=st.sampled_from([c for c in GSM7_BASIC_TABLE if c not in "\x1b\r"] + list("{}[]~^|\\€")), max_size=80)
GSM7_GROUPS = [*range(0x00, 0x10), *range(0x20, 0x25), 0x40, 0x41, 0x50, 0x53, 0xF0, 0xF1, 0xF2, 0xF3, 0x12, 0x30, 0x80, 0xA5]
UCS2_GROUPS = [0x48, 0x49, 0x58, 0x5B, 0x98]


def test_examples() -> None:
    assert decode_ussd(0x0F, b"*090#", packed=False) == "*090#"
    assert decode_ussd(0x0F, gsm7_pack(b"*090#"), packed=True) == "*090#"
    assert decode_ussd(0x48, "Đ1".encode("utf-16-be"), packed=False) == "Đ1"
    assert decode_ussd(0x44, b"12", packed=False) == "12"  # 8-bit data: Latin-1
    assert decode_ussd(0x60, b"\x01\x02", packed=False) == "0102"  # compressed: hex
    assert ussd_alphabet(0x0F) == ("gsm7", None) and ussd_alphabet(0x11) == ("ucs2", "ucs2")
    assert ussd_alphabet(0xF4) == ("data8", None) and ussd_alphabet(0xE0) == ("binary", None)
    # SMS binds keep SMPP 3.4's table: 8 is UCS-2, 0x0F is not text.
    assert decode_mo(8, "hi".encode("utf-16-be"), packed=False) == "hi"
    assert decode_mo(0x0F, b"ab", packed=False) == "6162"
    assert decode_ussd(8, "hi".encode("utf-16-be"), packed=False, scheme="smpp") == "hi"


@given(st.integers(0, 255), st.binary(max_size=200), st.booleans(), st.sampled_from(["ussd", "smpp"]))
def test_never_raises(dcs: int, payload: bytes, packed: bool, scheme: str) -> None:
    assert isinstance(decode_ussd(dcs, payload, packed=packed, scheme=scheme), str)
    assert isinstance(decode_mo(dcs, payload, packed=packed), str)


@given(GSM7_TEXT, st.sampled_from(GSM7_GROUPS), st.booleans())
def test_gsm7_groups_round_trip(text: str, dcs: int, packed: bool) -> None:
    septets = gsm7_encode(text)
    payload = gsm7_pack(septets) if packed else septets
    assert decode_ussd(dcs, payload, packed=packed) == text


@given(st.text(max_size=60).filter(lambda t: all(not 0xD800 <= ord(c) <= 0xDFFF for c in t)), st.sampled_from(UCS2_GROUPS))
def test_ucs2_groups_round_trip(text: str, dcs: int) -> None:
    payload = text.encode("utf-16-be")
    if dcs >> 4 == 0x9:
        payload = b"\x00" + payload  # an empty UDH
    assert decode_ussd(dcs, payload, packed=False) == text


@given(GSM7_TEXT, st.sampled_from(["en", "vi", "fr"]))
def test_language_prefixed_groups(text: str, lang: str) -> None:
    """0x10: ISO 639 letters and CR before GSM-7 text; 0x11: two letters (two octets)
    before UCS-2. The prefix is not part of what the subscriber typed."""
    assert decode_ussd(0x10, gsm7_encode(lang + "\r" + text), packed=False) == text
    assert decode_ussd(0x11, gsm7_encode(lang) + text.encode("utf-16-be"), packed=False) == text


@given(st.integers(0, 255), st.text(max_size=40).filter(lambda t: all(not 0xD800 <= ord(c) <= 0xDFFF for c in t)))
def test_overrides_win(dcs: int, text: str) -> None:
    payload = text.encode("utf-16-be")
    assert decode_ussd(dcs, payload, packed=False, overrides={dcs: "ucs2"}) == text
    assert decode_mo(dcs, payload, packed=False, overrides={dcs: "ucs2"}) == text
    assert decode_as("utf8", text.encode(), packed=False) == text


@given(st.integers(0, 255), st.binary(max_size=100))
def test_smpp_scheme_is_the_sms_reading(dcs: int, payload: bytes) -> None:
    assert decode_ussd(dcs, payload, packed=False, scheme="smpp") == decode_text(dcs, payload)


def test_mt_data_coding() -> None:
    assert mt_data_coding(0, None) == 0 and mt_data_coding(8, {}) == 8
    assert mt_data_coding(0, {"gsm7": 0x0F}) == 0x0F and mt_data_coding(8, {"gsm7": 0x0F}) == 8
    assert mt_data_coding(8, {"ucs2": 0x48}) == 0x48
