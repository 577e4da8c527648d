"""Structured logs: JSON lines off a terminal (production), readable on one, always
on stderr so that a command's own output (``--json``) stays clean.

Every event passes a redaction step: passwords in URLs and API keys never
reach a log line, whoever logged them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["LEVELS", "configure_logging", "redact"]

LEVELS = ("debug", "info", "warning", "error")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s/]+)(@)", re.IGNORECASE)
_API_KEY = re.compile(r"\b(sk-ant-[a-z0-9]{2,6}-|sk-)[A-Za-z0-9_-]{8,}", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with URL passwords and API keys replaced by ``***``."""
    return _API_KEY.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\3", text))


def _redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
    return event


class _StderrLogger:
    """Writes to whatever ``sys.stderr`` is at the time of writing, not at setup:
    a stream swapped in and closed later (a test runner's) must not break logging."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def configure_logging(
    level: str | None = None, *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Set up structlog for a process; ``ACP_LOG_LEVEL`` and ``ACP_LOG_JSON`` are the defaults.

    ``stream`` pins the output to one stream (tests); by default it is stderr."""
    target = stream or sys.stderr
    level = (level or os.environ.get("ACP_LOG_LEVEL") or "info").lower()
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    if json is None:
        env = os.environ.get("ACP_LOG_JSON")
        json = env.lower() in ("1", "true", "yes") if env else not target.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=target.isatty())
    )
    factory: Any = (
        structlog.PrintLoggerFactory(file=stream) if stream else (lambda *_: _StderrLogger())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
            _redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
