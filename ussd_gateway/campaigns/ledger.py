"""The SMS ledger: every tracked SMS (campaigns, `POST /sms/send`) from queued to sent
to delivered, failed or expired, matched to its delivery receipt.

The SMPP channel reports back through four calls: `admit` (may it still go out?),
`held` (no: quiet hours began while it waited), `submitted` (the SMSC answered its
`submit_sm`: the `message_id` is kept, message_id -> SMS id, for `mid_ttl_s`) and
`receipt` (a delivery receipt named that message_id). A receipt that overtakes its own
`submit_sm_resp` (the SMSC is quick, our write is not yet done) waits in Redis and is
applied the moment the message_id is recorded. States only move forward and a final
state (delivered, failed, expired) is never left, so a resent receipt counts once;
each move is counted on the SMS's campaign in the same script, in its total and in
the hour it happened (`camp:<id>:h`, field `<YYYY-MM-DDTHH>|<state>`, the hour on the
operator's clock, `[campaigns] timezone`): an SMS sent at 09:59 and delivered at 10:01
counts `sent` in the 09 hour and `delivered` in the 10 hour, for good.

Keys share the `{care}` hash tag (one Redis Cluster slot, as the scripts need). A
campaign SMS the SMSC took is reported to `on_sent` (follow-up attribution), outside
the script: that write lives in the subscriber's slot.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from zoneinfo import ZoneInfo
from typing import Any

import orjson
import structlog

from ussd_gateway.core.errors import BadRequest, DependencyDown
from ussd_gateway.core.msisdn import normalise_msisdn
from ussd_gateway.sessions.redis_clients import load_scripts_for_pipeline, queue_script
from ussd_gateway.sessions.store import OutboundSms, SessionStore

PREFIX = "ussd:{care}"
SMS_TTL_S = 7 * 86_400
MID_TTL_S = 3 * 86_400
"""How long a message_id is matched to its SMS: longer than an SMSC keeps retrying."""
IDEMPOTENCY_TTL_S = 86_400
MAX_BATCH = 100
FINAL = ("delivered", "failed", "expired")
RECEIPT_STATES = {
    "DELIVRD": "delivered", "EXPIRED": "expired", "UNDELIV": "failed", "REJECTD": "failed",
    "DELETED": "failed", "UNKNOWN": "failed",
}  # fmt: skip
"""Receipt `stat` -> ledger state; ENROUTE and ACCEPTD are not final and change nothing."""
MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}
"""SMPP 3.4 `message_state` TLV values."""

_APPLY = """
local function apply(k, state, err, now, receipt, hour)
  local old = redis.call('HGET', k, 'state')
  if not old or old == state or old == 'delivered' or old == 'failed' or old == 'expired' then return 0 end
  redis.call('HSET', k, 'state', state, 'at_' .. state, now)
  if err ~= '' then redis.call('HSET', k, 'err', err) end
  if receipt ~= '' then redis.call('HSET', k, 'receipt', receipt) end
  local c = redis.call('HGET', k, 'campaign')
  if c and c ~= '' then
    local counts = 'ussd:{care}:camp:' .. c .. ':n'
    redis.call('HINCRBY', counts, state, 1)
    redis.call('HINCRBY', 'ussd:{care}:camp:' .. c .. ':h', hour .. '|' .. state, 1)
    if old == 'queued' then redis.call('HINCRBY', counts, 'waiting', -1) end
    if state == 'queued' then redis.call('HINCRBY', counts, 'waiting', 1) end
  end
  return 1
end
"""
# KEYS: sms. ARGV: to, from, text, campaign, now, ttl, hour. Returns 1 when new (or requeued after a hold).
_CREATE = _APPLY + """
local old = redis.call('HGET', KEYS[1], 'state')
if old == 'held' then apply(KEYS[1], 'queued', '', ARGV[5], '', ARGV[7]) return 1 end
if old then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'to', ARGV[1], 'from', ARGV[2], 'text', ARGV[3], 'campaign', ARGV[4], 'at_queued', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if ARGV[4] ~= '' then
  redis.call('HINCRBY', 'ussd:{care}:camp:' .. ARGV[4] .. ':n', 'queued', 1)
  redis.call('HINCRBY', 'ussd:{care}:camp:' .. ARGV[4] .. ':n', 'waiting', 1)
end
return 1
"""
# KEYS: sms, message_id -> id, pending receipt. ARGV: id, message_id, ok, err, now, ttl, hour.
# Returns {applied, campaign, to} (the campaign '' for an SMS of none).
_SUBMITTED = _APPLY + """
local who = redis.call('HMGET', KEYS[1], 'campaign', 'to')
if ARGV[3] ~= '1' then return {apply(KEYS[1], 'failed', ARGV[4], ARGV[5], '', ARGV[7]), '', ''} end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[6])
redis.call('HSET', KEYS[1], 'message_id', ARGV[2])
local applied = apply(KEYS[1], 'sent', '', ARGV[5], '', ARGV[7])
local waiting = redis.call('GET', KEYS[3])
if waiting then
  redis.call('DEL', KEYS[3])
  local state, err, stat = string.match(waiting, '^([^|]*)|([^|]*)|(.*)$')
  apply(KEYS[1], state, err, ARGV[5], stat, ARGV[7])
end
return {applied, who[1] or '', who[2] or ''}
"""
# KEYS: message_id -> id, pending receipt. ARGV: state, err, now, stat, hour.
_RECEIPT = _APPLY + """
local id = redis.call('GET', KEYS[1])
if not id then
  redis.call('SET', KEYS[2], ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[4], 'EX', 3600)
  return -1
end
return apply('ussd:{care}:sms:' .. id, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""
# KEYS: sms. ARGV: now, hour. Quiet hours began before it went out: back to its campaign's retry list.
_HELD = _APPLY + """
if apply(KEYS[1], 'held', '', ARGV[1], '', ARGV[2]) == 0 then return 0 end
local c = redis.call('HGET', KEYS[1], 'campaign')
if c and c ~= '' then redis.call('RPUSH', 'ussd:{care}:camp:' .. c .. ':retry', redis.call('HGET', KEYS[1], 'to')) end
return 1
"""


def sms_key(sms_id: str) -> str:
    return f"{PREFIX}:sms:{sms_id}"


def hour_of(when: float, zone: ZoneInfo) -> str:
    """The operator's hour of a unix time, as the per-hour counts name it: `2025-06-02T10`."""
    return datetime.fromtimestamp(when, zone).strftime("%Y-%m-%dT%H")


SentHook = Callable[[str, str, float], Awaitable[None]]
"""`(campaign id, msisdn, when)`: a campaign SMS the SMSC took (follow-up attribution)."""


class SmsLedger:
    """Tracked SMS in Redis; what the SMPP channel reports to and `/sms/{id}` reads."""

    def __init__(
        self, client: Any, store: SessionStore, *, default_sender: str, clock: Callable[[], float] = time.time,
        timezone: str = "Asia/Ho_Chi_Minh", on_sent: SentHook | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.default_sender = default_sender
        self.clock = clock
        self.zone = ZoneInfo(timezone)
        self.on_sent = on_sent
        self.log = structlog.get_logger("ussd_gateway.sms_ledger")
        self._create = client.register_script(_CREATE)
        self._submitted = client.register_script(_SUBMITTED)
        self._receipt = client.register_script(_RECEIPT)
        self._held = client.register_script(_HELD)

    # ---- what the channel calls ----------------------------------------------------------
    def admit(self, sms: OutboundSms) -> bool:
        """False once the SMS's deadline (`until`: quiet hours begin) has passed."""
        return not sms.until or self.clock() < sms.until

    async def held(self, sms: OutboundSms) -> None:
        now = self.clock()
        await self._held(keys=[sms_key(sms.sms_id)], args=[now, hour_of(now, self.zone)])

    async def submitted(self, sms: OutboundSms, message_id: str, status: int) -> None:
        ok = status == 0 and bool(message_id)
        err = "" if ok else f"submit_sm 0x{status:08X}"
        now = self.clock()
        applied, campaign, to = await self._submitted(
            keys=[sms_key(sms.sms_id), f"{PREFIX}:mid:{message_id}", f"{PREFIX}:rcpt:{message_id}"],
            args=[sms.sms_id, message_id, "1" if ok else "0", err, now, MID_TTL_S, hour_of(now, self.zone)],
        )
        if ok and campaign and self.on_sent is not None:
            # Also when not applied (a resent submit_sm_resp): the touch is idempotent.
            await self.on_sent(campaign.decode(), to.decode(), now)

    async def receipt(self, message_id: str, stat: str, err: str) -> bool | None:
        """Apply a delivery receipt: True applied, False not new (a resend), None kept
        for an SMS whose submit_sm_resp is still being recorded (or is not ours)."""
        state = RECEIPT_STATES.get(stat.upper())
        if state is None or not message_id:
            return False
        now = self.clock()
        result = await self._receipt(
            keys=[f"{PREFIX}:mid:{message_id}", f"{PREFIX}:rcpt:{message_id}"],
            args=[state, err, now, stat.upper(), hour_of(now, self.zone)],
        )
        return None if int(result) < 0 else bool(result)

    @property
    def create_script(self) -> Any:
        """The script `create` queues (a cluster pipeline needs it loaded first)."""
        return self._create

    # ---- creating and reading ------------------------------------------------------------
    async def create(self, pipe: Any, sms: OutboundSms, campaign: str = "") -> None:
        """Record a queued SMS (in the caller's pipeline, after `load_scripts_for_pipeline`
        with `create_script`); idempotent by its id."""
        now = self.clock()
        queue_script(pipe, self._create, [sms_key(sms.sms_id)], [sms.to, sms.sender, sms.text, campaign, now, SMS_TTL_S, hour_of(now, self.zone)])

    async def get(self, sms_id: str) -> dict[str, Any] | None:
        raw = await self.client.hgetall(sms_key(sms_id))
        if not raw:
            return None
        found = {k.decode(): v.decode() for k, v in raw.items()}
        return {
            "id": sms_id, "state": found.get("state"), "to": found.get("to"), "from": found.get("from"),
            "campaign": found.get("campaign") or None, "message_id": found.get("message_id"),
            "receipt": found.get("receipt"), "error": found.get("err"),
            "at": {k[3:]: float(v) for k, v in found.items() if k.startswith("at_")},
        }

    async def send(self, messages: list[dict[str, Any]], client_key: str | None) -> tuple[list[str], bool]:
        """`POST /sms/send`: queue up to MAX_BATCH SMS (each `to`, `text`, `from`?),
        tracked, with delivery receipts. With `client_key` a retry returns the first
        call's ids and queues nothing again. Returns (ids, replayed).

        Raises:
            BadRequest: a malformed message, or the key reused for another request.
            DependencyDown: Redis did not answer.
        """
        if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_BATCH:
            raise BadRequest(f"send 1 to {MAX_BATCH} messages")
        checked = []
        for index, item in enumerate(messages):
            if not isinstance(item, dict) or not isinstance(item.get("to"), str) or not isinstance(item.get("text"), str):
                raise BadRequest(f"message {index}: needs `to` and `text` strings")
            text = item["text"]
            if not text.strip() or len(text) > 1000:
                raise BadRequest(f"message {index}: `text` must hold 1-1000 characters")
            sender = item.get("from") or self.default_sender
            if not isinstance(sender, str) or not 1 <= len(sender) <= 15:
                raise BadRequest(f"message {index}: `from` must be a short code or brandname")
            checked.append((normalise_msisdn(item["to"]), sender, text))
        digest = hashlib.sha256(orjson.dumps(checked)).hexdigest()
        replayed = False
        if client_key:
            if len(client_key) > 100:
                raise BadRequest("the idempotency key holds at most 100 characters")
            base = hashlib.sha256(client_key.encode()).hexdigest()
            ids = [f"{base[:14]}{index:02x}" for index in range(len(checked))]
            key = f"{PREFIX}:idem:{base}"
            try:
                held = await self.client.set(key, digest, nx=True, ex=IDEMPOTENCY_TTL_S, get=True)
            except Exception as error:  # redis errors: the caller retries with the same key
                raise DependencyDown(f"SMS ledger: {error}") from error
            if held is not None:
                if held.decode() != digest:
                    raise BadRequest("this idempotency key was used for a different request")
                replayed = True
        else:
            ids = [uuid.uuid4().hex[:16] for _ in checked]
        # Done again on a replay: each step is idempotent (the record by its id, the
        # queue by its dedupe key), so a crash between them never loses an SMS.
        outgoing = [OutboundSms(to, sender, text, f"api:{sms_id}", sms_id=sms_id, receipt=True) for sms_id, (to, sender, text) in zip(ids, checked)]
        await load_scripts_for_pipeline(self.client, self._create)
        pipe = self.client.pipeline(transaction=False)
        for sms in outgoing:
            await self.create(pipe, sms)
        await pipe.execute()
        for sms in outgoing:
            await self.store.enqueue_sms(sms)
        return ids, replayed
