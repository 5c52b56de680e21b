"""The sans-IO ESME session, socket-free (STYLE.md §6, after aioquic's
tests/test_connection.py): an `EsmeSession` against a tiny scripted SMSC that decodes
and encodes with smpp.pdu, bytes moved in memory, time driven explicitly."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from ussd_gateway.channels.smpp.events import (
    BindRefused,
    Bound,
    ConnectionShouldClose,
    DeliverReceived,
    EnquireLinkFailed,
    Event,
    GenericNackReceived,
    PeerUnbound,
    SubmitExpired,
    SubmitResponded,
    UnknownPduReceived,
)
from ussd_gateway.channels.smpp.pdu import (
    ESME_RBINDFAIL,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RINVCMDLEN,
    ESME_ROK,
    ESME_RTHROTTLED,
    MAX_PDU_BYTES,
    Pdu,
    decode,
    encode,
    frame_length,
    response_name,
)
from ussd_gateway.channels.smpp.protocol import MAX_SEQUENCE, EsmeSession

ENQUIRE_S = 30.0
TIMEOUT_S = 10.0
SUBMIT = {"source_addr": "9237", "destination_addr": "84901234567", "short_message": b"hello"}


class Smsc:
    """The SMSC side, scripted by each test: reads what the ESME wrote, writes replies."""

    def __init__(self, esme: EsmeSession) -> None:
        self.esme = esme
        self.sequence = 1000

    def read(self) -> list[Pdu]:
        """Every PDU the ESME has queued for the wire, decoded."""
        data = self.esme.data_to_send()
        pdus = []
        while data:
            length = frame_length(data)
            pdus.append(decode(data[:length]))
            data = data[length:]
        return pdus

    def send(self, command: str, *, now: float, sequence: int | None = None, status: int = 0, **fields: Any) -> int:
        """Encode a PDU and hand it to the ESME; returns its sequence number."""
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        self.esme.receive_data(encode(command, sequence=sequence, status=status, **fields), now)
        return sequence

    def answer(self, request: Pdu, *, now: float, status: int = 0, **fields: Any) -> None:
        """Send the response to one of the ESME's requests."""
        self.send(response_name(request.command), sequence=request.sequence, status=status, now=now, **fields)


def events(esme: EsmeSession) -> list[Event]:
    """Drain the session's events."""
    out = []
    while (event := esme.next_event()) is not None:
        out.append(event)
    return out


def make_session(**overrides: Any) -> EsmeSession:
    options: dict[str, Any] = {
        "system_id": "ussdgw",
        "password": "secret",
        "system_type": "USSD",
        "bind_as": "transceiver",
        "window": 10,
        "enquire_link_s": ENQUIRE_S,
        "response_timeout_s": TIMEOUT_S,
    }
    options.update(overrides)
    return EsmeSession(**options)


def bound_pair(**overrides: Any) -> tuple[EsmeSession, Smsc]:
    """A session bound at t=0, with its events and output drained."""
    esme = make_session(**overrides)
    smsc = Smsc(esme)
    esme.connect(now=0.0)
    [bind] = smsc.read()
    smsc.answer(bind, now=0.0, system_id="SMSC")
    assert events(esme) == [Bound("SMSC")]
    return esme, smsc


class TestBind:
    @pytest.mark.parametrize("bind_as", ["transceiver", "transmitter", "receiver"])
    def test_bind_request_carries_credentials(self, bind_as: str) -> None:
        """connect() queues the bind PDU for the configured mode, with the credentials."""
        esme = make_session(bind_as=bind_as)
        esme.connect(now=0.0)
        [bind] = Smsc(esme).read()
        assert bind.command == f"bind_{bind_as}"
        assert bind.get("system_id") == "ussdgw"
        assert bind.get("password") == "secret"
        assert bind.get("system_type") == "USSD"
        assert bind.get("interface_version") == 0x34
        assert not esme.bound

    def test_bind_ok(self) -> None:
        """A bind response with ESME_ROK reports Bound and allows submits."""
        esme, _ = bound_pair()
        assert esme.bound and esme.can_submit and not esme.closed

    def test_bind_refused(self) -> None:
        """An error bind response reports BindRefused, then asks to close."""
        esme = make_session()
        smsc = Smsc(esme)
        esme.connect(now=0.0)
        [bind] = smsc.read()
        smsc.answer(bind, now=0.1, status=ESME_RBINDFAIL)
        assert events(esme) == [BindRefused(ESME_RBINDFAIL), ConnectionShouldClose("bind refused (status 0x0000000d)")]
        assert esme.closed and not esme.bound and esme.get_timer() is None

    def test_bind_nacked(self) -> None:
        """A generic_nack to the bind is a refusal too."""
        esme = make_session()
        smsc = Smsc(esme)
        esme.connect(now=0.0)
        [bind] = smsc.read()
        smsc.send("generic_nack", sequence=bind.sequence, status=ESME_RINVCMDID, now=0.1)
        got = events(esme)
        assert got[:2] == [GenericNackReceived(bind.sequence, ESME_RINVCMDID), BindRefused(ESME_RINVCMDID)]
        assert isinstance(got[2], ConnectionShouldClose)

    def test_bind_unanswered(self) -> None:
        """No bind response within response_timeout_s closes the connection."""
        esme = make_session()
        esme.connect(now=0.0)
        esme.data_to_send()
        assert esme.get_timer() == TIMEOUT_S
        esme.handle_timer(now=TIMEOUT_S - 0.001)
        assert events(esme) == []
        esme.handle_timer(now=TIMEOUT_S)
        assert events(esme) == [ConnectionShouldClose("bind_transceiver unanswered")]

    def test_submit_before_bound_refused(self) -> None:
        """submit() sends nothing until the bind completes."""
        esme = make_session()
        esme.connect(now=0.0)
        esme.data_to_send()
        assert not esme.submit(SUBMIT, ref="a", now=0.0)
        assert esme.data_to_send() == b""


class TestWindow:
    def test_window_never_exceeded(self) -> None:
        """Ten submits go out, the eleventh is refused until a response frees a slot."""
        esme, smsc = bound_pair()
        assert all(esme.submit(SUBMIT, ref=i, now=1.0) for i in range(10))
        assert esme.window_in_use == 10 and not esme.can_submit
        assert not esme.submit(SUBMIT, ref=10, now=1.0)
        sent = smsc.read()
        assert [p.command for p in sent] == ["submit_sm"] * 10
        smsc.answer(sent[3], now=1.1, message_id="m3")
        assert events(esme) == [SubmitResponded(3, ESME_ROK, "m3")]
        assert esme.window_in_use == 9
        assert esme.submit(SUBMIT, ref=10, now=1.2)
        assert not esme.submit(SUBMIT, ref=11, now=1.2)
        assert len(smsc.read()) == 1

    def test_receiver_cannot_submit(self) -> None:
        """A receiver bind refuses submits (it has no right to send)."""
        esme, _ = bound_pair(bind_as="receiver")
        assert not esme.can_submit
        assert not esme.submit(SUBMIT, ref="a", now=1.0)

    def test_submit_carries_fields(self) -> None:
        """The submit_sm PDU carries the given fields."""
        esme, smsc = bound_pair()
        esme.submit({**SUBMIT, "ussd_service_op": 2}, ref="a", now=1.0)
        [pdu] = smsc.read()
        assert pdu.get("destination_addr") == "84901234567"
        assert pdu.get("short_message") == b"hello"
        assert pdu.get("ussd_service_op") == 2

    def test_bad_fields_raise(self) -> None:
        """A field the codec refuses raises and takes no window slot."""
        esme, _ = bound_pair()
        with pytest.raises(ValueError):
            esme.submit({"no_such_field": 1}, ref="a", now=1.0)
        assert esme.window_in_use == 0


class TestCorrelation:
    def test_responses_out_of_order(self) -> None:
        """Responses are matched to submits by sequence number, in whatever order."""
        esme, smsc = bound_pair()
        for ref in ("a", "b", "c"):
            esme.submit(SUBMIT, ref=ref, now=1.0)
        a, b, c = smsc.read()
        smsc.answer(c, now=1.1, message_id="mc")
        smsc.answer(a, now=1.1, status=ESME_RTHROTTLED)
        smsc.answer(b, now=1.1, message_id="mb")
        assert events(esme) == [
            SubmitResponded("c", ESME_ROK, "mc"),
            SubmitResponded("a", ESME_RTHROTTLED, ""),
            SubmitResponded("b", ESME_ROK, "mb"),
        ]
        assert esme.window_in_use == 0

    def test_unknown_sequence_ignored(self) -> None:
        """A response to nothing we sent is ignored (logged), not fatal."""
        esme, smsc = bound_pair()
        esme.submit(SUBMIT, ref="a", now=1.0)
        [sub] = smsc.read()
        smsc.send("submit_sm_resp", sequence=sub.sequence + 100, message_id="x", now=1.1)
        assert events(esme) == [] and esme.window_in_use == 1
        smsc.answer(sub, now=1.2, message_id="m")
        assert events(esme) == [SubmitResponded("a", ESME_ROK, "m")]

    def test_response_of_wrong_type_ignored(self) -> None:
        """A response of another command with our sequence does not settle the submit."""
        esme, smsc = bound_pair()
        esme.submit(SUBMIT, ref="a", now=1.0)
        [sub] = smsc.read()
        smsc.send("enquire_link_resp", sequence=sub.sequence, now=1.1)
        assert events(esme) == [] and esme.window_in_use == 1

    def test_generic_nack_settles_submit(self) -> None:
        """A generic_nack for one of our submits answers it with its status."""
        esme, smsc = bound_pair()
        esme.submit(SUBMIT, ref="a", now=1.0)
        [sub] = smsc.read()
        smsc.send("generic_nack", sequence=sub.sequence, status=ESME_RINVCMDLEN, now=1.1)
        assert events(esme) == [
            GenericNackReceived(sub.sequence, ESME_RINVCMDLEN),
            SubmitResponded("a", ESME_RINVCMDLEN, ""),
        ]
        assert esme.window_in_use == 0

    def test_undecodable_response_settles_by_header(self) -> None:
        """A response whose body cannot be parsed still settles our submit by its
        header status, and is not nacked."""
        esme, smsc = bound_pair()
        esme.submit(SUBMIT, ref="a", now=1.0)
        [sub] = smsc.read()
        body = b"no-nul-here"
        frame = struct.pack(">LLLL", 16 + len(body), 0x80000004, ESME_ROK, sub.sequence) + body
        esme.receive_data(frame, now=1.1)
        assert events(esme) == [SubmitResponded("a", ESME_ROK, "")]
        assert smsc.read() == []


class TestTimers:
    def test_enquire_link_after_idle(self) -> None:
        """After enquire_link_s without input an enquire_link goes out; its answer
        re-arms the idle timer."""
        esme, smsc = bound_pair()
        assert esme.get_timer() == ENQUIRE_S
        esme.handle_timer(now=ENQUIRE_S - 1)
        assert smsc.read() == []
        esme.handle_timer(now=ENQUIRE_S)
        [enquire] = smsc.read()
        assert enquire.command == "enquire_link"
        assert esme.get_timer() == ENQUIRE_S + TIMEOUT_S
        smsc.answer(enquire, now=ENQUIRE_S + 1)
        assert events(esme) == [] and esme.get_timer() == 2 * ENQUIRE_S + 1

    def test_traffic_postpones_enquire_link(self) -> None:
        """Any PDU received counts as proof of life and pushes the enquire_link back."""
        esme, smsc = bound_pair()
        smsc.send("enquire_link", now=20.0)
        smsc.read()
        assert esme.get_timer() == 20.0 + ENQUIRE_S

    def test_enquire_link_unanswered_fails_link(self) -> None:
        """An enquire_link without answer within response_timeout_s fails the link."""
        esme, smsc = bound_pair()
        esme.handle_timer(now=ENQUIRE_S)
        smsc.read()
        esme.handle_timer(now=ENQUIRE_S + TIMEOUT_S)
        assert events(esme) == [EnquireLinkFailed(), ConnectionShouldClose("enquire_link unanswered")]
        assert esme.closed and esme.get_timer() is None

    def test_submit_expires(self) -> None:
        """A submit unanswered within response_timeout_s expires and frees its slot;
        a late response is then ignored."""
        esme, smsc = bound_pair()
        esme.submit(SUBMIT, ref="a", now=1.0)
        [sub] = smsc.read()
        assert esme.get_timer() == 1.0 + TIMEOUT_S
        esme.handle_timer(now=1.0 + TIMEOUT_S)
        assert events(esme) == [SubmitExpired("a")]
        assert esme.window_in_use == 0 and not esme.closed
        smsc.answer(sub, now=12.0, message_id="late")
        assert events(esme) == []

    def test_peer_enquire_link_answered(self) -> None:
        """The SMSC's enquire_link gets an enquire_link_resp with its sequence."""
        esme, smsc = bound_pair()
        seq = smsc.send("enquire_link", now=5.0)
        [resp] = smsc.read()
        assert (resp.command, resp.sequence, resp.status) == ("enquire_link_resp", seq, ESME_ROK)
        assert events(esme) == []


class TestDeliver:
    def test_deliver_waits_for_owner(self) -> None:
        """A deliver_sm is reported and answered only when the owner says so."""
        esme, smsc = bound_pair()
        seq = smsc.send("deliver_sm", source_addr="84901234567", short_message=b"*090#", ussd_service_op=1, now=1.0)
        [event] = events(esme)
        assert isinstance(event, DeliverReceived)
        assert event.pdu.sequence == seq and event.pdu.get("ussd_service_op") == 1
        assert smsc.read() == []
        esme.respond_deliver(seq, ESME_RTHROTTLED)
        [resp] = smsc.read()
        assert (resp.command, resp.sequence, resp.status) == ("deliver_sm_resp", seq, ESME_RTHROTTLED)

    def test_deliver_answered_once(self) -> None:
        """Answering the same deliver_sm twice is a programming error."""
        esme, smsc = bound_pair()
        seq = smsc.send("deliver_sm", now=1.0)
        esme.respond_deliver(seq)
        with pytest.raises(ValueError, match="not awaiting"):
            esme.respond_deliver(seq)

    def test_deliver_on_transmitter_refused(self) -> None:
        """A transmitter bind answers deliver_sm with ESME_RINVBNDSTS and reports nothing."""
        esme, smsc = bound_pair(bind_as="transmitter")
        seq = smsc.send("deliver_sm", now=1.0)
        [resp] = smsc.read()
        assert (resp.command, resp.sequence, resp.status) == ("deliver_sm_resp", seq, ESME_RINVBNDSTS)
        assert events(esme) == []

    def test_respond_after_close_is_noop(self) -> None:
        """Answering a deliver_sm after the connection closed sends nothing."""
        esme, smsc = bound_pair()
        seq = smsc.send("deliver_sm", now=1.0)
        smsc.send("unbind", now=1.1)
        smsc.read()
        esme.respond_deliver(seq)
        assert esme.data_to_send() == b""


class TestMalformedInput:
    def test_unknown_command_nacked_and_session_goes_on(self) -> None:
        """An unknown command_id gets generic_nack ESME_RINVCMDID; the bind survives."""
        esme, smsc = bound_pair()
        esme.receive_data(struct.pack(">LLLL", 16, 0x00000099, 0, 77), now=1.0)
        [nack] = smsc.read()
        assert (nack.command, nack.sequence, nack.status) == ("generic_nack", 77, ESME_RINVCMDID)
        assert events(esme) == [UnknownPduReceived(0x99, 77)]
        assert esme.bound
        esme.submit(SUBMIT, ref="a", now=1.1)
        [sub] = smsc.read()
        smsc.answer(sub, now=1.2, message_id="m")
        assert events(esme) == [SubmitResponded("a", ESME_ROK, "m")]

    def test_garbled_body_nacked_with_codec_status(self) -> None:
        """A known request whose body does not parse gets generic_nack with the
        codec's status (here the body ends inside a C-string)."""
        esme, smsc = bound_pair()
        body = b"USSD\x00\x01\x01849"  # service_type, ton, npi, then an unterminated address
        esme.receive_data(struct.pack(">LLLL", 16 + len(body), 0x00000005, 0, 78) + body, now=1.0)
        [nack] = smsc.read()
        assert (nack.command, nack.sequence, nack.status) == ("generic_nack", 78, ESME_RINVCMDLEN)
        assert events(esme) == [] and esme.bound

    def test_unsupported_request_nacked(self) -> None:
        """A request an ESME does not serve (submit_sm from the SMSC) is nacked."""
        esme, smsc = bound_pair()
        seq = smsc.send("submit_sm", now=1.0)
        [nack] = smsc.read()
        assert (nack.command, nack.sequence, nack.status) == ("generic_nack", seq, ESME_RINVCMDID)
        [event] = events(esme)
        assert isinstance(event, UnknownPduReceived) and event.pdu is not None and event.pdu.command == "submit_sm"

    @pytest.mark.parametrize("length", [0, 15, MAX_PDU_BYTES + 1])
    def test_bad_frame_length_closes(self, length: int) -> None:
        """A length prefix below 16 or above MAX_PDU_BYTES cannot be resynchronised:
        the session asks to close and ignores what follows."""
        esme, smsc = bound_pair()
        esme.receive_data(struct.pack(">L", length) + b"\x00" * 12, now=1.0)
        [event] = events(esme)
        assert isinstance(event, ConnectionShouldClose) and "out of range" in event.reason
        assert esme.closed
        smsc.send("enquire_link", now=1.1)
        assert smsc.read() == [] and events(esme) == []

    def test_partial_frames(self) -> None:
        """PDUs split at any byte, and several in one chunk, are reassembled."""
        esme, smsc = bound_pair()
        data = encode("deliver_sm", sequence=5, short_message=b"*090#") + encode("enquire_link", sequence=6)
        for i in range(len(data)):
            esme.receive_data(data[i : i + 1], now=1.0)
            if i < 20:
                assert events(esme) == []
        [event] = events(esme)
        assert isinstance(event, DeliverReceived) and event.pdu.get("short_message") == b"*090#"
        [resp] = smsc.read()
        assert (resp.command, resp.sequence) == ("enquire_link_resp", 6)
        esme.receive_data(data, now=2.0)
        assert len(events(esme)) == 1 and len(smsc.read()) == 1


class TestUnbind:
    def test_our_unbind(self) -> None:
        """unbind() sends unbind and stops submits; unbind_resp ends the session."""
        esme, smsc = bound_pair()
        esme.unbind(now=1.0)
        [unbind] = smsc.read()
        assert unbind.command == "unbind"
        assert not esme.can_submit and not esme.bound
        smsc.answer(unbind, now=1.1)
        assert events(esme) == [PeerUnbound(), ConnectionShouldClose("unbound")]
        assert esme.closed

    def test_our_unbind_unanswered(self) -> None:
        """An unbind without answer closes after response_timeout_s."""
        esme, smsc = bound_pair()
        esme.unbind(now=1.0)
        smsc.read()
        esme.handle_timer(now=1.0 + TIMEOUT_S)
        assert events(esme) == [ConnectionShouldClose("unbind unanswered")]

    def test_in_flight_submit_answered_while_unbinding(self) -> None:
        """A submit in flight when we unbind still gets its response; a new
        deliver_sm is refused with ESME_RINVBNDSTS."""
        esme, smsc = bound_pair()
        esme.submit(SUBMIT, ref="a", now=1.0)
        esme.unbind(now=1.0)
        sub, unbind = smsc.read()
        seq = smsc.send("deliver_sm", now=1.05)
        [resp] = smsc.read()
        assert (resp.sequence, resp.status) == (seq, ESME_RINVBNDSTS)
        smsc.answer(sub, now=1.1, message_id="m")
        smsc.answer(unbind, now=1.2)
        assert events(esme) == [SubmitResponded("a", ESME_ROK, "m"), PeerUnbound(), ConnectionShouldClose("unbound")]

    def test_peer_unbind(self) -> None:
        """The SMSC's unbind gets unbind_resp, then PeerUnbound and close."""
        esme, smsc = bound_pair()
        seq = smsc.send("unbind", now=1.0)
        [resp] = smsc.read()
        assert (resp.command, resp.sequence, resp.status) == ("unbind_resp", seq, ESME_ROK)
        assert events(esme) == [PeerUnbound(), ConnectionShouldClose("peer unbound")]
        assert esme.closed

    def test_unbind_before_bound_closes(self) -> None:
        """Unbinding while the bind is pending just closes."""
        esme = make_session()
        esme.connect(now=0.0)
        esme.data_to_send()
        esme.unbind(now=0.1)
        assert esme.data_to_send() == b""
        assert events(esme) == [ConnectionShouldClose("unbind requested before the bind completed")]


class TestSequence:
    def test_sequence_wraps(self) -> None:
        """Sequence numbers run up to 0x7FFFFFFF and wrap to 1, and responses are
        still matched across the wrap."""
        esme, smsc = bound_pair(first_sequence=MAX_SEQUENCE - 1)
        for ref in ("a", "b", "c"):
            esme.submit(SUBMIT, ref=ref, now=1.0)
        subs = smsc.read()
        assert [p.sequence for p in subs] == [MAX_SEQUENCE, 1, 2]
        smsc.answer(subs[1], now=1.1, message_id="m1")
        smsc.answer(subs[0], now=1.1, message_id="m0")
        assert events(esme) == [SubmitResponded("b", ESME_ROK, "m1"), SubmitResponded("a", ESME_ROK, "m0")]

    def test_first_sequence_validated(self) -> None:
        """0 and values past 0x7FFFFFFF are not valid sequence numbers."""
        with pytest.raises(ValueError):
            make_session(first_sequence=0)
        with pytest.raises(ValueError):
            make_session(first_sequence=MAX_SEQUENCE + 1)
