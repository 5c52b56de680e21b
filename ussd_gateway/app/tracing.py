"""OpenTelemetry traces, when `[tracing] enabled = true` (`pip install 'ussd-gateway[otel]'`).

A traced hop is one SERVER span for its HTTP request (aiohttp), with a CLIENT span per
Redis command (EVALSHA of the hop scripts; statements sanitized to `EVALSHA ? ? …`, so
no phone number or record leaves in a span) and per backend HTTP call; the hop's JSON
log line carries the span's `trace_id` and `span_id`. Off (the default) this module is
never imported: the server neither loads OpenTelemetry nor pays for it.

Redis commands of hops answered in the same event-loop turn are sent as one batch
(`sessions.redis_store`); their spans all sit under the first of those hops' traces.
SMPP hops have no HTTP request and are not traced.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased

from ussd_gateway.app.config import TracingSettings
from ussd_gateway.core.msisdn import mask_msisdn

_NUMBER = re.compile(r"\d{7,}")
URL_ATTRIBUTES = ("http.url", "http.target", "url.full", "url.path", "url.query")


class MaskNumbers(SpanProcessor):
    """Phone numbers in span URLs are masked as in the logs (the billing API names a
    subscriber in its paths: /v1/subscribers/84901234567): set when a span starts."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        for key in URL_ATTRIBUTES:
            value = span.attributes.get(key) if span.attributes else None
            if isinstance(value, str) and _NUMBER.search(value):
                span.set_attribute(key, _NUMBER.sub(lambda m: mask_msisdn(m.group()), value))


def add_trace_id(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current span's ids, so a log line finds its trace."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


class RequestsOnly(Sampler):
    """Starts traces at HTTP requests only (a share of them): the background loops'
    Redis commands (rate windows, campaigns, funnels, several a second) make no trace
    of their own; under a traced request everything is kept (`ParentBased`)."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None, attributes: Any = None,
                      links: Any = None, trace_state: Any = None) -> SamplingResult:
        if kind is not trace.SpanKind.SERVER:
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"RequestsOnly({self._ratio.get_description()})"


class Tracing:
    """The tracer provider and the instrumentations this process installed."""

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None = None) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(RequestsOnly(settings.sample_ratio)),
        )
        self.provider.add_span_processor(MaskNumbers())  # first: before any exporter sees the span
        if exporter is not None:  # given (tests: the SDK's in-memory exporter): spans at once
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            self.provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
        self._clients: list[Any] = []

    def install(self) -> None:
        # The server instrumentation adds its middleware to every aiohttp Application
        # made from now on, the client one to every ClientSession (the HTTP backend's).
        AioHttpServerInstrumentor().instrument(tracer_provider=self.provider)
        AioHttpClientInstrumentor().instrument(tracer_provider=self.provider)
        processors = structlog.get_config()["processors"]
        if add_trace_id not in processors:
            processors.insert(max(len(processors) - 1, 0), add_trace_id)  # before the renderer

    def instrument_redis(self, client: Any) -> None:
        """Spans for this client's commands (only ours: no global patching of redis-py)."""
        if client is not None and client not in self._clients:
            RedisInstrumentor.instrument_client(client, tracer_provider=self.provider)
            self._clients.append(client)

    def uninstall(self) -> None:
        AioHttpServerInstrumentor().uninstrument()
        AioHttpClientInstrumentor().uninstrument()
        for client in self._clients:
            RedisInstrumentor.uninstrument_client(client)
        self._clients.clear()
        processors = structlog.get_config()["processors"]
        if add_trace_id in processors:
            processors.remove(add_trace_id)
        self.provider.shutdown()  # sends what the batch still holds


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(service_name=settings.service_name)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.endpoint or None)


_active: Tracing | None = None


def start_tracing(settings: TracingSettings, *, exporter: SpanExporter | None = None) -> Tracing:
    """Install tracing once per process (a second call returns the first's)."""
    global _active
    if _active is None:
        _active = Tracing(settings, exporter)
        _active.install()
        if exporter is None:
            trace.set_tracer_provider(_active.provider)  # for any other instrumented library
    return _active


def stop_tracing() -> None:
    global _active
    if _active is not None:
        _active.uninstall()
        _active = None
