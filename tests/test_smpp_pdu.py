"""Tests for smpp.pdu: the SMPP PDU codec over smpplib, and its workarounds."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import smpplib.smpp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ussd_gateway.channels.smpp.pdu import (
    COMMAND_IDS,
    ESME_RINVCMDID,
    ESME_RINVCMDLEN,
    ESME_RINVOPTPARSTREAM,
    ESME_RINVPARLEN,
    ESME_ROK,
    ESME_RTHROTTLED,
    HEADER_BYTES,
    MAX_PDU_BYTES,
    Pdu,
    PduError,
    command_name,
    decode,
    encode,
    frame_length,
    is_response,
    response_name,
)


def header(length: int, command_id: int, status: int, sequence: int) -> bytes:
    return struct.pack(">LLLL", length, command_id, status, sequence)


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def with_length(body_after_length: bytes) -> bytes:
    """Prefix command_length to everything after it."""
    return struct.pack(">L", 4 + len(body_after_length)) + body_after_length


# A USSD deliver_sm as a gateway sends it (PSSR indication for *090#), built by hand.
USSD_DELIVER_SM = with_length(
    struct.pack(">LLL", 0x00000005, 0, 0x0000_0102)
    + b"USSD\0"  # service_type
    + b"\x01\x01" + b"84901234567\0"  # source ton/npi/addr
    + b"\x00\x00" + b"*090#\0"  # dest ton/npi/addr
    + b"\x00\x00\x00"  # esm_class, protocol_id, priority_flag
    + b"\0\0"  # schedule_delivery_time, validity_period
    + b"\x00\x00\x0f\x00"  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    + b"\x05*090#"  # sm_length, short_message
    + tlv(0x0501, b"\x01")  # ussd_service_op = PSSR indication
    + tlv(0x1383, b"\x2a\x00")  # its_session_info
    + tlv(0x0204, b"\x00\x07")  # user_message_reference
)


class TestSmpplibPitfall:
    """smpplib 2.2.4 cannot parse a USSD deliver_sm; ours can (the reason smpp.pdu exists)."""

    def test_smpplib_raises_keyerror_on_ussd_deliver_sm(self) -> None:
        """smpplib's parse_pdu raises KeyError: 'ussd_service_op' (DeliverSM.params lacks it)."""

        class Client:  # parse_pdu needs a client with next_sequence, or AttributeError
            sequence = 0

            def next_sequence(self) -> int:
                return 1

        with pytest.raises(KeyError, match="ussd_service_op"):
            smpplib.smpp.parse_pdu(USSD_DELIVER_SM, client=Client())

    def test_ours_decodes_ussd_deliver_sm(self) -> None:
        """The same bytes decode with every USSD TLV and mandatory field."""
        pdu = decode(USSD_DELIVER_SM)
        assert (pdu.command, pdu.command_id, pdu.status, pdu.sequence) == ("deliver_sm", 5, 0, 0x102)
        assert pdu.fields["ussd_service_op"] == 1
        assert pdu.fields["its_session_info"] == 0x2A00
        assert pdu.fields["user_message_reference"] == 7
        assert pdu.fields["service_type"] == "USSD"
        assert pdu.fields["source_addr"] == "84901234567"
        assert pdu.fields["source_addr_ton"] == 1
        assert pdu.fields["destination_addr"] == "*090#"
        assert pdu.fields["data_coding"] == 0x0F
        assert pdu.fields["short_message"] == b"*090#"
        assert "sm_length" not in pdu.fields
        assert "message_payload" not in pdu.fields

    def test_smpplib_is_not_patched_globally(self) -> None:
        """Our fix is a subclass: smpplib's own DeliverSM still lacks the TLV."""
        from smpplib import command

        assert "ussd_service_op" not in command.DeliverSM.params

    def test_data_sm_with_ussd_service_op(self) -> None:
        """data_sm (same smpplib gap) carries ussd_service_op both ways."""
        raw = encode("data_sm", sequence=3, ussd_service_op=18, its_session_info=5, user_message_reference=9)
        expected = {"ussd_service_op": 18, "its_session_info": 5, "user_message_reference": 9}
        assert decode(raw).fields.items() >= expected.items()


class TestWireBytes:
    """Encoder output compared with hand-built bytes, so a bug cannot hide in a round trip."""

    def test_ussd_submit_sm_bytes(self) -> None:
        """A USSR request (op 2) with its_session_info is byte-exact."""
        expected = (
            header(74, 0x00000004, 0, 0x2A)
            + b"USSD\0"
            + b"\x00\x00" + b"9237\0"
            + b"\x01\x01" + b"84901234567\0"
            + b"\x00\x00\x00\0\0\x00\x00\x00\x00"
            + b"\x05" + b"1.Yes"
            + b"\x02\x04\x00\x02\x00\x00"  # user_message_reference = 0
            + b"\x13\x83\x00\x02\x0a\x01"  # its_session_info = 0x0A01
            + b"\x05\x01\x00\x01\x02"  # ussd_service_op = 2 (USSR request)
        )
        raw = encode(
            "submit_sm",
            sequence=0x2A,
            service_type="USSD",
            source_addr="9237",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="84901234567",
            short_message=b"1.Yes",
            user_message_reference=0,
            its_session_info=0x0A01,
            ussd_service_op=2,
        )
        assert raw == expected

    def test_sequence_is_honoured(self) -> None:
        """smpplib ignores sequence=...; ours writes it."""
        raw = encode("enquire_link", sequence=0x7FFFFFFF)
        assert raw == header(16, 0x15, 0, 0x7FFFFFFF)

    def test_interface_version_is_honoured(self) -> None:
        """smpplib forces 0x34 over the kwarg; ours writes what we ask, 0x34 by default."""
        v50 = encode("bind_transceiver", sequence=1, system_id="gw", password="pw", interface_version=0x50)
        v34 = encode("bind_transceiver", sequence=1, system_id="gw", password="pw")
        body = b"gw\0pw\0\0"
        assert v50 == header(16 + len(body) + 4, 9, 0, 1) + body + b"\x50\x00\x00\x00"
        assert v34 == header(16 + len(body) + 4, 9, 0, 1) + body + b"\x34\x00\x00\x00"

    def test_zero_int_tlvs_are_written(self) -> None:
        """TLV ints of value 0 are written at their full size (1 and 2 octets)."""
        raw = encode("deliver_sm", sequence=1, ussd_service_op=0, its_session_info=0, message_state=0)
        tail = raw[-(5 + 6 + 5) :]
        assert tlv(0x1383, b"\0\0") in tail and tlv(0x0501, b"\0") in tail and tlv(0x0427, b"\0") in tail

    def test_empty_string_tlv_is_a_nul(self) -> None:
        """An empty C-string TLV is sent as one NUL (smpplib drops it)."""
        raw = encode("deliver_sm", sequence=1, receipted_message_id="")
        assert raw.endswith(tlv(0x001E, b"\0"))
        assert decode(raw).fields["receipted_message_id"] == ""

    def test_string_tlv_is_latin1_and_whole(self) -> None:
        """A non-ASCII string TLV is latin-1 with a true length (smpplib: UTF-8, char count)."""
        msg_id = "é" + "x" * 63
        raw = encode("deliver_sm", sequence=1, receipted_message_id=msg_id)
        assert raw.endswith(tlv(0x001E, msg_id.encode("latin-1") + b"\0"))

    def test_empty_octet_tlv_has_length_zero(self) -> None:
        """message_payload=b"" is a zero-length TLV, not dropped."""
        raw = encode("submit_sm", sequence=1, message_payload=b"")
        assert raw.endswith(tlv(0x0424, b""))
        assert decode(raw).fields["message_payload"] == b""

    def test_empty_mandatory_fields(self) -> None:
        """Empty C-strings are one NUL, zero ints one octet, empty short_message sm_length 0."""
        raw = encode("submit_sm", sequence=1)
        assert raw == header(16 + 17, 4, 0, 1) + b"\0" + b"\0\0\0" * 2 + b"\0" * 9 + b"\0"

    def test_error_response_has_no_body(self) -> None:
        """An error submit_sm_resp / bind_resp is header-only (SMPP 3.4 §4.4.2)."""
        assert encode("submit_sm_resp", sequence=9, status=ESME_RTHROTTLED) == header(16, 0x80000004, 0x58, 9)
        assert encode("bind_transceiver_resp", sequence=1, status=0x0E) == header(16, 0x80000009, 0x0E, 1)

    def test_ok_submit_sm_resp(self) -> None:
        """submit_sm_resp carries the message_id as a C-string."""
        assert encode("submit_sm_resp", sequence=9, message_id="ab12") == header(21, 0x80000004, 0, 9) + b"ab12\0"


ROUND_TRIPS: list[tuple[str, int, dict[str, Any]]] = [
    ("bind_transceiver", 0, dict(system_id="ussdgw", password="secret", system_type="USSD", addr_ton=1, addr_npi=1, address_range="9237")),
    ("bind_transmitter", 0, dict(system_id="ussdgw", password="secret")),
    ("bind_receiver", 0, dict(system_id="ussdgw", password="secret", interface_version=0x34)),
    ("bind_transceiver_resp", 0, dict(system_id="SMSC", sc_interface_version=0x34)),
    ("bind_transmitter_resp", 0, dict(system_id="SMSC")),
    ("bind_receiver_resp", 0x0D, {}),
    ("submit_sm", 0, dict(service_type="USSD", source_addr="9237", destination_addr="84901234567", dest_addr_ton=1, dest_addr_npi=1, short_message=b"Menu\n1.A", ussd_service_op=17, its_session_info=0x0101, user_message_reference=3)),
    ("submit_sm", 0, dict(source_addr="9237", destination_addr="84901234567", esm_class=0x40, data_coding=8, registered_delivery=1, short_message=b"\x05\x00\x03\x07\x02\x01" + "ư".encode("utf-16-be"))),
    ("submit_sm", 0, dict(source_addr="999", destination_addr="84901234567", data_coding=0, message_payload=b"x" * 1000)),
    ("submit_sm_resp", 0, dict(message_id="5f3a")),
    ("submit_sm_resp", ESME_RTHROTTLED, {}),
    ("deliver_sm", 0, dict(service_type="USSD", source_addr="84901234567", destination_addr="*090#", short_message=b"*090#", ussd_service_op=1, its_session_info=7)),
    ("deliver_sm", 0, dict(source_addr="84901234567", destination_addr="9237", short_message=b"DK")),
    ("deliver_sm", 0, dict(esm_class=0x04, short_message=b"id:5f3a sub:001 dlvrd:001 stat:DELIVRD", receipted_message_id="5f3a", message_state=2)),
    ("deliver_sm_resp", 0, dict(message_id="")),
    ("deliver_sm_resp", 0x08, dict(message_id="")),
    ("data_sm", 0, dict(service_type="USSD", source_addr="84901234567", message_payload=b"1", ussd_service_op=18)),
    ("data_sm_resp", 0, dict(message_id="m1")),
    ("enquire_link", 0, {}),
    ("enquire_link_resp", 0, {}),
    ("unbind", 0, {}),
    ("unbind_resp", 0, {}),
    ("generic_nack", ESME_RINVCMDID, {}),
]


class TestRoundTrip:
    """decode(encode(...)) gives back every field, for every PDU the gateway uses."""

    @pytest.mark.parametrize(("command", "status", "fields"), ROUND_TRIPS, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(ROUND_TRIPS)])
    def test_round_trip(self, command: str, status: int, fields: dict[str, Any]) -> None:
        """Command, id, status, sequence and the given fields survive; absent TLVs stay absent."""
        raw = encode(command, sequence=4242, status=status, **fields)
        assert frame_length(raw) == len(raw)
        pdu = decode(raw)
        assert isinstance(pdu, Pdu)
        assert (pdu.command, pdu.command_id, pdu.status, pdu.sequence) == (command, COMMAND_IDS[command], status, 4242)
        for name, value in fields.items():
            assert pdu.fields[name] == value, name
        assert "ussd_service_op" in pdu.fields or "ussd_service_op" not in fields
        assert not any(value is None for value in pdu.fields.values())

    def test_every_command_encodes_empty(self) -> None:
        """Each supported command (query_sm needs its message_id) encodes and decodes with defaults."""
        for command in COMMAND_IDS:
            fields = {"message_id": "1"} if command == "query_sm" else {}
            assert decode(encode(command, sequence=1, **fields)).command == command

    def test_pdu_helpers(self) -> None:
        """Pdu.is_response and Pdu.get read the decoded PDU."""
        pdu = decode(encode("submit_sm_resp", sequence=1, message_id="x"))
        assert pdu.is_response and pdu.get("message_id") == "x" and pdu.get("nope", 5) == 5
        assert not decode(encode("enquire_link", sequence=1)).is_response


class TestDecodeErrors:
    """Malformed input raises PduError with the status to answer, and the header when readable."""

    def test_too_short(self) -> None:
        """Fewer than 16 octets: ESME_RINVCMDLEN, no sequence."""
        with pytest.raises(PduError) as err:
            decode(b"\x00\x00\x00\x10\x00")
        assert (err.value.status, err.value.sequence, err.value.command_id) == (ESME_RINVCMDLEN, None, None)

    def test_length_mismatch(self) -> None:
        """command_length disagreeing with the octets: ESME_RINVCMDLEN, sequence kept."""
        raw = encode("enquire_link", sequence=77) + b"\0"
        with pytest.raises(PduError) as err:
            decode(raw)
        assert (err.value.status, err.value.sequence, err.value.command_id) == (ESME_RINVCMDLEN, 77, 0x15)

    def test_unknown_command(self) -> None:
        """An unsupported command_id (cancel_sm, vendor ids): ESME_RINVCMDID."""
        for command_id in (0x00000008, 0x00010000, 0x0000000B):
            with pytest.raises(PduError) as err:
                decode(header(16, command_id, 0, 5))
            assert (err.value.status, err.value.sequence, err.value.command_id) == (ESME_RINVCMDID, 5, command_id)

    def test_empty_request_body(self) -> None:
        """A deliver_sm with no body at all lacks its mandatory fields: ESME_RINVCMDLEN."""
        with pytest.raises(PduError) as err:
            decode(header(16, 5, 0, 1))
        assert err.value.status == ESME_RINVCMDLEN

    def test_empty_response_body_is_fine(self) -> None:
        """A response may omit its body (error statuses): no fields, no error."""
        assert decode(header(16, 0x80000004, 0x45, 1)).fields == {}

    def test_missing_nul(self) -> None:
        """A C-octet string running to the end: ESME_RINVCMDLEN."""
        with pytest.raises(PduError) as err:
            decode(with_length(struct.pack(">LLL", 5, 0, 1) + b"USSD"))
        assert err.value.status == ESME_RINVCMDLEN

    def test_sm_length_past_end(self) -> None:
        """sm_length larger than what follows: ESME_RINVCMDLEN."""
        raw = encode("deliver_sm", sequence=1, short_message=b"abc")
        with pytest.raises(PduError) as err:
            decode(raw[:-1])  # length then disagrees too
        assert err.value.status == ESME_RINVCMDLEN
        body = raw[4:-1]
        with pytest.raises(PduError) as err:
            decode(with_length(body))
        assert err.value.status == ESME_RINVCMDLEN

    def test_truncated_tlv(self) -> None:
        """A TLV header or value past the end: ESME_RINVOPTPARSTREAM."""
        raw = encode("deliver_sm", sequence=1, its_session_info=1)
        for cut in (1, 3, 5):
            with pytest.raises(PduError) as err:
                decode(with_length(raw[4:-cut]))
            assert err.value.status == ESME_RINVOPTPARSTREAM, cut

    def test_int_tlv_wrong_size(self) -> None:
        """ussd_service_op in 2 octets: ESME_RINVPARLEN (smpplib would desynchronise)."""
        raw = encode("deliver_sm", sequence=1) + tlv(0x0501, b"\x00\x01")
        with pytest.raises(PduError) as err:
            decode(with_length(raw[4:]))
        assert err.value.status == ESME_RINVPARLEN

    def test_unknown_tlvs_are_skipped(self) -> None:
        """Vendor TLVs and TLVs this command does not define are skipped; the rest parse."""
        raw = encode("deliver_sm", sequence=1, short_message=b"hi")
        raw = with_length(raw[4:] + tlv(0x1400, b"vendor") + tlv(0x0422, b"\x01") + tlv(0x0501, b"\x12"))
        pdu = decode(raw)
        assert pdu.fields["ussd_service_op"] == 18 and pdu.fields["short_message"] == b"hi"
        assert "ms_availability_status" not in pdu.fields

    def test_flag_tlv_decodes_true(self) -> None:
        """A zero-length flag TLV (alert_on_message_delivery) reads as True."""
        raw = encode("submit_sm", sequence=1)
        assert decode(with_length(raw[4:] + tlv(0x130C, b""))).fields["alert_on_message_delivery"] is True

    def test_over_max_length(self) -> None:
        """A command_length above MAX_PDU_BYTES is refused even when the octets are there."""
        raw = encode("submit_sm", sequence=1, message_payload=b"x" * 0xFFFF) + tlv(0x1400, b"y" * 100)
        raw = with_length(raw[4:])
        assert len(raw) > MAX_PDU_BYTES
        with pytest.raises(PduError) as err:
            decode(raw)
        assert err.value.status == ESME_RINVCMDLEN

    def test_repr(self) -> None:
        """PduError's repr shows the status in hex, for logs."""
        assert "status=0x03" in repr(PduError("x", 1, 8, ESME_RINVCMDID))


class TestEncodeValidation:
    """encode refuses what smpplib would drop, truncate or mangle silently."""

    @pytest.mark.parametrize(
        "fields",
        [
            dict(ussd_service_opp=2),  # misspelt: smpplib would drop it
            dict(sm_length=3),
            dict(ussd_service_op=256),
            dict(its_session_info=-1),
            dict(esm_class=True),
            dict(source_addr="1" * 21),  # max 20 + NUL
            dict(service_type="USSD12"),
            dict(destination_addr="số"),
            dict(source_addr="a\0b"),
            dict(short_message="text"),
            dict(short_message=b"x" * 255),
            dict(short_message=b"x", message_payload=b"y"),
            dict(short_message=b"x", message_payload=b""),
            dict(alert_on_message_delivery=True),
        ],
    )
    def test_rejected(self, fields: dict[str, Any]) -> None:
        """Each invalid field raises ValueError."""
        with pytest.raises(ValueError):
            encode("submit_sm", sequence=1, **fields)

    def test_unknown_command_and_bad_sequence(self) -> None:
        """Unsupported commands and out-of-range sequences raise ValueError."""
        with pytest.raises(ValueError):
            encode("cancel_sm", sequence=1)
        with pytest.raises(ValueError):
            encode("enquire_link", sequence=1 << 32)

    def test_limits_accepted(self) -> None:
        """The longest legal values encode: 20-digit address, 254-octet short_message."""
        raw = encode("submit_sm", sequence=1, source_addr="1" * 20, short_message=b"x" * 254)
        assert decode(raw).fields["short_message"] == b"x" * 254


class TestHelpers:
    """Names, responses and framing."""

    def test_response_name(self) -> None:
        """Requests map to their *_resp; responses and alert_notification have none."""
        assert response_name("submit_sm") == "submit_sm_resp"
        assert response_name("enquire_link") == "enquire_link_resp"
        for bad in ("submit_sm_resp", "generic_nack", "alert_notification", "nope"):
            with pytest.raises(ValueError):
                response_name(bad)

    def test_command_name_and_is_response(self) -> None:
        """command_name knows our ids; is_response reads the high bit."""
        assert command_name(0x80000005) == "deliver_sm_resp" and command_name(0x08) is None
        assert is_response("generic_nack") and not is_response("deliver_sm")

    def test_frame_length(self) -> None:
        """frame_length reads the first 4 octets of any prefix of at least 4."""
        raw = encode("deliver_sm", sequence=1, short_message=b"hello")
        assert frame_length(raw[:4]) == frame_length(raw) == len(raw)
        assert frame_length(b"\xff\xff\xff\xff") == 0xFFFFFFFF > MAX_PDU_BYTES
        with pytest.raises(ValueError):
            frame_length(b"\0\0\0")
        assert HEADER_BYTES == 16


VALID = [encode(c, sequence=1000 + i, status=s, **f) for i, (c, s, f) in enumerate(ROUND_TRIPS)]


def _decode_or_error(data: bytes) -> None:
    try:
        pdu = decode(data)
    except PduError as err:
        assert isinstance(err.status, int) and err.status != ESME_ROK
        return
    assert isinstance(pdu, Pdu) and pdu.command in COMMAND_IDS


@st.composite
def mutated_pdus(draw: st.DrawFn) -> bytes:
    """A valid PDU with octets flipped, cut or inserted; length usually fixed up."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, len(data)))
        if action == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    if draw(st.booleans()) and len(data) >= 4:
        data[:4] = struct.pack(">L", len(data))
    return bytes(data)


class TestFuzz:
    """Any bytes decode to a Pdu or raise PduError, nothing else."""

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=300))
    def test_random_bytes(self, data: bytes) -> None:
        """Random octets, length-prefixed or not."""
        _decode_or_error(data)
        _decode_or_error(struct.pack(">L", len(data) + 4) + data)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(sorted(set(COMMAND_IDS.values()))), st.binary(max_size=200))
    def test_known_command_random_body(self, command_id: int, body: bytes) -> None:
        """A valid header of each command over a random body."""
        _decode_or_error(header(16 + len(body), command_id, 0, 1) + body)

    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated_pdus())
    def test_mutated_valid_pdus(self, data: bytes) -> None:
        """Valid PDUs with octets flipped, cut or inserted."""
        _decode_or_error(data)
