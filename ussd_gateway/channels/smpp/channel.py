"""The SMPP channel: USSD dialogues and MO SMS from SMPP binds into the gateway, and
replies (USSD screens, SMS) back out through the same binds.

This is the SMPP twin of the HTTP dialect adapters: it turns `deliver_sm` into a `Hop`
for the dispatcher (the same menus, sessions, idempotency and resume as over HTTP) or
into a keyword message for the keyword router, and renders what comes back as
`submit_sm`. The wire work (binds, window, throttling, reconnects) is `SmppLink`'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from ussd_gateway.sessions.store import OutboundSms
from ussd_gateway.core.inputs import split_service_code
from ussd_gateway.core.errors import BadRequest, DependencyDown
from ussd_gateway.core.hop import Hop, HopKind
from ussd_gateway.services.keywords import KeywordRouter
from ussd_gateway.core.msisdn import mask_msisdn, normalise_msisdn

from ussd_gateway.channels.smpp import pdu as smpp_pdu
from ussd_gateway.channels.smpp.config import BindSettings
from ussd_gateway.channels.smpp.encoding import decode_text, encode_text, parse_udh, payload_sms, split_sms
from ussd_gateway.channels.smpp.link import LinkUnavailable, SmppLink, SubmitUnconfirmed
from ussd_gateway.channels.smpp.metrics import SmppMetrics

ESM_MESSAGE_TYPE = 0x3C
ESM_DELIVERY_RECEIPT = 0x04
ESM_UDHI = 0x40
MO_DEDUPE_S = 120
"""A resent MO SMS (the SMSC lost our deliver_sm_resp) arrives within seconds; one with
the same content within this window is answered once."""
DRAIN_BATCH = 20
DRAIN_IDLE_S = 0.2


class ChannelMetrics:
    """What the channel adds to the link's metrics. Labels: bind names only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.receipts = Counter("smpp_delivery_receipts", "Delivery receipts received.", ["bind"], registry=registry)
        self.mo_sms = Counter("smpp_mo_sms", "MO SMS handled (keywords).", ["bind"], registry=registry)
        self.mo_duplicates = Counter("smpp_mo_duplicates", "MO SMS resent by the SMSC and answered once.", ["bind"], registry=registry)
        self.mt_sms = Counter("smpp_mt_sms", "Outbound SMS handed to the SMSC.", ["bind"], registry=registry)
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
        self._stopping = asyncio.Event()
        self._wake_drain = asyncio.Event()
        self._screens: set[asyncio.Task[None]] = set()

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        await self.gateway.store.restore_inflight_sms()
        for link in self.links.values():
            self._tasks.append(asyncio.create_task(link.run(), name=f"smpp-link-{link.settings.name}"))
        self._tasks.append(asyncio.create_task(self._drain(), name="smpp-outbound-drain"))

    async def stop(self, timeout: float = 5.0) -> None:
        """Finish in-flight hops and submits, unbind every link, stop the drain.
        Idempotent: the app calls it on shutdown and again on cleanup."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_drain.set()
        await asyncio.gather(*(link.stop(timeout) for link in self.links.values()), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # ---- inbound --------------------------------------------------------------------------
    def _deliver_handler(self, bind: BindSettings):  # type: ignore[no-untyped-def]
        async def handle(pdu: smpp_pdu.Pdu) -> int:
            return await self.on_deliver(bind, pdu)

        return handle

    async def on_deliver(self, bind: BindSettings, pdu: smpp_pdu.Pdu) -> int:
        """Answer status for one deliver_sm (the link sends the deliver_sm_resp)."""
        fields = pdu.fields
        if fields.get("esm_class", 0) & ESM_MESSAGE_TYPE == ESM_DELIVERY_RECEIPT:
            self.metrics.receipts.labels(bind.name).inc()
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

    def _text(self, bind: BindSettings, pdu: smpp_pdu.Pdu) -> str:
        fields = pdu.fields
        payload = fields.get("message_payload") or fields.get("short_message") or b""
        if fields.get("esm_class", 0) & ESM_UDHI:
            _concat, payload = parse_udh(payload)
        return decode_text(int(fields.get("data_coding", 0)), payload, packed=bind.gsm7_packed)

    async def _ussd(self, bind: BindSettings, pdu: smpp_pdu.Pdu, msisdn: str) -> int:
        dialect = bind.ussd
        fields = pdu.fields
        op = int(fields["ussd_service_op"])
        text = self._text(bind, pdu).strip()
        its = fields.get("its_session_info")
        umr = fields.get("user_message_reference")
        if dialect.session_id_from == "its_session_info" and its is not None:
            session_id = f"smpp:{msisdn}:{int(its) & dialect.session_mask}"
        elif dialect.session_id_from == "receipted_message_id" and fields.get("receipted_message_id"):
            session_id = f"smpp:{msisdn}:{fields['receipted_message_id']}"
        else:
            session_id = f"smpp:{msisdn}"
        if umr is not None:
            hop_key: str | None = f"u:{umr}"
        elif its is not None:
            hop_key = f"i:{its}:{text}"
        else:
            hop_key = None
        if op in dialect.op_begin:
            code = text or str(fields.get("destination_addr", ""))
            if not code.startswith("*"):
                code = "*" + code
            if not code.endswith("#"):
                code += "#"
            try:
                service_code, inputs = split_service_code(code)
            except BadRequest:
                service_code, inputs = code, ()
            if bind.service_codes and service_code not in bind.service_codes:
                # Not a code this bind carries: the dispatcher answers it like any code
                # the menus do not serve (a polite END).
                service_code = "*#"
            hop = Hop("smpp", session_id, msisdn, service_code, HopKind.BEGIN, inputs=inputs, hop_key=hop_key)
        elif op in dialect.op_continue:
            hop = Hop("smpp", session_id, msisdn, self._code_of(bind, fields), HopKind.CONTINUE, inputs=(text,), hop_key=hop_key)
        elif op in dialect.op_abort:
            hop = Hop("smpp", session_id, msisdn, self._code_of(bind, fields), HopKind.ABORT, hop_key=hop_key)
        else:
            self.log.warning("ussd_op_unknown", bind=bind.name, op=op, msisdn=mask_msisdn(msisdn))
            return smpp_pdu.ESME_RINVOPTPARAMVAL
        loop = asyncio.get_running_loop()
        received = loop.time()
        result = await self.gateway.dispatcher.answer(hop)
        if hop.kind is HopKind.ABORT or result.outcome == "replay":
            return smpp_pdu.ESME_ROK  # a release gets no screen; a resent hop was answered once
        reply = result.reply
        data_coding, short_message = encode_text(reply.text, packed=bind.gsm7_packed)
        source = str(fields.get("destination_addr", ""))
        if source.startswith("*") and "*" in source[1:]:
            # A shortcut dial (`*100*PIN`): answer from the service code, never echoing
            # what was dialled after it (a scratch-card PIN) back onto the network.
            source = self._code_of(bind, fields).rstrip("#")
        submit: dict[str, Any] = {
            "service_type": dialect.service_type,
            "source_addr_ton": fields.get("dest_addr_ton", 0),
            "source_addr_npi": fields.get("dest_addr_npi", 0),
            "source_addr": source,
            "dest_addr_ton": fields.get("source_addr_ton", 1),
            "dest_addr_npi": fields.get("source_addr_npi", 1),
            "destination_addr": fields.get("source_addr", ""),
            "data_coding": data_coding,
            "short_message": short_message,
            "ussd_service_op": dialect.op_reply_end if reply.end else dialect.op_reply_continue,
        }
        if its is not None:
            its = int(its)
            submit["its_session_info"] = (its | dialect.end_bit) if reply.end else (its & ~dialect.end_bit)
        if umr is not None:
            submit["user_message_reference"] = umr
        # Sent after this returns, so the deliver_sm_resp goes out before the screen.
        task = asyncio.get_running_loop().create_task(self._send_screen(bind, submit, received + dialect.reply_deadline_s, msisdn))
        self._screens.add(task)
        task.add_done_callback(self._screens.discard)
        return smpp_pdu.ESME_ROK

    def _code_of(self, bind: BindSettings, fields: dict[str, Any]) -> str:
        """The service code of a continuing dialogue: the destination it was sent to,
        without the inputs of a shortcut dial (`*090*2*1#` continues as `*090#`)."""
        destination = str(fields.get("destination_addr", ""))
        code = destination if destination.startswith("*") else "*" + destination
        code = code if code.endswith("#") else code + "#"
        try:
            return split_service_code(code)[0]
        except BadRequest:
            return code

    async def _send_screen(self, bind: BindSettings, submit: dict[str, Any], deadline: float, msisdn: str) -> None:
        """Hand a USSD screen to the link, or drop it once the dialogue's deadline passed."""
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

    async def _mo_sms(self, bind: BindSettings, pdu: smpp_pdu.Pdu, msisdn: str) -> int:
        fields = pdu.fields
        short_code = str(fields.get("destination_addr", ""))
        text = self._text(bind, pdu)
        raw = fields.get("message_payload") or fields.get("short_message") or b""
        digest = hashlib.sha1(
            b"|".join([msisdn.encode(), short_code.encode(), raw, str(fields.get("user_message_reference", "")).encode()])
        ).hexdigest()[:20]
        store = self.gateway.store
        try:
            if not await store.claim_once(f"mo:{digest}", MO_DEDUPE_S):
                self.metrics.mo_duplicates.labels(bind.name).inc()
                return smpp_pdu.ESME_ROK  # a resend: already answered
            # Bounded like a USSD hop: a hung store or backend must not hold the link.
            async with asyncio.timeout(self.gateway.dispatcher.settings.hop_deadline_s * 2):
                lang = await store.get_language(msisdn)
                reply = await self.keywords.handle(msisdn, short_code, text, message_key=digest, lang=lang)
                if reply is not None:
                    await store.enqueue_sms(OutboundSms(to=msisdn, sender=short_code, text=reply, dedupe_key=f"reply:{digest}"))
                    self._wake_drain.set()
        except (DependencyDown, TimeoutError) as exc:
            # The SMSC will resend when we answer with an error: nothing is lost.
            self.log.warning("mo_sms_deferred", bind=bind.name, msisdn=mask_msisdn(msisdn), error=str(exc))
            return smpp_pdu.ESME_RSYSERR
        self.metrics.mo_sms.labels(bind.name).inc()
        self.log.info("mo_sms", bind=bind.name, msisdn=mask_msisdn(msisdn), short_code=short_code, replied=reply is not None)
        return smpp_pdu.ESME_ROK

    # ---- outbound SMS -------------------------------------------------------------------
    def _link_for(self, sender: str) -> SmppLink | None:
        """A bind that is up, preferring one that carries the sender short code."""
        up = [(b, self.links[b.name]) for b in self.binds if self.links[b.name].up]
        for bind, link in up:
            if sender in bind.short_codes:
                return link
        return up[0][1] if up else None

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
        link = self._link_for(sms.sender)
        if link is None:
            await store.requeue_sms(item)
            return False
        bind = link.settings
        if bind.long_sms == "payload":
            data_coding, payload = payload_sms(sms.text, packed=bind.gsm7_packed)
            parts = [{"data_coding": data_coding, "message_payload": payload, "esm_class": 0}]
        else:
            parts = [
                {"data_coding": p.data_coding, "esm_class": p.esm_class, "short_message": p.short_message}
                for p in split_sms(sms.text, packed=bind.gsm7_packed, reference=random.randrange(256))
            ]
        try:
            for part in parts:
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
        await store.ack_sms(item)
        self.metrics.mt_sms.labels(bind.name).inc()
        return True
