"""USSD push as the SMSC simulator receives it: a dialogue the gateway begins.

A USSD `submit_sm` whose op is the dialect's push request (USSR, 2) or notify (USSN,
3) and that matches no open dialogue is a push: the simulator rings the subscriber's
phone, that is, opens a `UssdDialogue` for it (the push's text is its first screen)
and queues it for `next_push`. The tester answers it like any dialogue
(`dialogue.answer("1")` sends the USSR confirm, 18), or, for a notify, acknowledges it
with `confirm_notify` (USSN confirm, 19).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ussd_gateway.testkit.smsc.records import SmscError, same_number, subscriber, trim_mapping

if TYPE_CHECKING:
    from ussd_gateway.testkit.smsc.simulator import SmscSimulator, UssdDialogue


def session_number(sim: SmscSimulator, fields: dict[str, Any]) -> int:
    """The dialogue number a USSD PDU carries in the dialect's naming field (0: none)."""
    dialect = sim.dialect
    if dialect.session_id_from == "its_session_info" and fields.get("its_session_info") is not None:
        return (int(fields["its_session_info"]) & dialect.session_mask) >> sim._session_shift
    if dialect.session_id_from == "user_message_reference" and fields.get("user_message_reference") is not None:
        return int(fields["user_message_reference"])
    return 0


def note_deliver(sim: SmscSimulator, fields: dict[str, Any]) -> None:
    """Keep track of the dialogues our `deliver_sm`s begin and end (raw ones too,
    `send_deliver`): a screen in a dialogue the subscriber began answers it, never a push."""
    op = fields.get("ussd_service_op")
    key = (subscriber(str(fields.get("source_addr", ""))), session_number(sim, fields))
    if op in sim.dialect.op_begin:
        sim._dialled[key] = None
        trim_mapping(sim._dialled, sim.pdu_log_limit)
    elif op in sim.dialect.op_abort or op in sim.dialect.op_push_confirm:
        sim._dialled.pop(key, None)


def on_screen(sim: SmscSimulator, dialogue_type: type[UssdDialogue], dialogue: UssdDialogue | None, fields: dict[str, Any], end: bool) -> UssdDialogue | None:
    """The dialogue a USSD `submit_sm` belongs to: `dialogue` (found by session), else a
    new one when it is a push (USSR/USSN in no dialogue a `deliver_sm` of ours began)."""
    key = (subscriber(str(fields.get("destination_addr", ""))), session_number(sim, fields))
    pushed = fields.get("ussd_service_op") in (sim.dialect.op_push_request, sim.dialect.op_push_notify)
    if dialogue is None and pushed and key not in sim._dialled:
        dialogue = open_pushed(sim, dialogue_type, fields)
    if end:
        sim._dialled.pop(key, None)
    return dialogue


def open_pushed(sim: SmscSimulator, dialogue_type: type[UssdDialogue], fields: dict[str, Any]) -> UssdDialogue:
    """The dialogue a push begins on the subscriber's phone, registered as open (the
    caller adds the screen) and queued for `next_push`."""
    number = session_number(sim, fields)
    msisdn = str(fields.get("destination_addr", ""))
    source = str(fields.get("source_addr", ""))
    dialogue = dialogue_type(
        sim=sim, id=next(sim._dialogue_ids), number=number, session_info=number << sim._session_shift,
        msisdn=msisdn, code=source, destination=source,
    )
    sim.dialogues[dialogue.id] = dialogue
    trim_mapping(sim.dialogues, sim.pdu_log_limit)
    key = subscriber(msisdn)
    sim._open[(key, number)] = sim._open[(key, None)] = dialogue
    sim.pushes.append(dialogue)
    sim._wake("push")
    return dialogue


async def next_push(sim: SmscSimulator, msisdn: str | None = None, timeout: float = 5.0) -> UssdDialogue:
    """Wait for the next push (to `msisdn`, when given) and take it.

    Raises:
        TimeoutError: none arrives within `timeout` seconds.
    """

    def take() -> UssdDialogue | None:
        for index, dialogue in enumerate(sim.pushes):
            if msisdn is None or same_number(dialogue.msisdn, msisdn):
                return sim.pushes.pop(index)
        return None

    return await sim._wait_for("push", take, timeout)


async def confirm_notify(dialogue: UssdDialogue) -> int:
    """The handset acknowledges a notify-only push (the dialect's USSN confirm, end bit
    set); returns the sequence of the `deliver_sm`."""
    sim = dialogue.sim
    if not sim.dialect.op_push_confirm:
        raise SmscError("this dialect has no USSN confirm op")
    sim._end_dialogue(dialogue)
    return await sim._send_ussd(dialogue, sim.dialect.op_push_confirm[0], "", end=True)
