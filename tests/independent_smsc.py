"""An SMSC that is not ours: PyPI `smpp34`'s asyncio `Server` (a Rust SMPP 3.4 stack),
run in-process on a free 127.0.0.1 port. Framing, binds, responses, enquire_link and
TLV encoding are the library's; this wrapper only records what it receives and lets a
test send `deliver_sm` through it.

Its quirks (see the library's docs): it accepts any system_id and password; after
`unbind_resp` it closes the TCP connection at once; `deliver_sm` defaults the
destination's ton/npi to 1/1, so tests pass every address field explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

smpp34 = pytest.importorskip("smpp34")

TLV_USSD_SERVICE_OP = 0x0501
TLV_ITS_SESSION_INFO = 0x1383
TLV_USER_MESSAGE_REFERENCE = 0x0204
TLV_SAR_MSG_REF_NUM = 0x020C
TLV_SAR_TOTAL_SEGMENTS = 0x020E
TLV_SAR_SEGMENT_SEQNUM = 0x020F


@dataclass
class Submit:
    """One submit_sm as the independent SMSC decoded it."""

    service_type: str
    source_addr: str
    source_addr_ton: int
    destination_addr: str
    dest_addr_ton: int
    esm_class: int
    data_coding: int
    short_message: bytes
    tlvs: dict[int, bytes] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class IndependentSmsc:
    """smpp34.Server plus a record of submits and a way to send deliver_sm."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = smpp34.Server("127.0.0.1", self.port, system_id="SMPP34")
        self.esmes: list[Any] = []
        self.submits: list[Submit] = []
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._counter = 0

    async def start(self) -> None:
        await self.server.start()
        self._task = asyncio.create_task(self._events())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.server.stop()

    async def _events(self) -> None:
        while True:
            event = await self.server.next()
            if isinstance(event, smpp34.Esme):
                self.esmes.append(event)
            elif isinstance(event, smpp34.Unbound):
                self.esmes = [e for e in self.esmes if e.session_id != event.session_id]
            elif isinstance(event, smpp34.SubmitSmEvent):
                self._counter += 1
                self.submits.append(
                    Submit(
                        event.service_type, event.source_addr, event.source_addr_ton, event.destination_addr,
                        event.dest_addr_ton, event.esm_class, event.data_coding, bytes(event.short_message),
                        {t.tag: bytes(t.value) for t in event.tlvs},
                    )
                )
                event.accept(message_id=f"{self._counter:08X}")
            self._changed.set()

    async def wait_for(self, ready: Callable[[], Any], timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            while not (result := ready()):
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)
            return result

    async def wait_bound(self, timeout: float = 5.0) -> Any:
        return (await self.wait_for(lambda: [e for e in self.esmes if e.can_receive], timeout))[0]

    async def deliver(self, source: str, destination: str, body: bytes, *, tlvs: dict[int, bytes] | None = None, **fields: Any) -> int:
        """Send one deliver_sm from `source` to `destination`; its deliver_sm_resp status."""
        esme = await self.wait_bound()
        options: dict[str, Any] = {
            "source_addr": source, "source_addr_ton": 1, "source_addr_npi": 1,
            "dest_addr_ton": 0, "dest_addr_npi": 1, "data_coding": 0, **fields,
        }
        options["tlvs"] = [smpp34.Tlv(tag, value) for tag, value in (tlvs or {}).items()]
        response = await asyncio.wait_for(esme.deliver_sm(destination, body, **options), 10)
        return int(response.command_status)

    async def next_submits(self, count: int, to: str, timeout: float = 5.0) -> list[Submit]:
        """Wait until `count` submits to `to` arrived; returns them (oldest first)."""
        return await self.wait_for(lambda: (found := [s for s in self.submits if s.destination_addr == to])[count - 1:] and found[:count], timeout)


@pytest.fixture
async def independent_smsc() -> AsyncIterator[IndependentSmsc]:
    """The smpp34 SMSC, started on a free loopback port and stopped after the test."""
    smsc = IndependentSmsc()
    await smsc.start()
    try:
        yield smsc
    finally:
        await smsc.stop()
