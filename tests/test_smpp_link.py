"""`SmppLink` over real TCP on 127.0.0.1, against a minimal SMSC written here with
smpp.pdu (the full simulator lives in ussd_gateway/testkit/smsc/; these tests depend on neither it
nor any timing beyond small, bounded intervals)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from ussd_gateway.channels.smpp.config import BindSettings
from ussd_gateway.channels.smpp.link import LinkUnavailable, SmppLink, SubmitOutcome, SubmitUnconfirmed
from ussd_gateway.channels.smpp.metrics import SmppMetrics
from ussd_gateway.channels.smpp.pdu import (
    ESME_RBINDFAIL,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    Pdu,
    decode,
    encode,
    frame_length,
    response_name,
)

SUBMIT = {"source_addr": "9237", "destination_addr": "84901234567", "short_message": b"hi"}


@dataclass
class MiniSmsc:
    """An SMSC that binds ESMEs, answers submits as scripted, sends deliver_sm on
    request, and can drop connections or withhold responses."""

    refuse_binds: int = 0
    """Refuse this many bind attempts (ESME_RBINDFAIL) before accepting."""
    submit_statuses: deque[int] = field(default_factory=deque)
    """Status for each next submit_sm (ESME_ROK once empty)."""
    mute_binds: bool = False
    """Never answer bind requests (the TCP connection stays open)."""
    withhold: bool = False
    """Keep submit_sm unanswered in `withheld` until `release()`."""
    received: list[Pdu] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    """Commands in wire order, prefixed "<" (from the ESME) or ">" (to it)."""
    bind_times: list[float] = field(default_factory=list)
    withheld: list[tuple[asyncio.StreamWriter, Pdu]] = field(default_factory=list)
    max_withheld: int = 0
    port: int = 0
    _writers: dict[str, asyncio.StreamWriter] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _responses: dict[int, asyncio.Future[Pdu]] = field(default_factory=dict)
    _sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def commands(self, prefix: str = "<") -> list[str]:
        return [entry[1:] for entry in self.log if entry.startswith(prefix)]

    def count(self, command: str) -> int:
        return self.commands().count(command)

    def drop(self) -> None:
        """Close every ESME connection abruptly, as a crashing SMSC would."""
        for writer in list(self._writers.values()):
            writer.transport.abort()

    def release(self) -> None:
        """Stop withholding, and answer every withheld submit_sm."""
        self.withhold = False
        for writer, pdu in self.withheld:
            self._write(writer, response_name(pdu.command), sequence=pdu.sequence, message_id=self._next_id())
        self.withheld.clear()

    async def deliver(self, role: str = "transceiver", **fields: Any) -> Pdu:
        """Send a deliver_sm on the connection bound as `role`; return its response."""
        sequence = next(self._sequence)
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._responses[sequence] = future
        self._write(self._writers[role], "deliver_sm", sequence=sequence, **fields)
        return await asyncio.wait_for(future, 5)

    def _next_id(self) -> str:
        return f"m{next(self._message_ids)}"

    def _write(self, writer: asyncio.StreamWriter, command: str, *, sequence: int, status: int = 0, **fields: Any) -> None:
        self.log.append(">" + command)
        writer.write(encode(command, sequence=sequence, status=status, **fields))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                header = await reader.readexactly(4)
                pdu = decode(header + await reader.readexactly(frame_length(header) - 4))
                self.received.append(pdu)
                self.log.append("<" + pdu.command)
                self._handle(pdu, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)

    def _handle(self, pdu: Pdu, writer: asyncio.StreamWriter) -> None:
        command = pdu.command
        if command.startswith("bind_"):
            if self.mute_binds:
                return
            self.bind_times.append(time.monotonic())
            refuse = len(self.bind_times) <= self.refuse_binds
            status = ESME_RBINDFAIL if refuse else ESME_ROK
            self._write(writer, response_name(command), sequence=pdu.sequence, status=status, system_id="MINI")
            if not refuse:
                self._writers[command.removeprefix("bind_")] = writer
        elif command == "submit_sm":
            if self.withhold:
                self.withheld.append((writer, pdu))
                self.max_withheld = max(self.max_withheld, len(self.withheld))
                return
            status = self.submit_statuses.popleft() if self.submit_statuses else ESME_ROK
            message_id = self._next_id() if status == ESME_ROK else ""
            self._write(writer, "submit_sm_resp", sequence=pdu.sequence, status=status, message_id=message_id)
        elif command in ("enquire_link", "unbind"):
            self._write(writer, response_name(command), sequence=pdu.sequence)
        elif command == "deliver_sm_resp":
            future = self._responses.pop(pdu.sequence, None)
            if future is not None and not future.done():
                future.set_result(pdu)


@pytest.fixture
async def smsc() -> AsyncIterator[MiniSmsc]:
    server = MiniSmsc()
    await server.start()
    yield server
    await server.close()


def settings_for(smsc: MiniSmsc, **overrides: Any) -> BindSettings:
    options: dict[str, Any] = {
        "name": "test",
        "password": "secret",
        "port": smsc.port,
        "window": 3,
        "enquire_link_s": 5.0,
        "response_timeout_s": 2.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.4,
    }
    options.update(overrides)
    return BindSettings(**options)


async def accept_all(pdu: Pdu) -> int:
    return ESME_ROK


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (polling briefly) until `predicate()` holds; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(
    settings: BindSettings, on_deliver: Callable[[Pdu], Awaitable[int]] = accept_all, **kwargs: Any
) -> AsyncIterator[SmppLink]:
    """A link running in a task; stopped (and the task awaited) on exit."""
    link = SmppLink(settings, on_deliver, **kwargs)
    task = asyncio.create_task(link.run())
    try:
        yield link
    finally:
        await link.stop(timeout=2.0)
        await asyncio.wait_for(task, 2.0)


def sample(metrics: SmppMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"bind": "test", **labels})
    return 0.0 if value is None else value


class TestBindAndTraffic:
    async def test_submit_round_trip(self, smsc: MiniSmsc) -> None:
        """The link binds as a transceiver and a submit comes back with its message id."""
        metrics = SmppMetrics()
        async with running(settings_for(smsc), metrics=metrics) as link:
            outcome = await link.submit(SUBMIT, timeout=5)
            assert outcome == SubmitOutcome(ESME_ROK, "m1") and outcome.ok
            assert link.up and link.window_in_use == 0
            assert smsc.commands()[:2] == ["bind_transceiver", "submit_sm"]
            assert smsc.received[1].get("destination_addr") == "84901234567"
            assert sample(metrics, "smpp_bind_up") == 1
            assert sample(metrics, "smpp_pdus_total", direction="out", command="submit_sm", status="0x00") == 1
            assert sample(metrics, "smpp_pdus_total", direction="in", command="submit_sm_resp", status="0x00") == 1
        assert sample(metrics, "smpp_bind_up") == 0

    async def test_deliver_answered_with_handler_status(self, smsc: MiniSmsc) -> None:
        """Each deliver_sm is passed to the handler and answered with its status."""
        seen: list[Pdu] = []

        async def handler(pdu: Pdu) -> int:
            seen.append(pdu)
            return 0x64

        async with running(settings_for(smsc), handler) as link:
            await eventually(lambda: link.up)
            resp = await smsc.deliver(source_addr="84901234567", short_message=b"*090#", ussd_service_op=1)
            assert (resp.command, resp.status) == ("deliver_sm_resp", 0x64)
            assert seen[0].get("ussd_service_op") == 1 and seen[0].get("short_message") == b"*090#"

    async def test_handler_error_is_not_fatal(self, smsc: MiniSmsc) -> None:
        """A raising handler yields ESME_RSYSERR and the link stays up for the next one."""
        calls = 0

        async def handler(pdu: Pdu) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("bug in a service")
            return ESME_ROK

        async with running(settings_for(smsc), handler) as link:
            await eventually(lambda: link.up)
            with capture_logs() as logs:
                assert (await smsc.deliver(source_addr="84901234567")).status == ESME_RSYSERR
            assert link.up
            [failure] = [e for e in logs if e["event"] == "smpp.deliver_handler_failed"]
            assert failure["source"] == "8490****567" and "84901234567" not in repr(logs)
            assert (await smsc.deliver(source_addr="84901234567")).status == ESME_ROK
            assert smsc.count("bind_transceiver") == 1

    async def test_slow_handler_does_not_block_link(self, smsc: MiniSmsc) -> None:
        """A handler still running does not hold up submits or other deliver_sm."""
        release = asyncio.Event()

        async def handler(pdu: Pdu) -> int:
            if pdu.get("short_message") == b"slow":
                await release.wait()
            return ESME_ROK

        async with running(settings_for(smsc), handler) as link:
            await eventually(lambda: link.up)
            slow = asyncio.create_task(smsc.deliver(short_message=b"slow"))
            assert (await smsc.deliver(short_message=b"fast")).status == ESME_ROK
            assert (await link.submit(SUBMIT, timeout=5)).ok
            release.set()
            assert (await slow).status == ESME_ROK

    async def test_transmitter_receiver_mode(self, smsc: MiniSmsc) -> None:
        """Mode transmitter_receiver binds twice: submits on one, delivers on the other."""
        async with running(settings_for(smsc, mode="transmitter_receiver")) as link:
            await eventually(lambda: link.up)
            assert sorted(smsc.commands()[:2]) == ["bind_receiver", "bind_transmitter"]
            assert (await link.submit(SUBMIT, timeout=5)).ok
            assert (await smsc.deliver("receiver", short_message=b"DK")).status == ESME_ROK


class TestReconnect:
    async def test_reconnects_after_drop(self, smsc: MiniSmsc) -> None:
        """When the SMSC drops the connection the link binds again by itself and
        submits work again."""
        metrics = SmppMetrics()
        async with running(settings_for(smsc), metrics=metrics) as link:
            assert (await link.submit(SUBMIT, timeout=5)).ok
            smsc.drop()
            await eventually(lambda: not link.up)
            assert (await link.submit(SUBMIT, timeout=5)).ok
            assert smsc.count("bind_transceiver") == 2
            assert sample(metrics, "smpp_reconnects_total") >= 1

    async def test_refused_bind_retried_with_backoff(self, smsc: MiniSmsc) -> None:
        """Refused binds are retried after growing (jittered) pauses until accepted."""
        smsc.refuse_binds = 3
        async with running(settings_for(smsc)) as link:
            await eventually(lambda: link.up)
            gaps = [b - a for a, b in itertools.pairwise(smsc.bind_times)]
            assert len(gaps) == 3
            # backoff 0.05, 0.1, 0.2 with jitter in [0.5, 1.0] of each
            for gap, backoff in zip(gaps, (0.05, 0.1, 0.2), strict=True):
                assert backoff * 0.5 - 0.01 <= gap <= backoff + 0.5
            assert (await link.submit(SUBMIT, timeout=5)).ok

    async def test_stop_at_any_moment_ends_run(self) -> None:
        """stop() landing mid-connect or mid-backoff still ends run() normally."""
        settings = BindSettings(name="test", password="secret", port=1, reconnect_min_s=0.001, reconnect_max_s=0.002)
        for i in range(30):
            link = SmppLink(settings, accept_all)
            run = asyncio.create_task(link.run())
            await asyncio.sleep(0.0005 * (i % 7))
            await link.stop(timeout=1)
            await asyncio.wait_for(run, 1)

    async def test_unreachable_smsc_submit_unavailable(self) -> None:
        """With no SMSC listening, submit gives up after its timeout with LinkUnavailable."""
        async with running(BindSettings(name="test", password="secret", port=1, reconnect_min_s=0.05, reconnect_max_s=0.1)) as link:
            started = time.monotonic()
            with pytest.raises(LinkUnavailable, match="not bound"):
                await link.submit(SUBMIT, timeout=0.3)
            assert 0.25 <= time.monotonic() - started < 2


class TestFlowControl:
    async def test_throttled_submit_retried(self, smsc: MiniSmsc) -> None:
        """THROTTLED then MSGQFUL then OK: one successful outcome, three submit_sm sent."""
        smsc.submit_statuses.extend([ESME_RTHROTTLED, ESME_RMSGQFUL])
        metrics = SmppMetrics()
        async with running(settings_for(smsc), metrics=metrics) as link:
            started = time.monotonic()
            outcome = await link.submit(SUBMIT, timeout=5)
            assert outcome.ok and outcome.message_id == "m1"
            assert smsc.count("submit_sm") == 3
            assert time.monotonic() - started >= 0.1 + 0.2 - 0.02  # paused 0.1 s, then 0.2 s
            assert sample(metrics, "smpp_throttled_total") == 2

    async def test_throttled_until_timeout(self, smsc: MiniSmsc) -> None:
        """An SMSC that keeps throttling makes the submit fail with LinkUnavailable."""
        smsc.submit_statuses.extend([ESME_RTHROTTLED] * 100)
        async with running(settings_for(smsc)) as link:
            with pytest.raises(LinkUnavailable, match="throttling"):
                await link.submit(SUBMIT, timeout=0.5)

    async def test_error_status_returned(self, smsc: MiniSmsc) -> None:
        """Other error statuses are the caller's to handle, not retried."""
        smsc.submit_statuses.append(0x0B)
        async with running(settings_for(smsc)) as link:
            assert await link.submit(SUBMIT, timeout=5) == SubmitOutcome(0x0B, "")
            assert smsc.count("submit_sm") == 1

    async def test_window_never_exceeded(self, smsc: MiniSmsc) -> None:
        """With responses withheld, no more than `window` submit_sm are outstanding;
        the others wait and go out as responses free slots."""
        smsc.withhold = True
        async with running(settings_for(smsc, window=3)) as link:
            submits = [asyncio.create_task(link.submit(SUBMIT, timeout=5)) for _ in range(8)]
            await eventually(lambda: len(smsc.withheld) == 3)
            await asyncio.sleep(0.1)
            assert len(smsc.withheld) == 3 and link.window_in_use == 3
            smsc.release()
            outcomes = await asyncio.gather(*submits)
            assert all(o.ok for o in outcomes) and len({o.message_id for o in outcomes}) == 8
            assert smsc.max_withheld == 3 and smsc.count("submit_sm") == 8

    async def test_unanswered_submit_unconfirmed(self, smsc: MiniSmsc) -> None:
        """A submit_sm never answered raises SubmitUnconfirmed after response_timeout_s
        (it may have been delivered: the caller decides about resending)."""
        smsc.withhold = True
        async with running(settings_for(smsc, response_timeout_s=0.3)) as link:
            with pytest.raises(SubmitUnconfirmed):
                await link.submit(SUBMIT, timeout=5)
            assert link.window_in_use == 0 and link.up


class TestStop:
    async def test_stop_unbinds_after_in_flight_submits(self, smsc: MiniSmsc) -> None:
        """stop() refuses new submits, lets the one in flight finish, then unbinds."""
        smsc.withhold = True
        link = SmppLink(settings_for(smsc), accept_all)
        run = asyncio.create_task(link.run())
        in_flight = asyncio.create_task(link.submit(SUBMIT, timeout=5))
        await eventually(lambda: len(smsc.withheld) == 1)
        stopping = asyncio.create_task(link.stop(timeout=3))
        await asyncio.sleep(0.1)
        with pytest.raises(LinkUnavailable, match="stopping"):
            await link.submit(SUBMIT, timeout=1)
        assert "unbind" not in smsc.commands() and not stopping.done()
        smsc.release()
        assert (await in_flight).ok
        await asyncio.wait_for(stopping, 3)
        await asyncio.wait_for(run, 1)
        log = smsc.log
        assert log.index(">submit_sm_resp") < log.index("<unbind") < log.index(">unbind_resp")
        assert not link.up

    async def test_stop_waits_for_deliver_handler_and_its_reply(self, smsc: MiniSmsc) -> None:
        """A deliver handler running at stop() finishes, and may still submit its reply,
        before the unbind."""
        entered, release = asyncio.Event(), asyncio.Event()
        replies: list[SubmitOutcome] = []

        async def handler(pdu: Pdu) -> int:
            entered.set()
            await release.wait()
            replies.append(await link.submit(SUBMIT, timeout=2))
            return ESME_ROK

        link = SmppLink(settings_for(smsc), handler)
        run = asyncio.create_task(link.run())
        await eventually(lambda: link.up)
        delivered = asyncio.create_task(smsc.deliver(short_message=b"*090#"))
        await entered.wait()
        stopping = asyncio.create_task(link.stop(timeout=3))
        await asyncio.sleep(0.05)
        release.set()
        assert (await delivered).status == ESME_ROK
        await asyncio.wait_for(stopping, 3)
        await asyncio.wait_for(run, 1)
        assert replies and replies[0].ok
        assert smsc.log.index("<deliver_sm_resp") < smsc.log.index("<unbind")

    async def test_stop_while_bind_pending(self, smsc: MiniSmsc) -> None:
        """Stopping while the SMSC sits on our bind closes at once and run() returns."""
        smsc.mute_binds = True
        link = SmppLink(settings_for(smsc), accept_all)
        run = asyncio.create_task(link.run())
        await eventually(lambda: smsc.count("bind_transceiver") == 1)
        started = time.monotonic()
        await link.stop(timeout=2)
        await asyncio.wait_for(run, 1)
        assert run.exception() is None and time.monotonic() - started < 1

    async def test_stop_before_run(self, smsc: MiniSmsc) -> None:
        """A link stopped before it ran never connects."""
        link = SmppLink(settings_for(smsc), accept_all)
        await link.stop()
        await asyncio.wait_for(link.run(), 1)
        assert smsc.log == []
