"""Logging: structlog, one JSON line per hop when not on a terminal, pretty on one."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from ussd_gateway.core.secrets import scrub_processor


def _orjson_dumps(event: Any, default: Any = None) -> str:
    return orjson.dumps(event, default=default).decode()


def configure_logging(*, level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog once per process. `fmt`: auto (JSON unless stderr is a
    terminal), json or console."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = structlog.processors.JSONRenderer(serializer=_orjson_dumps) if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub_processor,  # after format_exc_info: a traceback may quote a URL or a token
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
