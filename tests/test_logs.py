"""Logs go to stderr, as JSON off a terminal, and never show secrets."""

from __future__ import annotations

import io
import json

import structlog

from acp.logs import configure_logging, redact


def test_secrets_are_redacted() -> None:
    assert redact("redis://admin:hunter2@db:6379/0") == "redis://admin:***@db:6379/0"
    assert redact("rediss://:p%40ss@host/1") == "rediss://:***@host/1"
    assert "abcdef123456" not in redact("key sk-ant-api03-abcdef123456XYZ")
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_json_lines_with_redaction() -> None:
    stream = io.StringIO()
    configure_logging("info", json=True, stream=stream)
    log = structlog.get_logger("t")
    log.debug("hidden")
    log.info("connected", url="redis://u:secret@h:1/0")
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "connected"
    assert event["level"] == "info"
    assert event["url"] == "redis://u:***@h:1/0"
    configure_logging("warning")  # back to stderr for the tests that follow


def test_logging_survives_a_closed_stderr_stand_in(monkeypatch: object, capsys: object) -> None:
    """A CLI test runner swaps sys.stderr for a stream it closes afterwards."""
    import sys

    stand_in = io.StringIO()
    real = sys.stderr
    sys.stderr = stand_in
    try:
        configure_logging("info", json=True)
        structlog.get_logger("t").info("during")
    finally:
        sys.stderr = real
        stand_in.close()
    structlog.get_logger("t").info("after")  # must not write to the closed stand-in
