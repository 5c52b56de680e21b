"""Optional OpenTelemetry tracing: a hop over HTTP makes a server span and Redis spans
of one trace, and its JSON log line names that trace; off, the hop path never loads
OpenTelemetry."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Phone, make_settings

from ussd_gateway.app.server import create_app
from ussd_gateway.core.logs import configure_logging

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def spans() -> Iterator[object]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ussd_gateway.app.config import TracingSettings
    from ussd_gateway.app.tracing import start_tracing, stop_tracing

    exporter = InMemorySpanExporter()
    start_tracing(TracingSettings(enabled=True), exporter=exporter)
    try:
        yield exporter
    finally:
        stop_tracing()
        configure_logging(fmt="json", stream=sys.stderr)


async def test_a_hop_is_one_trace_with_redis_spans_and_its_log_line_names_it(redis_url: str, spans, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    from opentelemetry.trace import SpanKind

    log = io.StringIO()
    configure_logging(fmt="json", stream=log)
    import structlog

    from ussd_gateway.app.tracing import add_trace_id

    structlog.get_config()["processors"].insert(-1, add_trace_id)  # configure_logging made a new list
    app = create_app(make_settings(redis_url, tracing={"enabled": True}))
    # The test's own HTTP client stays untraced, as a gateway is: an instrumented one
    # would send a `traceparent` of its own (unsampled: only requests start traces).
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    from ussd_gateway.app import tracing

    AioHttpClientInstrumentor().uninstrument()
    try:
        client = await aiohttp_client(app)
    finally:
        AioHttpClientInstrumentor().instrument(tracer_provider=tracing._active.provider)  # type: ignore[union-attr]
    phone = Phone(client, "json", msisdn="84903330001")
    assert "MobiFone" in (await phone.dial()).text

    finished = spans.get_finished_spans()
    server = [s for s in finished if s.kind is SpanKind.SERVER and s.attributes.get("http.route", s.name).endswith("/ussd")]
    assert len(server) == 1, [s.name for s in finished]
    trace_id = server[0].context.trace_id
    redis_spans = [s for s in finished if s.attributes.get("db.system") == "redis" or s.attributes.get("db.system.name") == "redis"]
    # Every Redis span is a hop's (background loops start no trace): BEGIN and COMMIT.
    assert len(redis_spans) >= 2 and all(s.context.trace_id == trace_id for s in redis_spans)
    assert all(s.parent is not None for s in redis_spans)
    statements = " ".join(str(s.attributes.get("db.statement", s.attributes.get("db.query.text", ""))) for s in redis_spans)
    assert "EVALSHA" in statements and "84903330001" not in statements  # sanitized: no number in a span

    hop_lines = [json.loads(line) for line in log.getvalue().splitlines() if '"event":"hop"' in line]
    assert len(hop_lines) == 1 and hop_lines[0]["trace_id"] == format(trace_id, "032x")


def test_tracing_off_never_imports_opentelemetry(redis_url: str) -> None:
    # redis-py imports OpenTelemetry by itself when it is installed (its own optional
    # metrics), so "never loaded" is proven by making it unimportable: the hop path
    # must work without it, and the tracing module must stay unloaded.
    script = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # any import of it now raises ImportError
sys.path.insert(0, "tests")
from aiohttp.test_utils import TestClient, TestServer
from helpers import Phone, make_settings
from ussd_gateway.app.server import create_app

async def main():
    async with TestClient(TestServer(create_app(make_settings(sys.argv[1])))) as client:
        phone = Phone(client, "json")
        assert "MobiFone" in (await phone.dial()).text
        assert "Mua goi cuoc" in (await phone.send("2")).text
    print("TRACING LOADED", "ussd_gateway.app.tracing" in sys.modules)

asyncio.run(main())
"""
    result = subprocess.run([sys.executable, "-c", script, redis_url], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TRACING LOADED False" in result.stdout, result.stdout


async def test_a_backend_call_is_a_span_of_the_hop_and_the_billing_side_continues_the_trace(  # type: ignore[no-untyped-def]
    redis_url: str, spans, aiohttp_client, aiohttp_server
) -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.trace import SpanKind

    from ussd_gateway.app import tracing
    from ussd_gateway.backend import DemoBackend
    from ussd_gateway.testkit.billing_server import create_billing_app

    demo = DemoBackend.in_memory()
    billing = await aiohttp_server(create_billing_app(demo))  # made after tracing started: traced too
    settings = make_settings(redis_url, tracing={"enabled": True}, backend={"kind": "http", "http_url": str(billing.make_url(""))})
    app = create_app(settings)
    AioHttpClientInstrumentor().uninstrument()  # the test's client stays untraced, as a gateway is
    try:
        client = await aiohttp_client(app)
    finally:
        AioHttpClientInstrumentor().instrument(tracer_provider=tracing._active.provider)  # type: ignore[union-attr]
    assert "TKC" in (await Phone(client, "json", msisdn="84901234567").dial("*101#")).text
    await demo.close()

    finished = spans.get_finished_spans()
    ours = [s for s in finished if s.kind is SpanKind.SERVER and s.name.endswith("/ussd")]
    assert len(ours) == 1, [(s.name, s.kind) for s in finished]
    in_trace = [s for s in finished if s.context.trace_id == ours[0].context.trace_id]
    calls = [s for s in in_trace if s.kind is SpanKind.CLIENT and ("http.method" in s.attributes or "http.request.method" in s.attributes)]
    billing_side = [s for s in in_trace if s.kind is SpanKind.SERVER and s is not ours[0]]
    assert calls and billing_side, [(s.name, s.kind) for s in in_trace]
    urls = [str(s.attributes.get(key)) for s in calls for key in ("http.url", "url.full") if s.attributes.get(key)]
    assert urls and any("/v1/subscribers/" in url for url in urls)
    assert not any("84901234567" in url for url in urls), urls  # masked, as in the logs
