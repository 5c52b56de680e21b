"""USSD push over an SMPP bind: the `submit_sm` that begins a dialogue on a phone.

The dialogue is opened (and saved) first by `dispatch.push.Pusher` under the session
id the bind's dialect will give the subscriber's answer (`ussd.push_address`), then
the first screen goes out as `submit_sm` with `ussd_service_op` USSR (the dialect's
`op_push_request`, 2 in 3GPP: an answer is expected) or USSN (`op_push_notify`, 3:
notify only). The answer arrives as a `deliver_sm` continuation (USSR confirm, 18)
and the channel walks the menus from the pushed screen like any answer. A push the
SMSC does not take ends the saved dialogue again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ussd_gateway.core.errors import BadRequest
from ussd_gateway.dispatch.push import PushRefused, Pusher

from ussd_gateway.channels.smpp import pdu as smpp_pdu
from ussd_gateway.channels.smpp import ussd
from ussd_gateway.channels.smpp.config import BindSettings
from ussd_gateway.channels.smpp.link import LinkUnavailable, SmppLink, SubmitUnconfirmed

__all__ = ["SmppPushed", "push_over_smpp"]


@dataclass(frozen=True, slots=True)
class SmppPushed:
    session_id: str
    bind: str
    text: str
    end: bool
    screen: str
    message_id: str


def _pick(links: dict[str, SmppLink], bind_name: str) -> tuple[BindSettings, SmppLink]:
    if bind_name:
        link = links.get(bind_name)
        if link is None:
            raise BadRequest(f"no SMPP bind named {bind_name[:40]!r} (binds: {', '.join(links) or 'none'})")
    else:
        up = [link for link in links.values() if link.up]
        if not up:
            raise PushRefused("bind_down", "no SMPP bind is up")
        link = up[0]
    if not link.up:
        raise PushRefused("bind_down", f"SMPP bind {link.settings.name!r} is down")
    return link.settings, link


async def push_over_smpp(
    pusher: Pusher, links: dict[str, SmppLink], msisdn: str, entry: str, *, bind_name: str = "", notify: bool = False,
    source: str = "", variables: dict[str, object] | None = None, lang: str | None = None,
) -> SmppPushed:
    """Open the pushed dialogue and send its first screen through a bind.

    Raises:
        BadRequest: an unknown bind or entry, or a dialect a push cannot name.
        PushRefused: the bind is down, the subscriber's dialogue is open, or the SMSC
            refused the `submit_sm` (`reason` says which).
        DependencyDown: the session store did not answer.
    """
    bind, link = _pick(links, bind_name)
    pusher.check_entry(entry)
    session_id, naming = ussd.push_address(bind, msisdn, random.randrange(1 << 16))
    pushed = await pusher.open(msisdn, session_id, entry, notify=notify, variables=dict(variables or {}), lang=lang)
    sender = source or pushed.service_code.rstrip("#")
    submit = ussd.push_submit(bind, msisdn, sender, naming, pushed.reply.text, notify=pushed.reply.end)
    try:
        outcome = await link.submit(submit, timeout=bind.response_timeout_s)
    except (LinkUnavailable, SubmitUnconfirmed) as exc:
        await pusher.cancel(msisdn, session_id)
        raise PushRefused("not_delivered", f"the SMSC did not take the push: {exc}") from None
    if outcome.status != smpp_pdu.ESME_ROK:
        await pusher.cancel(msisdn, session_id)
        raise PushRefused("not_delivered", f"the SMSC refused the push (command_status 0x{outcome.status:08X})")
    return SmppPushed(session_id, bind.name, pushed.reply.text, pushed.reply.end, pushed.screen, outcome.message_id or "")
