"""The SMPP channel: USSD dialogues and MO SMS from SMPP binds into the gateway, and
replies (USSD screens, SMS) back out through the same binds.

This is the SMPP twin of the HTTP dialect adapters: it turns `deliver_sm` into a `Hop`
for the dispatcher (the same menus, sessions, idempotency and resume as over HTTP) or
into a keyword message for the keyword router, and renders what comes back as
`submit_sm`. The wire work (binds, window, throttling, reconnects) is `SmppLink`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from ussd_gateway.sessions.store import OutboundSms
from ussd_gateway.core.errors import BadRequest, DependencyDown
from ussd_gateway.core.hop import Hop, HopKind
from ussd_gateway.services.keywords import KeywordRouter
from ussd_gateway.core.msisdn import mask_msisdn, normalise_msisdn

from ussd_gateway.channels.smpp import pdu as smpp_pdu
from ussd_gateway.channels.smpp import ussd
from ussd_gateway.channels.smpp.config import BindSettings
from ussd_gateway.channels.smpp.dcs import decode_mo, decode_ussd, mt_data_coding
from ussd_gateway.channels.smpp.encoding import Concat, parse_udh, payload_sms, split_sms
from ussd_gateway.channels.smpp.mo import DUPLICATE_PART, MoMessage, Reassembler
from ussd_gateway.channels.smpp.link import LinkUnavailable, SmppLink, SubmitUnconfirmed
from ussd_gateway.channels.smpp.metrics import SmppMetrics
from ussd_gateway.core.tasks import cancel_and_wait

ESM_MESSAGE_TYPE = 0x3C
ESM_DELIVERY_RECEIPT = 0x04
ESM_UDHI = 0x40
MO_DEDUPE_S = 120
"""An MO SMS the SMSC or handset names (`user_message_reference`, a concatenation
reference) is answered once when it comes again, same name and content, within this."""
DRAIN_BATCH = 20
DRAIN_IDLE_S = 0.2
PERSIST_RETRY_S = (0.1, 0.5, 2.0)  # pauses between attempts to record a sent SMS in Redis
RECEIPT_TEXT = re.compile(r"\bid:(\S+).*?\bstat:(\w+)(?:.*?\berr:(\w+))?", re.IGNORECASE | re.DOTALL)
"""The receipt text SMSCs put in short_message (SMPP 3.4 appendix B)."""


class TokenBucket:
    """Paces a bind's outbound SMS to `rate` parts a second, with a burst of a tenth of
    a second's worth. `delay()` reserves the next slot and says how long to wait for it,
    so concurrent senders never exceed the rate together."""

    def __init__(self, rate: float, clock: Any = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self.burst_s = max(self.interval, 0.1)
        self.clock = clock
        self._next = 0.0

    def delay(self) -> float:
        now = self.clock()
        slot = max(self._next, now - self.burst_s)
        self._next = slot + self.interval
        return max(0.0, slot - now)


class ChannelMetrics:
    """What the channel adds to the link's metrics. Labels: bind names only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.receipts = Counter("smpp_delivery_receipts", "Delivery receipts received.", ["bind"], registry=registry)
        self.mo_sms = Counter("smpp_mo_sms", "MO SMS handled (keywords).", ["bind"], registry=registry)
        self.mo_duplicates = Counter("smpp_mo_duplicates", "MO SMS resent by the SMSC and answered once.", ["bind"], registry=registry)
        self.mt_sms = Counter("smpp_mt_sms", "Outbound SMS handed to the SMSC.", ["bind"], registry=registry)
        self.mo_concat_incomplete = Counter(
            "smpp_mo_concat_incomplete", "Concatenated MO SMS handled with parts missing (timeout).", ["bind"], registry=registry
        )
        self.mo_concat_dropped = Counter(
            "smpp_mo_concat_dropped", "Concatenated MO SMS dropped unfinished (too many at once).", ["bind"], registry=registry
        )
        self.ussd_replies_dropped = Counter(
            "smpp_ussd_replies_dropped", "USSD screens not sent before the dialogue's deadline.", ["bind"], registry=registry
        )


class SmppChannel:
    """Every configured bind, the USSD mapping, the keyword services and the outbound
    SMS queue's drain."""

    def __init__(self, gateway: Any, binds: Iterable[BindSettings]) -> None:
        self.gateway = gateway
        self.binds = tuple(binds)
        self.link_metrics = SmppMetrics(gateway.metrics.registry)
        self.metrics = ChannelMetrics(gateway.metrics.registry)
        self.keywords: KeywordRouter = gateway.keywords
        self.links: dict[str, SmppLink] = {}
        for bind in self.binds:
            self.links[bind.name] = SmppLink(bind, self._deliver_handler(bind), metrics=self.link_metrics)
        self.log = structlog.get_logger("ussd_gateway.smpp")
        self._tasks: list[asyncio.Task[None]] = []
        self._drain_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake_drain = asyncio.Event()
        self._screens: set[asyncio.Task[None]] = set()
        self._handling = 0
        """deliver_sm being answered now (a hop or an MO in the dispatcher)."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._reassemblers: dict[str, Reassembler] = {}
        self.ledger = getattr(gateway, "ledger", None)
        """Tracked SMS (campaigns, /sms/send): told when each is submitted and receipted."""
        self._buckets = {bind.name: TokenBucket(bind.max_tps) for bind in self.binds if bind.max_tps > 0}
        self._next_link = 0

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        await self.gateway.store.restore_inflight_sms()
        for link in self.links.values():
            self._tasks.append(asyncio.create_task(link.run(), name=f"smpp-link-{link.settings.name}"))
        self._drain_task = asyncio.create_task(self._drain(), name="smpp-outbound-drain")
        self._tasks.append(self._drain_task)

    async def stop(self, timeout: float = 5.0) -> None:
        """Finish in-flight hops and submits, unbind every link, stop the drain.
        Idempotent: the app calls it on shutdown and again on cleanup."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_drain.set()
        # From now on a deliver_sm is refused with a temporary error (the SMSC delivers
        # it again, elsewhere or later); those already received finish, and their
        # screens go out, before the unbind (each bounded by its hop and reply deadlines).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout / 2):
                await self._idle.wait()
        if self._screens:
            await asyncio.wait(set(self._screens), timeout=timeout / 2)
        # The drain finishes the batch in hand while the binds are up: a sent SMS is
        # recorded and acked, not sent again by the next start.
        if self._drain_task is not None:
            await asyncio.wait([self._drain_task], timeout=timeout / 2)
        await asyncio.gather(*(link.stop(timeout) for link in self.links.values()), return_exceptions=True)
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        for reassembler in self._reassemblers.values():
            reassembler.close()

    # ---- inbound --------------------------------------------------------------------------
    def _deliver_handler(self, bind: BindSettings):  # type: ignore[no-untyped-def]
        async def handle(pdu: smpp_pdu.Pdu) -> int:
            if self._stopping.is_set():
                return smpp_pdu.ESME_RX_T_APPN
            self._handling += 1
            self._idle.clear()
            try:
                return await self.on_deliver(bind, pdu)
            finally:
                self._handling -= 1
                if not self._handling:
                    self._idle.set()

        return handle

    async def on_deliver(self, bind: BindSettings, pdu: smpp_pdu.Pdu) -> int:
        """Answer status for one deliver_sm (the link sends the deliver_sm_resp)."""
        fields = pdu.fields
        if fields.get("esm_class", 0) & ESM_MESSAGE_TYPE == ESM_DELIVERY_RECEIPT:
            self.metrics.receipts.labels(bind.name).inc()
            if self.ledger is not None:
                return await self._receipt(fields)
            self.log.info(
                "delivery_receipt",
                bind=bind.name,
                message_id=fields.get("receipted_message_id", ""),
                state=fields.get("message_state"),
                msisdn=mask_msisdn(str(fields.get("source_addr", ""))),
            )
            return smpp_pdu.ESME_ROK
        try:
            msisdn = normalise_msisdn(str(fields.get("source_addr", "")))
        except BadRequest:
            return smpp_pdu.ESME_RINVSRCADR
        if "ussd_service_op" in fields:
            return await self._ussd(bind, pdu, msisdn)
        return await self._mo_sms(bind, pdu, msisdn)

    async def _receipt(self, fields: dict[str, Any]) -> int:
        """Match a delivery receipt to its SMS: the TLVs when present, else the text."""
        from ussd_gateway.campaigns.ledger import MESSAGE_STATES

        message_id = str(fields.get("receipted_message_id") or "")
        stat = MESSAGE_STATES.get(int(fields["message_state"]), "") if fields.get("message_state") is not None else ""
        err = ""
        found = RECEIPT_TEXT.search(bytes(fields.get("short_message") or b"").decode("latin-1"))
        if found is not None:
            message_id, stat = message_id or found.group(1), stat or found.group(2)
            err = found.group(3) or ""
        try:
            await self.ledger.receipt(message_id, stat, err)
        except Exception as exc:  # Redis down: the SMSC resends the receipt later
            self.log.warning("delivery_receipt_deferred", message_id=message_id, error=str(exc))
            return smpp_pdu.ESME_RSYSERR
        return smpp_pdu.ESME_ROK

    def _payload(self, bind: BindSettings, fields: dict[str, Any]) -> tuple[Concat | None, bytes, int]:
        """(concatenation IE, the octets after any UDH, GSM-7 fill bits after it)."""
        payload = bytes(fields.get("message_payload") or fields.get("short_message") or b"")
        if not fields.get("esm_class", 0) & ESM_UDHI:
            return None, payload, 0
        concat, body = parse_udh(payload)
        fill = (7 - (8 * (len(payload) - len(body))) % 7) % 7 if bind.gsm7_packed and len(body) < len(payload) else 0
        return concat, body, fill

    async def _ussd(self, bind: BindSettings, pdu: smpp_pdu.Pdu, msisdn: str) -> int:
        dialect = bind.ussd
        fields = pdu.fields
        op = int(fields["ussd_service_op"])
        _concat, body, _fill = self._payload(bind, fields)
        text = decode_ussd(
            int(fields.get("data_coding", 0)), body, packed=bind.gsm7_packed, scheme=dialect.dcs, overrides=bind.mo_data_coding_map
        ).strip()
        kind = ussd.op_kind(dialect, op, fields.get("its_session_info"))
        if kind is None:
            self.log.warning("ussd_op_unknown", bind=bind.name, op=op, msisdn=mask_msisdn(msisdn))
            return smpp_pdu.ESME_RINVOPTPARAMVAL
        session_id = ussd.session_id(bind, fields, msisdn)
        hop_key = ussd.hop_id(dialect, fields, text)
        marker: str | None = None
        if hop_key is None:
            marker = f"ussd:{session_id}"
            try:
                hop_key, _resent = await self._resend_key(marker, ussd.resend_fingerprint(fields), dialect.resend_window_s)
            except DependencyDown:
                return smpp_pdu.ESME_RSYSERR  # the gateway resends; nothing was done
        if kind is HopKind.BEGIN:
            service_code, inputs = ussd.dialled_code(bind, fields, text)
            hop = Hop("smpp", session_id, msisdn, service_code, kind, inputs=inputs, hop_key=hop_key)
        else:
            # The dialogue keeps the code it began with (the dispatcher reads it from the
            # session record): a continuation's destination_addr is often empty or other.
            inputs = (text,) if kind is HopKind.CONTINUE else ()
            hop = Hop("smpp", session_id, msisdn, "", kind, inputs=inputs, hop_key=hop_key)
        received = asyncio.get_running_loop().time()
        result = await self.gateway.dispatcher.answer(hop)
        if hop.kind is HopKind.ABORT or result.outcome == "replay":
            return smpp_pdu.ESME_ROK  # a release gets no screen; a resent hop was answered once
        submit = ussd.screen_submit(bind, fields, result.reply)
        # Sent after this returns, so the deliver_sm_resp goes out before the screen.
        task = asyncio.get_running_loop().create_task(
            self._send_screen(bind, submit, received + dialect.reply_deadline_s, msisdn, marker)
        )
        self._screens.add(task)
        task.add_done_callback(self._screens.discard)
        return smpp_pdu.ESME_ROK

    async def _resend_key(self, marker: str, fingerprint: str, window_s: float) -> tuple[str, bool]:
        """(key, resent) for a message the gateway gave no id: the previous one's key when
        this repeats it within the window with nothing in between (a resend), else a new one.

        Raises:
            DependencyDown: the store did not answer.
        """
        store = self.gateway.store
        mark = f"{fingerprint}:{os.urandom(6).hex()}"
        held = await store.swap(marker, mark, window_s)
        if held is not None and held.split(":", 1)[0] == fingerprint:
            await store.swap(marker, held, window_s)  # later resends match the first too
            return f"r:{held}", True
        return f"r:{mark}", False

    async def _send_screen(
        self, bind: BindSettings, submit: dict[str, Any], deadline: float, msisdn: str, marker: str | None = None
    ) -> None:
        """Hand a USSD screen to the link, or drop it once the dialogue's deadline passed.

        With a resend `marker` (gateways that give a hop no id), a screen the SMSC took
        ends the resend window: the subscriber answers what they were shown, so the same
        text again is their new answer, however quick."""
        remaining = deadline - asyncio.get_running_loop().time()
        link = self.links[bind.name]
        try:
            if remaining <= 0:
                raise LinkUnavailable("the dialogue's deadline passed")
            outcome = await link.submit(submit, timeout=remaining)
        except (LinkUnavailable, SubmitUnconfirmed) as exc:
            self.metrics.ussd_replies_dropped.labels(bind.name).inc()
            self.log.warning("ussd_reply_dropped", bind=bind.name, msisdn=mask_msisdn(msisdn), reason=str(exc))
            return
        if outcome.status != smpp_pdu.ESME_ROK:
            self.metrics.ussd_replies_dropped.labels(bind.name).inc()
            self.log.warning("ussd_reply_refused", bind=bind.name, msisdn=mask_msisdn(msisdn), status=outcome.status)
        elif marker is not None:
            with contextlib.suppress(DependencyDown):
                await self.gateway.store.swap(marker, "shown", bind.ussd.resend_window_s)

    async def _mo_sms(self, bind: BindSettings, pdu: smpp_pdu.Pdu, msisdn: str) -> int:
        fields = pdu.fields
        short_code = str(fields.get("destination_addr", ""))
        concat, body, fill = self._payload(bind, fields)
        data_coding = int(fields.get("data_coding", 0))
        text = decode_mo(data_coding, body, packed=bind.gsm7_packed, fill_bits=fill, overrides=bind.mo_data_coding_map)
        umr = fields.get("user_message_reference")
        reference = None if umr is None else f"umr:{umr}"
        part = MoMessage(msisdn, short_code, text, body, data_coding, reference)
        if fields.get("sar_msg_ref_num") is not None and int(fields.get("sar_total_segments", 1)) > 1:
            ref, total, seq = int(fields["sar_msg_ref_num"]), int(fields["sar_total_segments"]), int(fields.get("sar_segment_seqnum", 1))
        elif concat is not None and concat.total > 1:
            ref, total, seq = concat.reference, concat.total, concat.sequence
        else:
            return await self._handle_mo(bind, part)
        part.reference = f"concat:{ref}:{total}"
        key = (msisdn, short_code, str(ref), str(total))
        whole = self._reassembler(bind).add(part, key, total, seq)
        if whole is DUPLICATE_PART:
            self.metrics.mo_duplicates.labels(bind.name).inc()
            return smpp_pdu.ESME_ROK
        if whole is None:
            return smpp_pdu.ESME_ROK  # kept: answered with the last part
        assert isinstance(whole, MoMessage)
        status = await self._handle_mo(bind, whole)
        if status != smpp_pdu.ESME_ROK:
            self._reassembler(bind).put_back(whole)
        return status

    def _reassembler(self, bind: BindSettings) -> Reassembler:
        found = self._reassemblers.get(bind.name)
        if found is None:

            async def expired(message: MoMessage) -> None:
                self.metrics.mo_concat_incomplete.labels(bind.name).inc()
                self.log.warning("mo_sms_incomplete", bind=bind.name, msisdn=mask_msisdn(message.msisdn), parts=len(message.parts), total=message.total)
                await self._handle_mo(bind, message)

            def dropped(message: MoMessage) -> None:
                self.metrics.mo_concat_dropped.labels(bind.name).inc()
                self.log.warning("mo_sms_parts_dropped", bind=bind.name, msisdn=mask_msisdn(message.msisdn), parts=len(message.parts))

            found = self._reassemblers[bind.name] = Reassembler(bind.mo_concat_timeout_s, bind.mo_concat_max, expired, dropped)
        return found

    async def _handle_mo(self, bind: BindSettings, message: MoMessage) -> int:
        """Dedupe, route and answer one whole MO SMS; the status for its deliver_sm_resp.

        With a reference (`user_message_reference`, a concatenation reference) the same
        reference and content within MO_DEDUPE_S is a resend. Without one, only an exact
        repeat of the subscriber's previous MO, with nothing from them in between,
        within the bind's `mo_resend_window_s` is: texting a keyword again is never
        taken for a resend.
        """
        msisdn, short_code = message.msisdn, message.short_code
        content = hashlib.sha1(
            b"|".join([short_code.encode(), str(message.data_coding).encode(), message.content])
        ).hexdigest()[:20]
        store = self.gateway.store
        try:
            if message.reference is not None:
                marker = "mo:ref:" + hashlib.sha1(f"{msisdn}|{message.reference}|{content}".encode()).hexdigest()[:24]
                duplicate = await store.swap(marker, "1", MO_DEDUPE_S) == "1"
                message_key, window = marker[7:], float(MO_DEDUPE_S)
            else:
                marker = f"mo:last:{bind.msisdn_tag(msisdn)}"
                hop_key, duplicate = await self._resend_key(marker, content, bind.mo_resend_window_s)
                message_key, window = hashlib.sha1(hop_key.encode()).hexdigest()[:24], bind.mo_resend_window_s
        except DependencyDown as exc:
            self.log.warning("mo_sms_deferred", bind=bind.name, msisdn=mask_msisdn(msisdn), error=str(exc))
            return smpp_pdu.ESME_RSYSERR
        if duplicate:
            self.metrics.mo_duplicates.labels(bind.name).inc()
            return smpp_pdu.ESME_ROK  # a resend: already answered
        limiter = self.gateway.dispatcher.limiter
        if limiter is not None and (limit := await limiter.check_sms(msisdn)) is not None:
            # Over the subscriber's MO rate: accepted (so the SMSC does not resend) and
            # not answered, so an automated sender answering our replies cannot loop.
            self.gateway.metrics.guard.count_limited(limit)
            self.log.warning("mo_sms_limited", bind=bind.name, msisdn=mask_msisdn(msisdn))
            return smpp_pdu.ESME_ROK
        try:
            # Bounded like a USSD hop: a hung store or backend must not hold the link.
            async with asyncio.timeout(self.gateway.dispatcher.settings.hop_deadline_s * 2):
                lang = await store.get_language(msisdn)
                reply = await self.keywords.handle(msisdn, short_code, message.text, message_key=message_key, lang=lang)
                if reply is not None:
                    await store.enqueue_sms(OutboundSms(to=msisdn, sender=short_code, text=reply, dedupe_key=f"reply:{message_key}"))
                    self._wake_drain.set()
        except (DependencyDown, TimeoutError) as exc:
            # The SMSC will resend when we answer with an error: forget this one so the
            # resend is handled, not taken for a duplicate.
            with contextlib.suppress(DependencyDown, TimeoutError):
                await store.swap(marker, "", min(window, 1.0))
            self.log.warning("mo_sms_deferred", bind=bind.name, msisdn=mask_msisdn(msisdn), error=str(exc))
            return smpp_pdu.ESME_RSYSERR
        self.metrics.mo_sms.labels(bind.name).inc()
        self.log.info("mo_sms", bind=bind.name, msisdn=mask_msisdn(msisdn), short_code=short_code, replied=reply is not None)
        return smpp_pdu.ESME_ROK

    # ---- outbound SMS -------------------------------------------------------------------
    def _link_for(self, sender: str) -> SmppLink | None:
        """A bind that is up, preferring those that carry the sender short code, taken
        in turn: several binds share the outbound SMS (and each its own `max_tps`)."""
        up = [(b, self.links[b.name]) for b in self.binds if self.links[b.name].up]
        carrying = [link for bind, link in up if sender in bind.short_codes] or [link for _b, link in up]
        if not carrying:
            return None
        self._next_link += 1
        return carrying[self._next_link % len(carrying)]

    async def _drain(self) -> None:
        """Send the durable outbound queue through the binds; what cannot be sent now
        goes back to the queue and waits for a bind to come back."""
        store = self.gateway.store
        while not self._stopping.is_set():
            try:
                claimed = await store.claim_sms(DRAIN_BATCH)
            except DependencyDown:
                claimed = []
            if not claimed:
                self._wake_drain.clear()
                try:
                    await asyncio.wait_for(self._wake_drain.wait(), DRAIN_IDLE_S)
                except TimeoutError:
                    pass
                continue
            results = await asyncio.gather(*(self._send_sms(item) for item in claimed), return_exceptions=True)
            if any(r is False for r in results):
                await asyncio.sleep(DRAIN_IDLE_S)  # no bind up: do not spin

    async def _send_sms(self, item: Any) -> bool:
        store = self.gateway.store
        sms: OutboundSms = item.sms
        if sms.sms_id and self.ledger is not None and not self.ledger.admit(sms):
            await self.ledger.held(sms)  # its campaign's quiet hours began: sent in the morning
            await self._persist("sms_ack_lost", sms, lambda: store.ack_sms(item))
            return True
        link = self._link_for(sms.sender)
        if link is None:
            await store.requeue_sms(item)
            return False
        bind = link.settings
        if bind.long_sms == "payload":
            data_coding, payload = payload_sms(sms.text, packed=bind.gsm7_packed)
            parts = [{"data_coding": mt_data_coding(data_coding, bind.mt_data_coding_map), "message_payload": payload, "esm_class": 0}]
        else:
            parts = [
                {"data_coding": mt_data_coding(p.data_coding, bind.mt_data_coding_map), "esm_class": p.esm_class, "short_message": p.short_message}
                for p in split_sms(sms.text, packed=bind.gsm7_packed, reference=random.randrange(256))
            ]
        if sms.receipt:
            parts[-1]["registered_delivery"] = 1  # the last part's receipt stands for the SMS
        bucket = self._buckets.get(bind.name)
        try:
            for part in parts:
                if bucket is not None and (wait := bucket.delay()) > 0:
                    await asyncio.sleep(wait)
                outcome = await link.submit(
                    {
                        "source_addr_ton": 3 if sms.sender.isdigit() else 5,
                        "source_addr_npi": 0,
                        "source_addr": sms.sender,
                        "dest_addr_ton": 1,
                        "dest_addr_npi": 1,
                        "destination_addr": sms.to,
                        **part,
                    },
                    timeout=bind.response_timeout_s,
                )
                if outcome.status != smpp_pdu.ESME_ROK:
                    self.log.warning("sms_refused", bind=bind.name, msisdn=mask_msisdn(sms.to), status=outcome.status)
                    break
        except (LinkUnavailable, SubmitUnconfirmed):
            # Unconfirmed may have reached the SMSC; an SMS is resent rather than lost
            # (at least once), unlike a USSD screen.
            await store.requeue_sms(item)
            return False
        self.metrics.mt_sms.labels(bind.name).inc()
        # Sent: its state is recorded before the ack, both retried (one left `queued`
        # keeps its campaign from being done; one left in flight is sent again).
        if sms.sms_id and self.ledger is not None:
            ledger = self.ledger
            await self._persist("sms_tracking_lost", sms, lambda: ledger.submitted(sms, outcome.message_id, outcome.status))
        await self._persist("sms_ack_lost", sms, lambda: store.ack_sms(item))
        return True

    async def _persist(self, event: str, sms: OutboundSms, write: Callable[[], Awaitable[None]]) -> None:
        """Run an idempotent Redis write about a sent SMS, retried over `PERSIST_RETRY_S`;
        the last failure is logged as `event` (the SMS itself went)."""
        for pause in (*PERSIST_RETRY_S, None):
            try:
                await write()
                return
            except Exception as exc:
                if pause is None:
                    self.log.warning(event, sms_id=sms.sms_id, to=mask_msisdn(sms.to), error=f"{type(exc).__name__}: {exc}")
                    return
            await asyncio.sleep(pause)
