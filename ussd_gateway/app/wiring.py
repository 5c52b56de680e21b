"""Builds the parts of a running gateway from its settings: store, backend, menus,
engine, dispatcher, keyword router. Shared by the HTTP app and the SMPP channel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from ussd_gateway.sessions.memory import MemoryStore
from ussd_gateway.sessions.ratelimit import Limits, SubscriberLimiter
from ussd_gateway.sessions.record import SessionRecord
from ussd_gateway.sessions.redis_store import RedisStore
from ussd_gateway.sessions.store import SessionStore

from ussd_gateway.menus.compiler import DEFINITIONS_DIR, load_menus
from ussd_gateway.menus.engine import Engine
from ussd_gateway.menus.versions import EngineFactory, VersionedEngine, definitions_version
from ussd_gateway.menus.model import MenuSet, Screen
from ussd_gateway.menus.text import ScreenBudget

from ussd_gateway.menus.template import resolve_args
from ussd_gateway.services.actions import ActionContext
from ussd_gateway.services.derived import hydrate as hydrate_record
from ussd_gateway.backend import SubscriberBackend, build_backend
from ussd_gateway.backend.tap import PurchaseTap
from ussd_gateway.app.config import Settings
from ussd_gateway.services.settings import ServiceSettings
from ussd_gateway.dispatch.dispatcher import DispatchSettings, Dispatcher
from ussd_gateway.services.keywords import KeywordRouter
from ussd_gateway.core.metrics import Metrics
from ussd_gateway.core.msisdn import MsisdnRules, configure_msisdn
from ussd_gateway.app.recording import build_recorder
from ussd_gateway.menus.secret import secret_parts


class ActionRunner:
    """Calls a screen's action with what it needs; the engine stays free of backends."""

    def __init__(self, menus: MenuSet, backend: SubscriberBackend, store: SessionStore, settings: ServiceSettings) -> None:
        self.menus = menus
        self.backend = backend
        self.store = store
        self.settings = settings

    async def __call__(self, screen: Screen, record: SessionRecord, number: int) -> str:
        assert screen.action is not None
        texts = self.menus.texts

        def word(key: str, variables: dict[str, Any] | None = None) -> str:
            return texts[key].render(variables or {}, record.lang)

        context = ActionContext(
            msisdn=record.msisdn,
            session_id=record.session_id,
            # Per dialogue (its nonce), per hop, per action within the hop. A retried hop
            # re-runs its step from the same saved record, so it carries the same key
            # and the backend answers with the first attempt's result.
            idempotency_key=f"{record.nonce or record.session_id}:{record.seq}:{number}",
            record=record,
            args=resolve_args(screen.args, record.vars),
            backend=self.backend,
            store=self.store,
            settings=self.settings,
            word=word,
        )
        return await screen.action(context)

    async def hydrate(self, record: SessionRecord) -> None:
        """Turn a loaded record's references (catalogue views) back into values."""
        texts = self.menus.texts
        await hydrate_record(record, self.backend, lambda key, lang, variables=None: texts[key].render(variables or {}, lang))


@dataclass(slots=True)
class Gateway:
    """Everything a channel needs to answer hops."""

    settings: Settings
    menus: MenuSet
    store: SessionStore
    backend: SubscriberBackend
    engine: VersionedEngine
    dispatcher: Dispatcher
    metrics: Metrics
    keywords: KeywordRouter
    redis: aioredis.Redis | None = None
    make_engine: EngineFactory | None = None
    """Builds an engine for other compiled menus (a reload: `app.menu_reload`)."""
    ledger: Any = None
    """`campaigns.ledger.SmsLedger` (tracked SMS and their receipts); Redis only."""
    campaigns: Any = None
    """`campaigns.book.CampaignBook`; Redis only."""

    async def close(self) -> None:
        flush = getattr(self.dispatcher.recorder, "flush", None)
        if flush is not None:
            await flush()  # write the dialogues still open (LiveRecorder logs its own errors)
        await self.backend.close()
        await self.store.close()  # a Redis store closes its hop-script connection and `self.redis`


def build_gateway(settings: Settings, *, metrics: Metrics | None = None) -> Gateway:
    """Compile the menus (raising MenuError on a bad definition) and connect the parts.
    Connections are opened lazily, on the first hop."""
    m = settings.msisdn
    configure_msisdn(MsisdnRules(m.country_code, m.national_prefix, m.min_length, m.max_length))
    directory = menus_directory(settings)
    menus = load_menus(directory)
    redis_client: aioredis.Redis | None = None
    store: SessionStore
    s = settings.sessions
    metrics = metrics or Metrics()
    dropped = metrics.sms_dropped.inc
    if s.redis_url:
        store = RedisStore.from_url(
            s.redis_url, socket_timeout_s=s.redis_timeout_ms / 1000, cluster=s.cluster, lock_ttl_ms=s.lock_ttl_ms,
            on_sms_dropped=dropped,
        )
        redis_client = store.client
    else:
        store = MemoryStore(lock_ttl_s=s.lock_ttl_ms / 1000, on_sms_dropped=dropped)
    b = settings.backend
    backend = build_backend(
        b.kind,
        redis_client=redis_client,
        demo_data_path=b.demo_data or None,
        http_url=b.http_url or None,
        http_timeout_s=b.http_timeout_ms / 1000,
        http_token=b.http_token or None,
        outbox=store if isinstance(store, RedisStore) else None,
        redis_timeout_s=s.redis_timeout_ms / 1000,
        money_wait=(s.money_wait_replicas, s.money_wait_timeout_ms),
    )
    if redis_client is not None:  # campaigns count the purchases that follow their SMS
        backend = PurchaseTap(backend)  # type: ignore[assignment]
    service_settings = settings.services
    budget = ScreenBudget(gsm7=settings.screen.gsm7_limit, ucs2=settings.screen.ucs2_limit)

    def make_engine(compiled: MenuSet) -> Engine:
        # One engine per menu version, each with the actions' view of its own texts.
        return Engine(
            compiled,
            ActionRunner(compiled, backend, store, service_settings),
            budget=budget,
            default_lang=settings.screen.default_language,
            resume_window_s=s.resume_window_s,
        )

    engine = VersionedEngine(definitions_version(directory), make_engine(menus))
    metrics = metrics or Metrics()
    recorder = build_recorder(settings.recording)
    if recorder is not None:  # scratch-card PINs are masked in recordings
        recorder.secret_codes, recorder.secret_prompts = secret_parts(menus)
    lim = settings.limits
    limits = Limits(lim.msisdn_hops_per_minute, lim.msisdn_sessions_per_minute, lim.msisdn_sms_per_minute)
    limiter = SubscriberLimiter(limits, store if isinstance(store, RedisStore) else None) if limits.active else None
    dispatcher = Dispatcher(
        engine,
        store,
        settings=DispatchSettings(
            hop_deadline_s=s.hop_deadline_ms / 1000,
            session_ttl_s=s.ttl_s,
            begin_retry_ms=s.begin_retry_ms,
            default_lang=settings.screen.default_language,
        ),
        metrics=metrics,
        recorder=recorder,
        limiter=limiter,
    )
    keywords = KeywordRouter(menus, backend, store, service_settings, default_lang=settings.screen.default_language)
    gateway = Gateway(settings, menus, store, backend, engine, dispatcher, metrics, keywords, redis_client, make_engine)
    if redis_client is not None:
        add_campaigns(gateway)
        if settings.funnels.enabled:
            dispatcher.funnel = build_funnel(settings, engine, metrics, redis_client, getattr(store, "prefix", "ussd"))
    return gateway


def build_funnel(settings: Settings, engine: Any, metrics: Metrics, client: aioredis.Redis, prefix: str) -> Any:
    """The menus' funnel counter (`dispatch.funnel`): started and stopped with the app."""
    from ussd_gateway.dispatch.funnel import Funnel
    from ussd_gateway.sessions.funnel_store import SavedRecords

    f = settings.funnels
    return Funnel(
        engine,
        metrics,
        SavedRecords(client, prefix),
        timeout_s=f.timeout_s,
        flush_s=f.flush_s,
        keep_s=int(f.keep_days * 86_400),
        redis_timeout_s=settings.sessions.redis_timeout_ms / 1000,
    )


def menus_directory(settings: Settings) -> Path:
    """The folder the menus are loaded (and reloaded) from."""
    return Path(settings.menus.directory) if settings.menus.directory else DEFINITIONS_DIR


def add_campaigns(gateway: Gateway, *, clock: Any = None) -> None:
    """Campaigns, the SMS ledger and the care opt-out keywords (they live in Redis)."""
    import time

    from ussd_gateway.campaigns.attribution import Attribution
    from ussd_gateway.campaigns.book import CampaignBook
    from ussd_gateway.campaigns.ledger import SmsLedger
    from ussd_gateway.campaigns.protect import OptOuts

    c = gateway.settings.campaigns
    clock = clock or time.time
    prefix = getattr(gateway.store, "prefix", "ussd")
    gateway.campaigns = CampaignBook(gateway.redis, gateway.backend, c, store_prefix=prefix, clock=clock)
    attribution = Attribution(gateway.campaigns, store_prefix=prefix, clock=clock)
    gateway.ledger = SmsLedger(gateway.redis, gateway.store, default_sender=c.default_sender, clock=clock,
                               timezone=c.timezone, on_sent=attribution.touch)
    if isinstance(gateway.backend, PurchaseTap):
        gateway.backend.listener = attribution.on_purchase
    OptOuts(gateway.redis).install(gateway.keywords, c.optout_short_codes)
