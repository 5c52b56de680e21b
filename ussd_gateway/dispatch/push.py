"""USSD push: a dialogue the network begins on a subscriber's phone.

`Pusher.open` does for a push what the dispatcher does for a BEGIN, under the same
per-subscriber lock and in the same record: it loads the subscriber's dialogue,
refuses when one is open (the phone holds one USSD dialogue at a time, and a push
must never cut into a purchase), enters the pushed screen on the current menu
version, and saves the record and its first screen. The subscriber's answer then
arrives as an ordinary continuation of that session id and walks the menus from
there: replay, locking, versioned menus and idempotent debits are the dispatcher's
as for any dialogue. A notify-only push (USSN) is saved already ended.

What carries the push (an SMPP bind, the web phone) is the caller's: it names the
session id its answers will come under, and calls `cancel` when the push could not
be delivered, so the subscriber is not left "busy" for a screen they never saw.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from ussd_gateway.core.errors import BadRequest, DependencyDown
from ussd_gateway.core.fence import HOP_LOCK, HopLock
from ussd_gateway.core.hop import Reply
from ussd_gateway.core.msisdn import mask_msisdn
from ussd_gateway.sessions.record import SessionRecord
from ussd_gateway.sessions.store import LoadStatus

from ussd_gateway.dispatch.dispatcher import REPLACED_KEPT, Dispatcher, hop_digest

OPEN_WITHIN_S = 120.0
"""A dialogue not ended whose last hop is this recent is taken as still open on the
phone (networks release an idle USSD dialogue within about two minutes); older, it
was dropped and a push may replace it."""


class PushRefused(Exception):
    """The push was not made; `reason` says why (`open_dialogue`, `busy`, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Pushed:
    """A push saved and ready to send: its first screen and whether it ends there."""

    session_id: str
    reply: Reply
    screen: str
    """"menu:screen" the subscriber is shown."""
    lang: str
    service_code: str
    """The code the dialogue counts as begun with (answers over HTTP name it)."""


class Pusher:
    """Opens pushed dialogues in the dispatcher's store, with the dispatcher's engine."""

    def __init__(self, dispatcher: Dispatcher, *, open_within_s: float = OPEN_WITHIN_S) -> None:
        self.dispatcher = dispatcher
        self.open_within_s = open_within_s
        self.log = structlog.get_logger("ussd_gateway.push")

    def check_entry(self, entry: str) -> None:
        """Raises BadRequest unless `entry` is a push entry of the current menus
        (`[menu] push = [...]`): a push never lands on a screen its menu did not open
        to it (a confirm or a purchase half-way through a flow)."""
        entries = self.dispatcher.engine.menus.push_entries
        if entry not in entries:
            raise BadRequest(f"entry must be a push entry of the menus ({', '.join(entries) or 'none declared'}), got {entry[:60]!r}")

    def service_code_for(self, entry: str) -> str:
        """The code a pushed dialogue counts as begun with: one that opens the entry's
        menu, else the first one of the home menu's file, else any served code (a
        "start over" after a dropped push lands there)."""
        services: dict[str, str] = self.dispatcher.engine.menus.services
        menu = entry.partition(":")[0]
        for code, target in services.items():
            if target.partition(":")[0] == menu:
                return code
        home = (self.dispatcher.engine.menus.home or "").partition(":")[0]
        for code, target in services.items():
            if target.partition(":")[0] == home:
                return code
        return next(iter(services), "")

    async def open(
        self, msisdn: str, session_id: str, entry: str, *, notify: bool = False, variables: dict[str, Any] | None = None,
        lang: str | None = None,
    ) -> Pushed:
        """Begin the pushed dialogue and save it.

        Raises:
            PushRefused: the subscriber has an open dialogue, or a hop of theirs is running.
            BadRequest: `entry` is not a push entry of the menus.
            DependencyDown: the store did not answer (nothing was saved).
        """
        try:
            # Bounded like a hop: a store or backend that hangs must not hold the caller.
            async with asyncio.timeout(self.dispatcher.settings.hop_deadline_s * 2):
                return await self._open(msisdn, session_id, entry, notify=notify, variables=variables, lang=lang)
        except TimeoutError:
            raise DependencyDown("the push was not saved in time") from None

    async def _open(
        self, msisdn: str, session_id: str, entry: str, *, notify: bool, variables: dict[str, Any] | None, lang: str | None
    ) -> Pushed:
        self.check_entry(entry)
        d = self.dispatcher
        token = "push-" + os.urandom(6).hex()
        nonce = os.urandom(6).hex()
        loaded = await d.store.begin_hop(msisdn, session_id, hop_digest(f"push:{nonce}"), token, want_lang=True)
        if loaded.status is LoadStatus.LOCKED:
            raise PushRefused("busy", "a hop of this subscriber is being answered right now; try again")
        committed = False
        fence = HOP_LOCK.set(HopLock(msisdn, token))
        try:
            now = d.clock()
            previous = SessionRecord.from_bytes(loaded.record) if loaded.record else None
            if previous is not None and not previous.ended and now - previous.updated < self.open_within_s:
                raise PushRefused("open_dialogue", "the subscriber has a USSD dialogue open; push again when it ends")
            language = lang or loaded.lang or d.settings.default_lang
            record, step = await d.engine.start_at(
                entry=entry, session_id=session_id, msisdn=msisdn, service_code=self.service_code_for(entry), lang=language,
                variables=variables or {}, now=now, nonce=nonce,
            )
            reply = Reply(step.reply.text, True) if notify else step.reply
            record.ended = reply.end
            if previous is not None and previous.session_id != session_id:
                record.replaced = [previous.session_id, *previous.replaced][:REPLACED_KEPT]
            committed = await d.store.commit_hop(
                msisdn, token, session_id=session_id, hop_key="", reply=orjson.dumps([reply.text, reply.end]),
                record=record.to_bytes(), ttl_s=d.settings.session_ttl_s, lang=None,
            )
            if not committed:
                raise DependencyDown("the session lock expired before the push was saved")
        finally:
            HOP_LOCK.reset(fence)
            if not committed:
                await d.store.release(msisdn, token)
        d.metrics.count_session(d.metrics.sessions_started, "push")
        if reply.end:
            d.metrics.count_session(d.metrics.sessions_ended, "push", "end")
        screen = f"{record.menu}:{record.screen}"
        self.log.info("push_opened", msisdn=mask_msisdn(msisdn), session_id=session_id, screen=screen, notify=notify)
        return Pushed(session_id, reply, screen, language, record.service_code)

    async def cancel(self, msisdn: str, session_id: str) -> bool:
        """End a pushed dialogue that could not be delivered (True when it was still
        the subscriber's dialogue and open). Best effort: a store that does not answer
        leaves it to expire."""
        d = self.dispatcher
        token = "push-" + os.urandom(6).hex()
        try:
            loaded = await d.store.begin_hop(msisdn, session_id, "", token, want_lang=False)
        except DependencyDown:
            return False
        if loaded.status is not LoadStatus.OK:
            return False
        record = SessionRecord.from_bytes(loaded.record) if loaded.record else None
        if record is None or record.session_id != session_id or record.ended:
            await d.store.release(msisdn, token)
            return False
        record.ended = True
        try:
            return await d.store.commit_hop(
                msisdn, token, session_id=session_id, hop_key="", reply=orjson.dumps(["", True]),
                record=record.to_bytes(), ttl_s=d.settings.session_ttl_s, lang=None,
            )
        except DependencyDown:
            await d.store.release(msisdn, token)
            return False
