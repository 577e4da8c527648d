"""The three shapes of ACP body found in real definitions, recognised from the JSON alone.

A body is an open JSON object: nothing here removes or rewrites fields, it only
looks at them. Classification is a pure function so that the loader, the
codec check and the runtime all agree on what a message is.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from acp.protocol.patterns import remembering_fullmatch

__all__ = ["MessageKind", "classify_body", "command_name", "is_json_value"]

_is_command = remembering_fullmatch(re.compile(r"[A-Z][A-Z0-9_]*"))
_STATUS_KEY = re.compile(r"(^|_)(status|platform|health|metrics|progress|state)$")


class MessageKind(StrEnum):
    COMMAND = "command"
    STATUS = "status"
    WORKFLOW = "workflow"
    REPLY = "reply"
    ERROR = "error"
    EVENT = "event"


def command_name(body: dict[str, Any]) -> str | None:
    """The body's command (``cmd``) when it is a well-formed UPPER_SNAKE name."""
    cmd = body.get("cmd")
    return cmd if isinstance(cmd, str) and _is_command(cmd) else None


def _is_step(value: Any) -> bool:
    return isinstance(value, dict) and (
        "agent" in value or "agents" in value or "parallel" in value or "sequential" in value
    )


def _looks_like_workflow(body: dict[str, Any]) -> bool:
    if isinstance(body.get("workflow"), str):
        return True
    phases = body.get("phases")
    return isinstance(phases, list) and bool(phases) and all(_is_step(p) for p in phases)


def classify_body(body: dict[str, Any]) -> MessageKind:
    """Command if it names a ``cmd``, workflow if it names a ``workflow`` or lists
    agent ``phases``, status if it reports a ``*_status``-like object or carries a
    ``hash`` label without a command; anything else is a plain event."""
    if command_name(body) is not None:
        return MessageKind.COMMAND
    if _looks_like_workflow(body):
        return MessageKind.WORKFLOW
    for key, value in body.items():
        if _STATUS_KEY.search(key) and isinstance(value, dict | str):
            return MessageKind.STATUS
    if "hash" in body:
        return MessageKind.STATUS
    return MessageKind.EVENT


def is_json_value(value: Any, _depth: int = 0) -> bool:
    """True when ``value`` is plain JSON data (what a body may hold)."""
    if _depth > 64:
        return False
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return all(is_json_value(v, _depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_value(v, _depth + 1) for k, v in value.items())
    return False
