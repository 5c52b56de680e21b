"""The dispatcher: one hop in, one reply out, exactly once, within the deadline.

Per hop: one store round trip to check for a replay, take the subscriber's lock and
load the dialogue; one engine step (which may call the backend); one round trip to
save the dialogue and its reply and release the lock. A repeated hop is answered from
the saved reply and changes nothing. When the store or the backend cannot answer, the
subscriber gets the polite "busy" END before the gateway's deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from ussd_gateway.dispatch.deadline import Deadlines
from ussd_gateway.menus.engine import Engine
from ussd_gateway.menus.secret import MASKED_PIN, masked_inputs, secret_codes, secret_screens
from ussd_gateway.sessions.record import SessionRecord
from ussd_gateway.sessions.store import LoadStatus, SessionStore

from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.core.fence import HOP_LOCK, HopLock
from ussd_gateway.core.hop import Hop, HopKind, Reply
from ussd_gateway.core.metrics import Metrics
from ussd_gateway.core.msisdn import mask_msisdn


REPLACED_KEPT = 3
"""How many replaced dialogues a record remembers (a subscriber dials again seldom
more than once or twice while a gateway still holds the older sessions)."""


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    hop_deadline_s: float = 0.8
    """Answer within this, busy END included (gateways give about 1 s)."""
    session_ttl_s: int = 300
    """How long a dialogue is kept after its last hop (at least the resume window)."""
    lock_retry_s: float = 0.005
    """First pause when another hop of the same subscriber holds the lock."""
    begin_retry_ms: int = 5000
    """A begin is answered from the saved reply only within this of that reply: a
    gateway retries a begin while waiting for its answer (within its own timeout), but
    a begin under the same session id after that is a new dialogue under a recycled id
    (SMPP session numbers wrap, some gateways name dialogues by subscriber). Continues
    need no window: once a dialogue begins, the saved hop key is its own."""
    default_lang: str = "vi"


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is slower, once a hop
class HopResult:
    reply: Reply
    outcome: str
    """begin, continue, replay, busy, error, unknown_service, expired, abort, ended, limited"""
    screen: str



def new_inputs(history: str, seen: str) -> tuple[str, ...] | None:
    """What a cumulative `*`-joined history adds to the part already seen; None when
    the history does not extend it (the gateway lost track, or retried an old hop).
    A masked part of `seen` (a PIN, `menus.secret`) matches whatever stands there."""
    if history == seen:
        return ()
    if seen == "":
        return tuple(history.split("*"))
    parts, known = history.split("*"), seen.split("*")
    if len(parts) < len(known) or any(k != p and k != MASKED_PIN for k, p in zip(known, parts)):
        return None
    return tuple(parts[len(known) :])


def hop_digest(hop_key: str) -> str:
    """What the store keeps of a hop key: a digest, never the key. Only equality
    matters (is this hop the last one saved, resent?), and a key may hold what the
    subscriber typed: an Africa's Talking key is the cumulative `text`, an SMPP one
    may carry the hop's text, and either can hold a scratch-card PIN."""
    return hashlib.blake2b(hop_key.encode(), digest_size=8, person=b"ussd-hop-key").hexdigest() if hop_key else ""


class Dispatcher:
    """Turns hops into replies. Shared by every channel adapter."""

    funnel: Any = None  # optional `dispatch.funnel.Funnel`: told of saved hops and dropped dialogues

    def __init__(
        self,
        engine: Engine,
        store: SessionStore,
        *,
        settings: DispatchSettings = DispatchSettings(),
        metrics: Metrics | None = None,
        clock: Any = time.time,
        recorder: Any = None,
        limiter: Any = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.log = structlog.get_logger("ussd_gateway.hop")
        self._hop_log: Any = None
        """`log` bound once, when structlog caches loggers anyway (`serve` does): a call
        through the lazy proxy rebuilds the method each time, ~1.3 µs a hop."""
        self._tokens = itertools.count()
        self._token_prefix = f"{os.getpid()}-{os.urandom(3).hex()}-"
        self._background: set[asyncio.Task[None]] = set()
        self._deadlines = Deadlines(settings.hop_deadline_s)
        self.recorder = recorder
        """Optional: anything with `observe(hop, reply, outcome)` (ussd_gateway.app.recording.
        LiveRecorder), told of every answered hop; its failures never reach the hop."""
        self._secret_screens = secret_screens(engine.menus)
        self._secret_codes = secret_codes(engine.menus)
        self.limiter = limiter
        self._hydrate = getattr(engine.run_action, "hydrate", None)
        """Optional `sessions.ratelimit.SubscriberLimiter`: over a subscriber's rate, a
        hop gets the polite `limited` END (its counter shares the BEGIN round trip)."""

    def busy_reply(self, lang: str | None = None) -> Reply:
        return Reply(self.engine.system_text("busy", lang or self.settings.default_lang), end=True)

    async def handle(self, hop: Hop) -> Reply:
        """Answer one hop; never raises (a failure is a busy END, logged)."""
        return (await self.answer(hop)).reply

    async def answer(self, hop: Hop) -> HopResult:
        """Like `handle`, with the outcome too: the SMPP channel must not send a screen
        again for a hop answered from the saved reply (a resent deliver_sm)."""
        started = time.perf_counter()
        expiry = self._deadlines.enter()
        try:
            answer = await self._handle(hop)
        except asyncio.CancelledError:
            if not Deadlines.leave(expiry) or expiry.task.cancelling():
                raise  # not the hop's deadline: the server is stopping
            answer = self._busy(hop, TimeoutError())
        except (DependencyDown, TimeoutError) as exc:
            answer = self._busy(hop, exc)
        except Exception:  # a bug: the subscriber still gets a polite END, we get the trace
            answer = HopResult(self.busy_reply(hop.language), "error", "")
            self.log.exception("hop_failed", session_id=hop.session_id, msisdn=mask_msisdn(hop.msisdn))
        finally:
            Deadlines.leave(expiry)
        elapsed = time.perf_counter() - started
        self.metrics.observe_hop(hop.channel, answer.outcome, elapsed, answer.screen)
        (self._hop_log or self._bind_hop_log()).info(
            "hop",
            channel=hop.channel,
            session_id=hop.session_id,
            msisdn=mask_msisdn(hop.msisdn),
            screen=answer.screen,
            outcome=answer.outcome,
            end=answer.reply.end,
            latency_ms=round(elapsed * 1000, 2),
        )
        if self.recorder is not None:
            try:
                self.recorder.observe(hop, answer.reply, answer.outcome)
            except Exception:
                self.log.exception("recorder_failed", session_id=hop.session_id)
        return answer

    def _bind_hop_log(self) -> Any:
        bound = self.log.bind()
        if structlog.get_config()["cache_logger_on_first_use"]:
            self._hop_log = bound  # what the proxy itself hands out from now on
        return bound

    def _busy(self, hop: Hop, exc: BaseException) -> HopResult:
        self.log.warning("dependency_down", error=str(exc) or exc.__class__.__name__, session_id=hop.session_id)
        return HopResult(self.busy_reply(hop.language), "busy", "")

    async def _handle(self, hop: Hop) -> HopResult:
        # A continuation may name no code (SMPP gateways rarely repeat it): the dialogue
        # keeps the one it began with, from its record.
        if (hop.service_code or hop.kind is HopKind.BEGIN) and not self.engine.serves(hop.service_code):
            text = self.engine.system_text("unknown_service", hop.language or self.settings.default_lang)
            return HopResult(Reply(text, end=True), "unknown_service", "")
        token = self._token_prefix + str(next(self._tokens))
        # Only a hop the channel can identify is replayed: a begin without a key (JSON
        # without `seq`) cannot be told from a new dialogue, so it always starts one.
        hop_key = hop_digest(hop.hop_key or "")
        window = self.settings.begin_retry_ms if hop.kind is HopKind.BEGIN else None
        limiter = self.limiter
        verdict = None
        counted: tuple[str, ...] = ()
        if limiter is not None and hop.kind is not HopKind.ABORT:
            if limiter.counted_by_store:  # counted by the BEGIN script itself
                counted = limiter.hop_names(hop.kind is HopKind.BEGIN)
            else:  # queued first, so it rides in the lock's round trip
                verdict = limiter.check_hop(hop.msisdn, hop.kind is HopKind.BEGIN)
        loaded = await self._lock(hop, hop_key, token, window, counted)
        if loaded.status is LoadStatus.REPLAY:
            text, end = orjson.loads(loaded.reply or b'["", true]')
            return HopResult(Reply(text, end), "replay", "")
        if counted and loaded.counts is not None:
            limit = limiter.judge_hop(counted, loaded.counts)  # type: ignore[union-attr]
        else:
            limit = await verdict if verdict is not None else None
        if limit is not None:
            self._release_later(hop.msisdn, token)
            self.metrics.guard.count_limited(limit)
            lang = hop.language or loaded.lang or self.settings.default_lang
            return HopResult(Reply(self.engine.system_text("limited", lang), end=True), "limited", "")
        committed = False
        fence = HOP_LOCK.set(HopLock(hop.msisdn, token))
        try:
            answer, record, lang = await self._step(hop, loaded.record, loaded.lang)
            if record is not None:
                reply_bytes = orjson.dumps([answer.reply.text, answer.reply.end])
                committed = await self.store.commit_hop(
                    hop.msisdn,
                    token,
                    session_id=hop.session_id,
                    hop_key=hop_key,
                    reply=reply_bytes,
                    record=record.to_bytes(),
                    ttl_s=self.settings.session_ttl_s,
                    lang=lang,
                )
                if not committed:
                    raise DependencyDown("the session lock expired before the hop was saved")
                if self.funnel is not None:
                    self.funnel.saved(hop.msisdn, record, answer.outcome)
            return answer
        finally:
            HOP_LOCK.reset(fence)
            if not committed:
                self._release_later(hop.msisdn, token)

    async def _lock(self, hop: Hop, hop_key: str, token: str, window_ms: int | None, counted: tuple[str, ...] = ()) -> Any:
        pause = self.settings.lock_retry_s
        extra: dict[str, Any] = {"count": counted, "new_key_ttl_s": self.settings.session_ttl_s} if counted else {}
        while True:
            loaded = await self.store.begin_hop(
                hop.msisdn, hop.session_id, hop_key, token, want_lang=True, replay_within_ms=window_ms, **extra
            )
            if loaded.status is not LoadStatus.LOCKED:
                return loaded
            # Another hop of this subscriber is running (often the same hop, retried by
            # the gateway): wait for it, then the replay check answers from its reply.
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _release_later(self, msisdn: str, token: str) -> None:
        task = asyncio.get_running_loop().create_task(self.store.release(msisdn, token))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _step(
        self, hop: Hop, raw_record: bytes | None, saved_lang: str | None
    ) -> tuple[HopResult, SessionRecord | None, str | None]:
        """Move the dialogue; returns the answer, the record to save (None: save
        nothing) and a language to remember (None: unchanged)."""
        now = self.clock()
        previous = SessionRecord.from_bytes(raw_record) if raw_record else None
        if previous is not None and previous.refs and self._hydrate is not None:
            await self._hydrate(previous)  # list items and picks saved as references
        # A begin always starts a dialogue, even under a session id seen before (gateways
        # that name dialogues by subscriber); its retry was answered above as a replay.
        same = previous is not None and previous.session_id == hop.session_id and hop.kind is not HopKind.BEGIN
        channel = hop.channel

        if hop.kind is HopKind.ABORT:
            if same and previous is not None and not previous.ended:
                # Released by the network or the subscriber: keep it resumable.
                previous.updated = now
                self.metrics.count_session(self.metrics.sessions_ended, channel, "abort")
                return HopResult(Reply("", end=True), "abort", previous.screen), previous, None
            return HopResult(Reply("", end=True), "abort", ""), None, None

        if same and previous is not None:
            record = previous
            if record.ended:
                return HopResult(self.engine.render(record), "ended", record.screen), None, None
            if hop.history is not None:
                inputs = new_inputs(hop.history, record.history)
                if inputs is None:  # the gateway's history diverged: show where we are
                    inputs = ()
                    record.history = "*".join(masked_inputs(hop.history.split("*")))
                elif inputs:
                    # Kept with PINs masked: the first input answers the screen shown.
                    answers_secret = f"{record.menu}:{record.screen}" in self._secret_screens
                    kept = masked_inputs(inputs, first_secret=answers_secret)
                    record.history = "*".join((record.history, *kept) if record.history else kept)
            else:
                inputs = hop.inputs
            record.seq += 1
            step = await self.engine.advance(record, inputs)
            outcome = "continue"
        else:
            if hop.kind is HopKind.CONTINUE and previous is not None and hop.session_id in previous.replaced:
                # A late answer in a dialogue a newer dial replaced (say to its resume
                # offer): it ends there, and the newer dialogue is left as it is.
                lang = hop.language or saved_lang or self.settings.default_lang
                return HopResult(Reply(self.engine.system_text("expired", lang), end=True), "expired", ""), None, None
            if hop.kind is HopKind.CONTINUE and hop.history is None:
                self.metrics.count_session(self.metrics.sessions_timed_out, channel)
                lang = hop.language or saved_lang or self.settings.default_lang
                return HopResult(Reply(self.engine.system_text("expired", lang), end=True), "expired", ""), None, None
            if previous is not None and not previous.ended:
                self.metrics.count_session(self.metrics.sessions_timed_out, channel)
                if self.funnel is not None:
                    self.funnel.replaced(previous, now)
            inputs = tuple(hop.history.split("*")) if hop.history else hop.inputs
            lang = hop.language or saved_lang or self.settings.default_lang
            record, step = await self.engine.start(
                session_id=hop.session_id,
                msisdn=hop.msisdn,
                service_code=hop.service_code,
                lang=lang,
                inputs=inputs,
                previous=previous,
                now=now,
                nonce=os.urandom(6).hex(),  # 48 bits: unique among one subscriber's dialogues
            )
            # Kept with PINs masked (`*100*PIN#` over Africa's Talking: `text` is the PIN).
            first_secret = hop.service_code in self._secret_codes
            record.history = "*".join(masked_inputs(hop.history.split("*"), first_secret)) if hop.history else ""
            if previous is not None and previous.session_id != hop.session_id:
                record.replaced = [previous.session_id, *previous.replaced][:REPLACED_KEPT]
            self.metrics.count_session(self.metrics.sessions_started, channel)
            outcome = "begin"
        record.updated = now
        if step.reply.end:
            record.ended = True
            self.metrics.count_session(self.metrics.sessions_ended, channel, "end")
        remember = step.lang_changed or (hop.language if hop.language and hop.language != saved_lang else None)
        return HopResult(step.reply, outcome, f"{record.menu}:{record.screen}"), record, remember
