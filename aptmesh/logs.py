"""Structured logging: structlog, one JSON event per line on stderr.

Standard-library loggers (grpc, aiohttp, asyncio) are routed through the same
renderer so every line a service writes is one JSON object.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

import structlog

LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


def configure(service: str, level: str = "info", fmt: LogFormat = "json") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # Records from aiohttp, grpc and asyncio carry exc_info too.
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is one line per request: too much for a cache.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    structlog.contextvars.bind_contextvars(service=service)


def get(name: str) -> Any:
    return structlog.get_logger(name)


class RateLimitedWarning:
    """Logs a warning for input an outsider controls, at most `burst` lines per `period` seconds.

    A parser's rejection is the client's fault, so it is a WARNING without a traceback;
    and since an attacker decides how many there are, lines past the budget are only
    counted, and the next line that gets through says how many were suppressed.
    One instance per kind of rejection; one writer (the event loop), no lock.
    """

    def __init__(
        self,
        logger: Any,
        event: str,
        *,
        burst: int = 10,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._event = event
        self._burst = burst
        self._period = period
        self._clock = clock
        self._window_start = -float("inf")
        self._logged = 0
        self._suppressed = 0

    def __call__(self, **fields: Any) -> bool:
        """Logs one rejection (or counts it); True when a line was written."""
        now = self._clock()
        if now - self._window_start >= self._period:
            self._window_start, self._logged = now, 0
        if self._logged >= self._burst:
            self._suppressed += 1
            return False
        self._logged += 1
        if self._suppressed:
            fields["suppressed"] = self._suppressed
            self._suppressed = 0
        self._logger.warning(self._event, **fields)
        return True
