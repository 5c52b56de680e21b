"""Configuration: embedded defaults, then `config.toml`, then environment variables
(`USSD_<SECTION>_<KEY>`, e.g. `USSD_SESSIONS_REDIS_URL`), then command-line flags.

The defaults run the whole product on one machine with nothing else installed:
in-memory sessions, the demo subscriber backend, HTTP on 127.0.0.1:8080.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ussd_gateway.campaigns.settings import CampaignSettings
from ussd_gateway.services.settings import ServiceSettings
from ussd_gateway.sessions.redis_clients import parse_redis_url


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8192
    """Gateways send a few hundred bytes; anything bigger is refused with 413."""
    tokens: tuple[str, ...] = ()
    """Non-empty: the gateway routes want `Authorization: Bearer <one of them>` (401 otherwise)."""
    allow_from: tuple[str, ...] = ()
    """Non-empty: only these addresses or networks (CIDR) reach the gateway routes (403)."""
    trusted_proxies: tuple[str, ...] = ()
    """Peers (addresses or CIDR) whose `X-Forwarded-For` names the real caller."""
    signing_secrets: tuple[str, ...] = ()
    """Non-empty: gateway requests carry an HMAC-SHA256 signature by one of these."""
    signature_max_age_s: int = 300
    """A signature older (or further in the future) than this is refused; each is used once."""
    allow_unauthenticated: bool = False
    """Serve the gateway routes beyond loopback without tokens, allow-list or signatures."""
    header_timeout_s: float = 10.0
    """A request's head must arrive within this (and an idle connection closes after it)."""
    body_timeout_s: float = 10.0
    """A request's body must arrive within this (408 otherwise)."""
    max_connections_per_peer: int = 256
    """Open connections from one address, at most; more are closed at once."""


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The testers' and operators' routes: /sim, /sms/outbound, /menus/graph, /metrics."""

    host: str = "127.0.0.1"
    port: int = 0
    """0: no admin listener (the admin routes are on the main one, loopback binds only)."""
    token: str = ""
    """Non-empty: the admin routes want it (`Authorization: Bearer`, or Basic's password)."""
    expose_on_main: bool = False
    """Serve the admin routes on a non-loopback main listener too (needs `token`)."""


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Rates per subscriber and per caller; 0 turns one off. See docs/operations.md."""

    msisdn_hops_per_minute: int = 300
    msisdn_sessions_per_minute: int = 60
    msisdn_sms_per_minute: int = 30
    peer_requests_per_second: int = 20000


@dataclass(frozen=True, slots=True)
class SessionSettings:
    redis_url: str = ""
    """Empty: sessions in memory (one process). `redis://`, `rediss://`, `unix://`,
    `redis+sentinel://[:pw@]host:port,host:port/master`, `redis+cluster://host:port,…`
    (`sessions/redis_clients.py`, docs/redis-ha.md)."""
    cluster: bool = False
    """A `redis://host:port` URL names a node of a Redis Cluster (as `redis+cluster://`)."""
    ttl_s: int = 300
    """A dialogue is kept this long after its last hop (at least `resume_window_s`)."""
    resume_window_s: int = 120
    """A dialogue dropped without an END and redialled within this is offered back."""
    hop_deadline_ms: int = 800
    """Every hop is answered within this, the busy END included."""
    lock_ttl_ms: int = 1000
    """A dead or cancelled hop's per-subscriber lock frees itself after this: about one
    hop deadline, so the gateway's retry is served rather than answered busy. A hop
    never outlives its lock (the deadline is shorter), and a money write that reaches
    Redis after the lock expired changes nothing (it checks the lock)."""
    begin_retry_ms: int = 5000
    """A begin is answered from the saved reply only this soon after it (a gateway's
    retry); later, the same session id begins a new dialogue (ids are recycled)."""
    redis_timeout_ms: int = 300
    money_wait_replicas: int = 0
    """After each money write of the demo backend, `WAIT` for this many replicas to hold
    it before the success screen (0: off). Fewer in time: the screen still says success
    (the debit is on the master) and `money_write_unreplicated` is logged."""
    money_wait_timeout_ms: int = 200
    """How long that `WAIT` may take (it counts against the hop's deadline)."""
    outbox_sweep_s: float = 30.0
    """How often a worker moves SMS outboxes left behind by a process that died between
    a debit and queueing its SMS (Redis only; 0: never). The SMS then leaves at most this
    late; the debit's own hop moves its SMS at once."""


@dataclass(frozen=True, slots=True)
class ScreenSettings:
    gsm7_limit: int = 182
    ucs2_limit: int = 80
    default_language: str = "vi"


@dataclass(frozen=True, slots=True)
class MenuSettings:
    directory: str = ""
    """Empty: the definitions shipped in `menus/definitions`."""


@dataclass(frozen=True, slots=True)
class BackendSettings:
    kind: str = "demo"
    """`demo` (seeded from `demo_data`, kept in Redis when sessions are) or `http`."""
    demo_data: str = ""
    """Empty: the packaged `ussd_gateway/backend/demo_data.toml`."""
    http_url: str = ""
    http_timeout_ms: int = 600
    http_token: str = ""


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    format: str = "auto"
    """auto (JSON unless on a terminal), json or console."""


@dataclass(frozen=True, slots=True)
class SmppSettings:
    binds: tuple[Any, ...] = ()
    """`smpp.config.BindSettings`, one per `[[smpp.binds]]`; none: SMPP off."""
    readiness: str = "degraded"
    """What a configured bind that is down does to /readyz: "degraded" (200, the binds'
    state in the body) or "required" (503: take the instance out of rotation)."""


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    """Live recording of dialogues as replayable transcripts (docs/transcripts.md)."""

    enabled: bool = False
    sample_rate: float = 0.01
    """Share of dialogues recorded, chosen by session id (all hops of one or none)."""
    directory: str = "recordings"
    max_open: int = 1000
    """Dialogues buffered at once, at most; more are not recorded (memory stays bounded)."""
    idle_s: float = 300.0
    """A dialogue with no hop for this long is written as abandoned."""


@dataclass(frozen=True, slots=True)
class FunnelSettings:
    """The menus' funnels (`dispatch.funnel`, docs/funnels.md); with Redis sessions only."""

    enabled: bool = True
    timeout_s: float = 180.0
    """A dialogue with no hop for this long has timed out where it stands (counted
    then). Keep it at or above the gateways' own dialogue timer, below [sessions] ttl_s."""
    flush_s: float = 5.0
    """How often each process adds its counts to Redis (what a killed process loses)."""
    keep_days: int = 8
    """How long the per-minute counts stay in Redis (the longest report window)."""


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """OpenTelemetry traces (`pip install 'ussd-gateway[otel]'`); off: nothing is imported."""

    enabled: bool = False
    exporter: str = "otlp"
    """otlp (OTLP over HTTP to `endpoint`) or console (spans printed to stdout)."""
    endpoint: str = ""
    """The OTLP/HTTP traces URL; "" = the exporter's default or OTEL_EXPORTER_OTLP_* variables."""
    service_name: str = "ussd-gateway"
    sample_ratio: float = 1.0
    """Share of hops traced (parent-based: a traced caller's choice is kept)."""


@dataclass(frozen=True, slots=True)
class MsisdnSettings:
    """Subscriber number rules (`core.msisdn`): the defaults are Vietnam's."""

    country_code: str = "84"
    national_prefix: str = "0"
    """A number starting with it is national: it is replaced by the country code."""
    min_length: int = 9
    max_length: int = 15
    """Digits of the canonical form, country code included."""


@dataclass(frozen=True, slots=True)
class Settings:
    http: HttpSettings = field(default_factory=HttpSettings)
    sessions: SessionSettings = field(default_factory=SessionSettings)
    screen: ScreenSettings = field(default_factory=ScreenSettings)
    menus: MenuSettings = field(default_factory=MenuSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)
    services: ServiceSettings = field(default_factory=ServiceSettings)
    log: LogSettings = field(default_factory=LogSettings)
    smpp: SmppSettings = field(default_factory=SmppSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    msisdn: MsisdnSettings = field(default_factory=MsisdnSettings)
    campaigns: CampaignSettings = field(default_factory=CampaignSettings)
    funnels: FunnelSettings = field(default_factory=FunnelSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)

    def replace(self, section: str, **changes: Any) -> "Settings":
        """A copy with some keys of one section changed."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **changes)})


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is expected."""


SECRET_KEYS = frozenset({"tokens", "signing_secrets", "token", "http_token", "password", "redis_url"})
"""Keys whose values are never repeated in an error message."""


def _coerce(section: str, key: str, value: Any, expected: Any) -> Any:
    where = f"[{section}] {key}"
    if key in SECRET_KEYS and not isinstance(value, (str, list, tuple)):
        raise ConfigError(f"{where} must be {'a list of strings' if isinstance(expected, tuple) else 'a string'} (value not shown)")
    if isinstance(expected, tuple):
        if isinstance(value, str):  # from the environment: comma-separated
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            shown = "(value not shown)" if key in SECRET_KEYS else f"got {value!r}"
            raise ConfigError(f"{where} must be a list of strings, {shown}")
        return tuple(value)
    if isinstance(expected, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if isinstance(expected, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if isinstance(expected, int):
        try:
            if isinstance(value, bool) or (isinstance(value, float)):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a whole number, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def parse_binds(raw: Any, origin: str) -> tuple[Any, ...]:
    """`[[smpp.binds]]` tables into BindSettings (`channels.smpp.presets.bind_settings`:
    presets, the operator's USSD dialect, required password). Mistakes are refused by name."""
    from ussd_gateway.channels.smpp.presets import BindConfigError, bind_settings

    if not isinstance(raw, list):
        raise ConfigError(f"{origin}: [smpp] binds must be an array of tables ([[smpp.binds]])")
    binds = []
    names: set[str] = set()
    for index, table in enumerate(raw):
        where = f"{origin}: [[smpp.binds]] #{index + 1}"
        try:
            bind = bind_settings(table, where)
        except BindConfigError as exc:
            raise ConfigError(str(exc)) from None
        if bind.name in names:
            raise ConfigError(f"{where}: bind name {bind.name!r} is used twice")
        names.add(bind.name)
        binds.append(bind)
    return tuple(binds)


def _apply(settings: Settings, data: Mapping[str, Any], origin: str) -> Settings:
    data = dict(data)
    if "smpp" in data:
        smpp = data.pop("smpp")
        binds = parse_binds(smpp.get("binds", []) if isinstance(smpp, Mapping) else smpp, origin)
        readiness = smpp.get("readiness", settings.smpp.readiness) if isinstance(smpp, Mapping) else settings.smpp.readiness
        unknown = set(smpp) - {"binds", "readiness"} if isinstance(smpp, Mapping) else set()
        if unknown:
            raise ConfigError(f"{origin}: unknown key {sorted(unknown)[0]!r} in [smpp] (known: binds, readiness)")
        settings = dataclasses.replace(settings, smpp=SmppSettings(binds=binds, readiness=readiness))
    for section, values in data.items():
        if not hasattr(settings, section) or not isinstance(values, Mapping):
            known = ", ".join(f.name for f in dataclasses.fields(Settings))
            raise ConfigError(f"{origin}: unknown section [{section}] (known: {known})")
        current = getattr(settings, section)
        changes = {}
        for key, value in values.items():
            if not hasattr(current, key):
                known = ", ".join(f.name for f in dataclasses.fields(current))
                raise ConfigError(f"{origin}: unknown key {key!r} in [{section}] (known: {known})")
            changes[key] = _coerce(section, key, value, getattr(current, key))
        settings = settings.replace(section, **changes)
    return settings


def _from_environment(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for section in dataclasses.fields(Settings):
        if section.name == "smpp":
            continue  # binds are tables: config.toml only
        for key in dataclasses.fields(section.default_factory()):  # type: ignore[misc]
            name = f"USSD_{section.name}_{key.name}".upper()
            if name in environ:
                found.setdefault(section.name, {})[key.name] = environ[name]
    return found


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the file (if given, or `./config.toml` if present), then the
    environment. Raises ConfigError on unknown keys or wrong types."""
    settings = Settings()
    if path is None and Path("config.toml").exists():
        path = Path("config.toml")
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        settings = _apply(settings, data, str(path))
    settings = _apply(settings, _from_environment(os.environ if environ is None else environ), "environment")
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    s = settings.sessions
    if s.ttl_s < s.resume_window_s:
        raise ConfigError(f"[sessions] ttl_s ({s.ttl_s}) must be at least resume_window_s ({s.resume_window_s})")
    if s.redis_url:
        try:
            parse_redis_url(s.redis_url, cluster=s.cluster)
        except ValueError as exc:
            raise ConfigError(f"[sessions] {exc}") from None
    if s.money_wait_replicas < 0 or s.money_wait_timeout_ms <= 0:
        raise ConfigError("[sessions] money_wait_replicas must be 0 or more and money_wait_timeout_ms positive")
    if settings.backend.kind not in ("demo", "http"):
        raise ConfigError(f"[backend] kind must be 'demo' or 'http', got {settings.backend.kind!r}")
    if settings.backend.kind == "http" and not settings.backend.http_url:
        raise ConfigError("[backend] kind = 'http' needs http_url (the billing API's base URL)")
    f = settings.funnels
    if f.enabled and not (0 < f.timeout_s < s.ttl_s and f.flush_s > 0 and f.keep_days > 0):
        raise ConfigError(
            f"[funnels] timeout_s ({f.timeout_s}) must be positive and below [sessions] ttl_s ({s.ttl_s}); flush_s and keep_days positive"
        )
    t = settings.tracing
    if t.exporter not in ("otlp", "console") or not 0 <= t.sample_ratio <= 1:
        raise ConfigError(f"[tracing] exporter must be 'otlp' or 'console' and sample_ratio within 0..1, got {t.exporter!r}, {t.sample_ratio}")
    r = settings.recording
    if not 0 <= r.sample_rate <= 1:
        raise ConfigError(f"[recording] sample_rate must be between 0 and 1, got {r.sample_rate}")
    if r.max_open < 1 or r.idle_s <= 0:
        raise ConfigError("[recording] max_open must be at least 1 and idle_s positive")
    m = settings.msisdn
    if not (m.country_code.isascii() and m.country_code.isdigit() and 1 <= len(m.country_code) <= 3 and m.country_code[0] != "0"):
        raise ConfigError(f"[msisdn] country_code must be 1 to 3 digits not starting with 0 (e.g. \"84\"), got {m.country_code!r}")
    if m.national_prefix and not (m.national_prefix.isascii() and m.national_prefix.isdigit() and len(m.national_prefix) <= 2):
        raise ConfigError(f"[msisdn] national_prefix must be up to 2 digits (e.g. \"0\") or empty, got {m.national_prefix!r}")
    if m.national_prefix == "00":
        raise ConfigError("[msisdn] national_prefix cannot be \"00\" (that is the international prefix)")
    if not len(m.country_code) < m.min_length <= m.max_length <= 15:
        raise ConfigError(
            f"[msisdn] lengths must satisfy len(country_code) < min_length <= max_length <= 15, got {m.min_length}..{m.max_length}"
        )
    if settings.smpp.readiness not in ("degraded", "required"):
        raise ConfigError(f"[smpp] readiness must be 'degraded' or 'required', got {settings.smpp.readiness!r}")
    if settings.screen.default_language not in ("vi", "vi_dau", "en"):
        raise ConfigError(f"[screen] default_language must be vi, vi_dau or en, got {settings.screen.default_language!r}")
