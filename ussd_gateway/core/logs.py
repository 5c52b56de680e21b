"""Logging: structlog, one JSON line per hop when not on a terminal, pretty on one."""

from __future__ import annotations

import asyncio
import atexit
import datetime
import logging
import sys
import time
from typing import Any, BinaryIO

import orjson
import structlog

from ussd_gateway.core.secrets import scrub_processor


def _orjson_dumps(event: Any, default: Any = None) -> str:
    return orjson.dumps(event, default=default).decode()


class IsoUtcStamper:
    """`structlog.processors.TimeStamper(fmt="iso", utc=True)`, the same text
    (`2026-12-02T00:15:36.191302Z`; no fraction on a whole second), with the date and
    time of day formatted once per second: 0.3 µs a line instead of 1.3."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _logger: Any, _name: str, event: Any) -> Any:
        second, ns = divmod(time.time_ns(), 1_000_000_000)
        if second != self._second:
            self._prefix = datetime.datetime.fromtimestamp(second, datetime.timezone.utc).isoformat()[:19]
            self._second = second
        micros = ns // 1000  # datetime.now() floors to the microsecond too
        event["timestamp"] = f"{self._prefix}.{micros:06d}Z" if micros else self._prefix + "Z"
        return event


def _orjson_bytes(event: Any, default: Any = None) -> bytes:
    return orjson.dumps(event, default=default)


class TurnBufferedLogger:
    """A structlog logger for JSON lines: each line is kept until the end of the event
    loop's turn, then the turn's lines leave in one `write` to the binary stream.

    Speed: writing and flushing every line cost a `write` syscall per hop plus the
    text layer's encoding (~5 µs of a hop's CPU under load, 50 connections); now a turn
    of ~15 hops shares one. Outside a running loop a line is written at once; lines
    still buffered at exit are written then."""

    _shared: dict[int, "TurnBufferedLogger"] = {}

    @classmethod
    def shared(cls, stream: BinaryIO) -> "TurnBufferedLogger":
        """One per stream: every logger of the process joins the same turn's write."""
        logger = cls._shared.get(id(stream))
        if logger is None or logger._stream is not stream:
            logger = cls._shared[id(stream)] = cls(stream)
        return logger

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        """The loop whose turn end writes the lines (a loop that stopped before it did
        never will: its lines are written when the next line comes)."""
        atexit.register(self.flush)

    def msg(self, message: bytes | str) -> None:
        line = (message if isinstance(message, bytes) else message.encode()) + b"\n"
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and loop is self._scheduled_on:
            self._lines.append(line)
            if len(self._lines) > 256:
                self.flush()
            return
        if self._lines:
            self.flush()  # left by a loop that stopped, or written outside any loop
        self._lines.append(line)
        if loop is None:
            self.flush()
            return
        self._scheduled_on = loop
        loop.call_soon(self.flush)

    log = debug = info = warn = warning = msg
    err = error = critical = exception = failure = fatal = msg

    def flush(self) -> None:
        self._scheduled_on = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            self._stream.write(b"".join(lines))
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: logging never breaks a hop
            pass


def configure_logging(*, level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog once per process. `fmt`: auto (JSON unless stderr is a
    terminal), json or console."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    binary = getattr(stream, "buffer", None) if use_json else None
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_bytes if binary is not None else _orjson_dumps)
        if use_json
        else structlog.dev.ConsoleRenderer()
    )
    factory: Any = (lambda *args: TurnBufferedLogger.shared(binary)) if binary is not None else structlog.WriteLoggerFactory(file=stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            IsoUtcStamper(),
            structlog.processors.format_exc_info,
            scrub_processor,  # after format_exc_info: a traceback may quote a URL or a token
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
