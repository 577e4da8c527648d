"""Structured logs: JSON lines off a terminal (production), readable on one, always
on stderr so that a command's own output (``--json``) stays clean.

Every event passes a redaction step: passwords in URLs and API keys never
reach a log line, whoever logged them.

A library never configures logging for its host: only the ``acp`` command calls
:func:`configure_logging`. The runtime's own loggers (:func:`get_logger`) follow
structlog when the host configured it, and otherwise go through the standard
``logging`` module under ``acp.*`` names, where an unconfigured program hears
warnings and errors on stderr and nothing else.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Protocol, TextIO

import structlog

__all__ = ["LEVELS", "Logger", "configure_logging", "get_logger", "redact"]

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


class Logger(Protocol):
    """What the runtime's code logs through (structlog's bound-logger methods)."""

    def bind(self, **values: Any) -> Logger: ...
    def debug(self, event: str, **values: Any) -> Any: ...
    def info(self, event: str, **values: Any) -> Any: ...
    def warning(self, event: str, **values: Any) -> Any: ...
    def error(self, event: str, **values: Any) -> Any: ...
    def exception(self, event: str, **values: Any) -> Any: ...


_STDLIB_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.processors.format_exc_info,
    _redact_event,
    structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True),
]


class _LibraryLogger:
    """Decides at each call, not at import: a host may configure structlog late."""

    __slots__ = ("_context", "_lazy", "_name", "_plain")

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}
        self._lazy: Any = structlog.get_logger(name, **self._context)
        self._plain: Any = None

    def bind(self, **values: Any) -> Logger:
        return _LibraryLogger(self._name, {**self._context, **values})

    def _target(self) -> Any:
        if structlog.is_configured():
            return self._lazy
        if self._plain is None:
            self._plain = structlog.wrap_logger(
                logging.getLogger(self._name),
                processors=_STDLIB_PROCESSORS,
                wrapper_class=structlog.stdlib.BoundLogger,
                **self._context,
            )
        return self._plain

    def debug(self, event: str, **values: Any) -> Any:
        return self._target().debug(event, **values)

    def info(self, event: str, **values: Any) -> Any:
        return self._target().info(event, **values)

    def warning(self, event: str, **values: Any) -> Any:
        return self._target().warning(event, **values)

    def error(self, event: str, **values: Any) -> Any:
        return self._target().error(event, **values)

    def exception(self, event: str, **values: Any) -> Any:
        return self._target().exception(event, **values)


def get_logger(name: str) -> Logger:
    """The logger library code uses: structlog's when the host configured structlog,
    the standard ``logging`` module's otherwise (never printing by itself)."""
    return _LibraryLogger(name)
