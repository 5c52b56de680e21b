"""Tests for smpp.encoding: GSM-7 / UCS-2 SMS text, packing, UDH and long-SMS splitting."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ussd_gateway.menus.text import GSM7_BASIC_TABLE, GSM7_EXTENSION_TABLE, gsm7_septets, ucs2_units
from ussd_gateway.channels.smpp.encoding import (
    DC_GSM7,
    DC_UCS2,
    ESM_UDHI,
    GSM7_PART_SEPTETS,
    UCS2_PART_UNITS,
    Concat,
    SmsPart,
    choose_encoding,
    decode_sms,
    decode_text,
    encode_text,
    gsm7_decode,
    gsm7_encode,
    gsm7_pack,
    gsm7_unpack,
    parse_udh,
    payload_sms,
    split_sms,
    udh_concat,
)

GSM_CHARS = [ch for ch in GSM7_BASIC_TABLE if ch != "\x1b"] + list(GSM7_EXTENSION_TABLE)
gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=600)
# Text that needs UCS-2: Vietnamese, CJK, emoji (non-BMP: surrogate pairs), plus GSM.
ucs2_text = st.text(
    alphabet=st.one_of(st.sampled_from(GSM_CHARS), st.sampled_from("ăâđêôơưạảấốồ中文😀🇻🇳𝄞")),
    max_size=400,
).filter(lambda t: choose_encoding(t) == "ucs2")
any_text = st.one_of(gsm_text, ucs2_text)


def reassemble(parts: list[SmsPart], *, packed: bool) -> str:
    """Text of parts as a handset would join them, checking each UDH on the way."""
    texts = []
    for i, part in enumerate(parts, 1):
        concat, text = decode_sms(part.data_coding, part.esm_class, part.short_message, packed=packed)
        if len(parts) > 1:
            assert concat is not None and (concat.sequence, concat.total) == (i, len(parts))
        texts.append(text)
    return "".join(texts)


class TestGsm7Vectors:
    """Known GSM-7 vectors from TS 23.038 and common references."""

    def test_hello_packed(self) -> None:
        """"hello" packs to e8329bfd06."""
        assert gsm7_pack(gsm7_encode("hello")).hex() == "e8329bfd06"
        assert gsm7_decode(gsm7_unpack(bytes.fromhex("e8329bfd06"))) == "hello"

    def test_hellohello_packed(self) -> None:
        """The 3GPP example "hellohello" packs to e8329bfd4697d9ec37."""
        assert gsm7_pack(gsm7_encode("hellohello")).hex() == "e8329bfd4697d9ec37"
        assert gsm7_decode(gsm7_unpack(bytes.fromhex("e8329bfd4697d9ec37"))) == "hellohello"

    def test_extension_characters(self) -> None:
        """Extension characters are ESC + code: € 1b65, { 1b28, and back."""
        assert gsm7_encode("€").hex() == "1b65"
        assert gsm7_encode("{").hex() == "1b28"
        assert gsm7_encode("[~]|\\^\f}").hex() == "1b3c1b3d1b3e1b401b2f1b141b0a1b29"
        assert gsm7_decode(bytes.fromhex("1b651b28")) == "€{"

    def test_basic_table_positions(self) -> None:
        """@ is 0x00, £ 0x01, Δ 0x10, ¡ 0x40, à 0x7f."""
        assert gsm7_encode("@£Δ¡à") == bytes([0x00, 0x01, 0x10, 0x40, 0x7F])

    def test_non_gsm_refused(self) -> None:
        """gsm7_encode refuses characters GSM-7 lacks (backtick, Vietnamese)."""
        for text in ("`", "ư", "a\tb"):
            with pytest.raises(ValueError):
                gsm7_encode(text)

    def test_seven_spare_bits_hold_cr(self) -> None:
        """7 septets in 7 octets: the spare bits are CR, which unpack drops again."""
        packed = gsm7_pack(gsm7_encode("1234567"))
        assert packed.hex() == "31d98c56b3dd1a"
        assert gsm7_unpack(packed) == gsm7_encode("1234567")
        assert gsm7_unpack(packed, 8)[-1] == 0x0D

    def test_fill_bits(self) -> None:
        """One fill bit shifts the septets by one bit (after a 6-octet UDH)."""
        assert gsm7_pack(b"\x01", 1) == b"\x02"
        assert gsm7_unpack(b"\x02", 1, 1) == b"\x01"
        with pytest.raises(ValueError):
            gsm7_pack(b"", 7)

    def test_lenient_decoding(self) -> None:
        """Octets >= 0x80 read "?", ESC + undefined reads the basic char, ESC ESC a space, a lone ESC nothing."""
        assert gsm7_decode(b"a\x80\xffb") == "a??b"
        assert gsm7_decode(b"\x1b\x41") == "A"
        assert gsm7_decode(b"\x1b\x1bx") == " x"
        assert gsm7_decode(b"ok\x1b") == "ok"
        assert gsm7_decode(b"\x1b\x90\x1b\x80") == "??"


class TestGsm7Properties:
    """GSM-7 encoders and decoders are inverse for all GSM text."""

    @given(gsm_text)
    def test_unpacked_round_trip(self, text: str) -> None:
        """gsm7_decode(gsm7_encode(t)) == t, and the septet count is menus.text's."""
        septets = gsm7_encode(text)
        assert gsm7_decode(septets) == text
        assert len(septets) == gsm7_septets(text)

    @given(st.binary(max_size=300).map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
    def test_pack_unpack_with_count(self, septets: bytes, fill: int) -> None:
        """unpack(pack(s, f), len(s), f) == s for any septets and fill bits."""
        packed = gsm7_pack(septets, fill)
        assert len(packed) == math.ceil((7 * len(septets) + fill) / 8)
        assert gsm7_unpack(packed, len(septets), fill) == septets

    @given(gsm_text)
    def test_packed_text_round_trip(self, text: str) -> None:
        """decode_text(0, packed) gives the text back; a final CR on an octet boundary comes back doubled (TS 23.038 CR CR)."""
        coding, payload = encode_text(text, packed=True)
        decoded = decode_text(coding, payload, packed=True)
        assert decoded == text or (text.endswith("\r") and decoded == text + "\r")

    @given(gsm_text, st.integers(0, 6))
    def test_packed_without_count_with_fill(self, text: str, fill: int) -> None:
        """Without a count, unpack gives the septets back, except a final CR exactly on an octet boundary."""
        septets = gsm7_encode(text)
        out = gsm7_unpack(gsm7_pack(septets, fill), fill_bits=fill)
        on_boundary = (fill + 7 * len(septets)) % 8 == 0
        if septets.endswith(b"\r") and on_boundary:
            assert out == septets[:-1]
        else:
            assert out == septets

    def test_final_cr_on_boundary_is_stuffed(self) -> None:
        """encode_text doubles a final CR on an octet boundary, so it is not read as padding."""
        coding, payload = encode_text("a" * 7 + "\r", packed=True)
        assert len(payload) == 8  # 9 septets: the CR and its stuffed twin
        assert decode_text(coding, payload, packed=True) == "a" * 7 + "\r\r"


class TestEncodeText:
    """encode_text picks data_coding 0 or 8."""

    def test_choice(self) -> None:
        """GSM text is 0 (packed or not), Vietnamese is 8 UTF-16-BE."""
        assert encode_text("DK 9237", packed=False) == (DC_GSM7, b"DK 9237")
        assert encode_text("hello", packed=True) == (DC_GSM7, bytes.fromhex("e8329bfd06"))
        assert encode_text("Đăng ký", packed=False) == (DC_UCS2, "Đăng ký".encode("utf-16-be"))
        assert choose_encoding("€{}") == "gsm7" and choose_encoding("`") == "ucs2"

    @given(ucs2_text)
    def test_ucs2_round_trip(self, text: str) -> None:
        """UCS-2 text (incl. non-BMP) decodes back exactly."""
        coding, payload = encode_text(text, packed=False)
        assert coding == DC_UCS2 and decode_text(coding, payload) == text


class TestDecodeText:
    """Inbound decoding per data_coding, never raising."""

    def test_codings(self) -> None:
        """1 IA5, 3 Latin-1, 8 UCS-2, 4 binary as hex, GSM DCS groups."""
        assert decode_text(1, b"DK") == "DK"
        assert decode_text(1, b"D\xffK") == "D\ufffdK"
        assert decode_text(3, b"caf\xe9") == "café"
        assert decode_text(8, "Hủy".encode("utf-16-be")) == "Hủy"
        assert decode_text(4, b"\x01\xab") == "01ab"
        assert decode_text(0xF0, b"hi") == "hi"  # DCS class 0, GSM-7
        assert decode_text(0x18, "ư".encode("utf-16-be")) == "ư"  # DCS general group, UCS2
        assert decode_text(6, b"\xb0") == "А"  # ISO-8859-5 Cyrillic

    def test_bad_utf16(self) -> None:
        """An odd octet or a lone surrogate becomes U+FFFD."""
        assert decode_text(8, b"\x00a\x00") == "a\ufffd"
        assert "\ufffd" in decode_text(8, b"\xd8\x00\x00a")
        assert "\ufffd" in decode_text(8, b"\xdc\x00")

    @settings(max_examples=300)
    @given(st.integers(0, 255), st.binary(max_size=300), st.booleans(), st.integers(0, 6))
    def test_never_raises(self, coding: int, payload: bytes, packed: bool, fill: int) -> None:
        """Any data_coding, octets and packing decode to a str."""
        assert isinstance(decode_text(coding, payload, packed=packed, fill_bits=fill), str)
        assert isinstance(decode_sms(coding, ESM_UDHI, payload, packed=packed)[1], str)

    @given(st.sampled_from([0, 1, 3, 8]), st.binary(max_size=300))
    def test_common_codings_never_raise(self, coding: int, payload: bytes) -> None:
        """data_coding 0, 1, 3 and 8 decode arbitrary octets."""
        assert isinstance(decode_text(coding, payload), str)


class TestUdh:
    """Concatenation UDH written and parsed."""

    def test_eight_bit(self) -> None:
        """05 00 03 ref total seq."""
        assert udh_concat(0x2A, 3, 1) == bytes.fromhex("0500032a0301")
        assert parse_udh(bytes.fromhex("0500032a0302") + b"body") == (Concat(0x2A, 3, 2), b"body")

    def test_sixteen_bit(self) -> None:
        """06 08 04 ref_hi ref_lo total seq."""
        assert parse_udh(bytes.fromhex("060804beef0201") + b"x") == (Concat(0xBEEF, 2, 1), b"x")

    def test_other_ies_skipped(self) -> None:
        """A port-addressing IE before the concatenation IE is skipped."""
        udh = bytes.fromhex("0b" "0504" "0b841111" "0003" "070201")
        assert parse_udh(udh + b"z") == (Concat(7, 2, 1), b"z")

    def test_malformed(self) -> None:
        """Invalid concatenation values are ignored; a UDH longer than the message is no UDH."""
        assert parse_udh(bytes.fromhex("050003070300")) == (None, b"")
        assert parse_udh(bytes.fromhex("050003070003")) == (None, b"")
        assert parse_udh(bytes.fromhex("090003")) == (None, bytes.fromhex("090003"))
        assert parse_udh(b"") == (None, b"")
        assert parse_udh(bytes.fromhex("0300050a")) == (None, b"")  # IE runs past the header

    def test_builder_validates(self) -> None:
        """udh_concat refuses references and part numbers out of range."""
        for args in ((256, 2, 1), (1, 0, 1), (1, 2, 3), (1, 2, 0), (-1, 2, 1)):
            with pytest.raises(ValueError):
                udh_concat(*args)

    @given(st.integers(0, 0xFFFF), st.integers(1, 255), st.data(), st.binary(max_size=50), st.booleans())
    def test_inverse(self, ref: int, total: int, data: st.DataObject, body: bytes, ref16: bool) -> None:
        """parse_udh(udh_concat(...) + body) gives the same Concat and body."""
        seq = data.draw(st.integers(1, total))
        ref = ref if ref16 else ref & 0xFF
        assert parse_udh(udh_concat(ref, total, seq, ref16=ref16) + body) == (Concat(ref, total, seq), body)

    @given(st.binary(max_size=200))
    def test_never_raises(self, data: bytes) -> None:
        """Any octets parse; the body is always a suffix of the input."""
        _, body = parse_udh(data)
        assert data.endswith(body)


class TestSplitSms:
    """Long SMS split into concatenated parts."""

    @pytest.mark.parametrize("packed", [False, True])
    def test_single_part_limits(self, packed: bool) -> None:
        """160 GSM-7 septets and 70 UCS-2 units are one part without UDH; one more makes two."""
        assert len(split_sms("a" * 160, packed=packed, reference=1)) == 1
        assert split_sms("a" * 160, packed=packed, reference=1)[0].esm_class == 0
        assert len(split_sms("a" * 161, packed=packed, reference=1)) == 2
        assert len(split_sms("€" * 80, packed=packed, reference=1)) == 1
        assert len(split_sms("ư" * 70, packed=packed, reference=1)) == 1
        assert len(split_sms("ư" * 71, packed=packed, reference=1)) == 2

    def test_packed_160_ending_in_cr(self) -> None:
        """160 packed septets ending in CR need a stuffed CR (161): two parts, not 141 octets."""
        text = "a" * 159 + "\r"
        assert len(split_sms(text, packed=False, reference=1)) == 1
        parts = split_sms(text, packed=True, reference=1)
        assert len(parts) == 2 and all(len(p.short_message) <= 140 for p in parts)

    def test_part_shape(self) -> None:
        """Parts carry UDHI, the 8-bit UDH with our reference, and at most 153 septets."""
        parts = split_sms("x" * 400, packed=False, reference=0x2A)
        assert [p.short_message[:6].hex() for p in parts] == ["0500032a0301", "0500032a0302", "0500032a0303"]
        assert [len(p.short_message) - 6 for p in parts] == [153, 153, 94]
        assert all(p.esm_class == ESM_UDHI and p.data_coding == DC_GSM7 for p in parts)

    def test_packed_parts_fit_140_octets(self) -> None:
        """Packed GSM-7 parts are UDH + 134 octets (1 fill bit + 153 septets)."""
        parts = split_sms("y" * 400, packed=True, reference=1)
        assert [len(p.short_message) for p in parts] == [140, 140, 6 + math.ceil((1 + 7 * 94) / 8)]
        assert reassemble(parts, packed=True) == "y" * 400

    def test_escape_pair_not_split(self) -> None:
        """A € straddling the 153-septet boundary moves whole to the next part."""
        text = "a" * 152 + "€" + "b" * 10
        parts = split_sms(text, packed=False, reference=1)
        assert parts[0].short_message[6:] == b"a" * 152
        assert parts[1].short_message[6:8] == b"\x1b\x65"
        assert reassemble(parts, packed=False) == text

    def test_surrogate_pair_not_split(self) -> None:
        """An emoji straddling the 67-unit boundary moves whole to the next part."""
        text = "ư" * 66 + "😀" + "ư" * 10
        parts = split_sms(text, packed=False, reference=1)
        assert len(parts[0].short_message) == 6 + 2 * 66
        assert reassemble(parts, packed=False) == text

    def test_packed_cr_at_part_end(self) -> None:
        """A CR ending a full packed part would need a stuffed CR: it moves to the next part."""
        text = "a" * 152 + "\r" + "b" * 10
        parts = split_sms(text, packed=True, reference=1)
        assert all(len(p.short_message) <= 140 for p in parts)
        assert reassemble(parts, packed=True) == text

    def test_validation(self) -> None:
        """Reference must be 8-bit; more than 255 parts is refused."""
        with pytest.raises(ValueError):
            split_sms("x", packed=False, reference=256)
        with pytest.raises(ValueError):
            split_sms("x" * (153 * 255 + 1), packed=False, reference=1)

    @settings(max_examples=150, deadline=None)
    @given(any_text, st.booleans(), st.integers(0, 255))
    def test_parts_reassemble_and_fit(self, text: str, packed: bool, reference: int) -> None:
        """Parts decode and join to the text; each fits its limit; same reference throughout."""
        parts = split_sms(text, packed=packed, reference=reference)
        joined = reassemble(parts, packed=packed)
        assert joined == text or (packed and text.endswith("\r") and joined == text + "\r")
        single = len(parts) == 1
        for part in parts:
            concat, body = parse_udh(part.short_message) if not single else (None, part.short_message)
            assert len(part.short_message) <= 140 or (not packed and part.data_coding == DC_GSM7)
            if part.data_coding == DC_UCS2:
                assert len(body) // 2 <= (70 if single else UCS2_PART_UNITS)
            elif not packed:
                assert len(body) <= (160 if single else GSM7_PART_SEPTETS)
            if not single:
                assert concat is not None and concat.reference == reference
                assert part.esm_class == ESM_UDHI

    @given(st.text(alphabet="abc XYZ019", max_size=2000), st.booleans())
    def test_gsm7_part_count(self, text: str, packed: bool) -> None:
        """Plain GSM-7 text: 1 part up to 160, else ceil(n / 153)."""
        expected = 1 if len(text) <= 160 else math.ceil(len(text) / 153)
        assert len(split_sms(text, packed=packed, reference=1)) == expected

    @given(st.text(alphabet="ăâđêôơư abc", min_size=1, max_size=1000).filter(lambda t: choose_encoding(t) == "ucs2"))
    def test_ucs2_part_count(self, text: str) -> None:
        """BMP UCS-2 text: 1 part up to 70, else ceil(n / 67)."""
        units = ucs2_units(text)
        expected = 1 if units <= 70 else math.ceil(units / 67)
        assert len(split_sms(text, packed=False, reference=1)) == expected


class TestPayloadSms:
    """message_payload carries the whole text."""

    @given(any_text, st.booleans())
    def test_whole_text(self, text: str, packed: bool) -> None:
        """payload_sms is one piece that decodes back to the text."""
        coding, payload = payload_sms(text, packed=packed)
        decoded = decode_text(coding, payload, packed=packed)
        assert decoded == text or (packed and text.endswith("\r") and decoded == text + "\r")
