"""The loop that sends running campaigns, a batch of targets at a time.

Every gateway process with Redis runs one `CampaignRunner`. It looks for running
campaigns every `poll_s` and drives each one it holds the lease of (a Redis key that
expires unless renewed, so a crashed process's campaign is taken over). A step:

1. outside quiet hours only, and only while the outbound queue holds fewer than
   `max_outstanding` SMS (the SMPP drain, paced by the binds' `max_tps`, sets the pace;
   a pause, cancel or the start of quiet hours acts on what is not yet queued);
2. the subscribers held back when quiet hours began go first, then the next `batch`
   targets after the cursor;
3. each target is claimed in one script (`_CLAIM`): already handled in this campaign,
   opted out, too long, over the frequency cap across campaigns, or claimed now;
4. the claimed ones are recorded in the SMS ledger and queued (dedupe key per campaign
   and subscriber), marked queued, and only then the cursor moves on.

A crash anywhere repeats at most the step in hand: its claimed subscribers are queued
again under the same dedupe key (so not twice), its decided ones are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.sessions.redis_clients import load_scripts_for_pipeline, queue_script
from ussd_gateway.sessions.redis_store import SMS_QUEUE_KEY
from ussd_gateway.sessions.store import OutboundSms, SessionStore

from ussd_gateway.campaigns.book import CampaignBook, key
from ussd_gateway.campaigns.ledger import PREFIX, SmsLedger, sms_key
from ussd_gateway.campaigns.model import Campaign, render
from ussd_gateway.campaigns.protect import OPTOUT_KEY, QuietHours
from ussd_gateway.core.tasks import cancel_and_wait

LEASE_MS = 15_000
STOP_GRACE_S = 2.0
"""How long a stopping server lets a campaign step in flight finish."""

# KEYS: sent hash, counts, cap zset, opt-outs. ARGV: msisdn, now, window s, cap, member, too long.
_CLAIM = """
local st = redis.call('HGET', KEYS[1], ARGV[1])
if st == 'c' then return 'claimed' end
if st then return 'done' end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], 'o') redis.call('HINCRBY', KEYS[2], 'opted_out', 1) return 'optout'
end
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], 'l') redis.call('HINCRBY', KEYS[2], 'too_long', 1) return 'toolong'
end
local cap = tonumber(ARGV[4])
if cap > 0 then
  local now = tonumber(ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[3]))
  if redis.call('ZCARD', KEYS[3]) >= cap then
    redis.call('HSET', KEYS[1], ARGV[1], 'x') redis.call('HINCRBY', KEYS[2], 'capped', 1) return 'capped'
  end
  redis.call('ZADD', KEYS[3], now, ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
redis.call('HSET', KEYS[1], ARGV[1], 'c')
return 'new'
"""


def campaign_sms_id(campaign_id: str, msisdn: str) -> str:
    return hashlib.sha256(f"{campaign_id}:{msisdn}".encode()).hexdigest()[:16]


class CampaignRunner:
    """Sends the running campaigns this process holds the lease of."""

    def __init__(self, book: CampaignBook, ledger: SmsLedger, store: SessionStore, *, clock: Callable[[], float] = time.time) -> None:
        self.book = book
        self.ledger = ledger
        self.store = store
        self.client = book.client
        self.settings = book.settings
        self.clock = clock
        s = self.settings
        self.quiet = QuietHours(s.quiet_start, s.quiet_end, s.timezone, clock)
        self.owner = os.urandom(8).hex()
        self.log = structlog.get_logger("ussd_gateway.campaigns")
        self._claim = self.client.register_script(_CLAIM)
        self._driving: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Until `stop()`: find running campaigns, drive those whose lease we take."""
        while not self._stopping.is_set():
            try:
                for campaign_id in await self.book.ids():
                    if campaign_id in self._driving:
                        continue
                    status = await self.client.hget(key(campaign_id), "status")
                    if status == b"running" and await self.client.set(key(campaign_id, "lease"), self.owner, nx=True, px=LEASE_MS):
                        task = asyncio.get_running_loop().create_task(self._drive(campaign_id), name=f"campaign-{campaign_id}")
                        self._driving[campaign_id] = task
                        task.add_done_callback(lambda _t, c=campaign_id: self._driving.pop(c, None))
            except (DependencyDown, OSError, ConnectionError, TimeoutError) as error:
                self.log.warning("campaign_poll_failed", error=str(error))
            except Exception as error:  # redis-py's own errors: keep polling
                self.log.warning("campaign_poll_failed", error=f"{type(error).__name__}: {error}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.poll_s)

    def start(self) -> None:
        """Run in the background until `stop()`."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name="campaigns")

    async def stop(self) -> None:
        """Stop driving: a step in flight finishes (its Redis writes are not cut in the
        middle; every wait between steps ends on the stop), only one that overruns
        `STOP_GRACE_S` is cancelled. The lease is let go, so another process goes on."""
        self._stopping.set()
        tasks = list(self._driving.values()) + ([self._task] if self._task is not None else [])
        if tasks:
            _done, overrunning = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
            if overrunning:
                await cancel_and_wait(overrunning)

    async def _drive(self, campaign_id: str) -> None:
        lease = key(campaign_id, "lease")
        try:
            while not self._stopping.is_set():
                if await self.client.get(lease) != self.owner.encode():
                    return  # another process took it over (we stalled past the lease)
                await self.client.pexpire(lease, LEASE_MS)
                try:
                    wait = await self.step(campaign_id)
                except Exception as error:  # Redis or the backend failed: try again shortly
                    self.log.warning("campaign_step_failed", campaign=campaign_id, error=f"{type(error).__name__}: {error}")
                    wait = 1.0
                if wait is None:
                    return
                if wait:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), wait)
        finally:
            with contextlib.suppress(Exception):
                if await self.client.get(lease) == self.owner.encode():
                    await self.client.delete(lease)

    async def step(self, campaign_id: str) -> float | None:
        """One step; returns how long to wait before the next (None: stop driving)."""
        campaign, state = await self.book.get(campaign_id)
        if state.get("status") != "running":
            return None
        now = self.clock()
        if self.quiet.quiet(now):
            resume = datetime.fromtimestamp(self.quiet.next_end(now), self.quiet.zone).strftime("%H:%M")
            await self.client.hset(key(campaign_id), "note", f"quiet hours: resumes at {resume}")
            return min(self.settings.poll_s, max(0.05, self.quiet.next_end(now) - now))
        if state.get("note"):
            await self.client.hset(key(campaign_id), "note", "")
        room = self.settings.max_outstanding - int(await self.client.llen(SMS_QUEUE_KEY))
        if room <= 0:
            return 0.02
        batch = min(room, self.settings.batch)
        if campaign.limits.max_messages:
            queued = int(await self.client.hget(key(campaign_id, "n"), "queued") or 0)
            if queued >= campaign.limits.max_messages:
                await self.client.hset(key(campaign_id), mapping={"status": "done", "note": "max_messages reached"})
                return None
            batch = min(batch, campaign.limits.max_messages - queued)
        retry = await self._retry(campaign, batch, now)
        if retry:
            return 0.0
        targets = [t async for t in self.book.targets(campaign, int(state.get("cursor") or 0), batch)]
        if not targets:
            # Done once none of its SMS waits in the queue: one that quiet hours hold
            # back comes back to the retry list and goes out in the morning.
            waiting = int(await self.client.hget(key(campaign_id, "n"), "waiting") or 0)
            if waiting > 0 or await self.client.llen(key(campaign_id, "retry")):
                return 0.1
            await self.client.hset(key(campaign_id), "status", "done")
            self.log.info("campaign_done", campaign=campaign_id)
            return None
        await self._send(campaign, targets, now)
        await self.client.hset(key(campaign_id), "cursor", targets[-1][0] + 1)
        await self.client.hincrby(key(campaign_id), "handled", len(targets))
        return 0.0

    async def _retry(self, campaign: Campaign, batch: int, now: float) -> int:
        """Queue again the subscribers whose SMS quiet hours held back (same text)."""
        pipe = self.client.pipeline(transaction=False)
        for _ in range(batch):
            pipe.lpop(key(campaign.id, "retry"))
        msisdns = [raw.decode() for raw in await pipe.execute() if raw]
        until = self.quiet.next_quiet(now)
        if msisdns:
            await load_scripts_for_pipeline(self.client, self.ledger.create_script)
        for msisdn in msisdns:
            sms_id = campaign_sms_id(campaign.id, msisdn)
            record = await self.client.hmget(sms_key(sms_id), "text", "from")
            if record[0] is None:
                continue
            sms = OutboundSms(msisdn, record[1].decode(), record[0].decode(), f"camp:{campaign.id}:{msisdn}:{int(now)}",
                              sms_id=sms_id, receipt=True, until=until)
            pipe = self.client.pipeline(transaction=False)
            await self.ledger.create(pipe, sms, campaign.id)
            await pipe.execute()
            await self.store.enqueue_sms(sms)
        return len(msisdns)

    async def _send(self, campaign: Campaign, targets: list[tuple[int, str, dict[str, Any]]], now: float) -> None:
        msisdns = [msisdn for _p, msisdn, _v in targets]
        values = [v for _p, _m, v in targets]
        if campaign.filter is None and campaign.needs_account():
            found = await asyncio.gather(*(self.book.account_variables(m) for m in msisdns))
            values = [{**account, **row} for account, row in zip(found, values)]
        langs = await self.book.languages(msisdns)
        templates = campaign.templates()
        texts = [render(campaign, templates, v, lang) for v, lang in zip(values, langs)]
        s = self.settings
        await load_scripts_for_pipeline(self.client, self._claim, self.ledger.create_script)
        pipe = self.client.pipeline(transaction=False)
        for msisdn, (_text, size) in zip(msisdns, texts):
            queue_script(
                pipe, self._claim,
                [key(campaign.id, "sent"), key(campaign.id, "n"), f"{PREFIX}:cap:{msisdn}", OPTOUT_KEY],
                [msisdn, now, s.cap_days * 86_400, s.cap_per_subscriber, f"{campaign.id}:{now}", "1" if size.parts > campaign.limits.max_parts else "0"],
            )
        verdicts = await pipe.execute()
        until = self.quiet.next_quiet(now)
        outgoing = [
            OutboundSms(msisdn, campaign.sender, text, f"camp:{campaign.id}:{msisdn}", sms_id=campaign_sms_id(campaign.id, msisdn), receipt=True, until=until)
            for msisdn, (text, _size), verdict in zip(msisdns, texts, verdicts)
            if verdict in (b"new", b"claimed")
        ]
        if not outgoing:
            return
        pipe = self.client.pipeline(transaction=False)
        for sms in outgoing:
            await self.ledger.create(pipe, sms, campaign.id)
        await pipe.execute()
        await asyncio.gather(*(self.store.enqueue_sms(sms) for sms in outgoing))
        await self.client.hset(key(campaign.id, "sent"), mapping={sms.to: "q" for sms in outgoing})
