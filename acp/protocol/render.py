"""Messages as text a person reads at a glance (the definitions' "Human Communication").

Keys become words, nested metrics become one line each, ratios named like a
rate or score become percentages, and protocol plumbing (``hash``,
``respond_format``) is left out.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from acp.protocol.body import MessageKind, classify_body, command_name
from acp.protocol.envelope import Envelope
from acp.protocol.workflow import Phase, Step, parse_workflow

__all__ = ["render_body", "render_envelope"]

_PLUMBING = {"cmd", "hash", "respond_format"}
_RATIO = re.compile(
    r"(rate|ratio|score|progress|coverage|share|pct|percent|confidence|accuracy|precision|recall|utili[sz]ation)$"
)
_MAX_ITEMS = 8


def _words(key: str) -> str:
    return key.replace("_", " ").replace("-", " ").strip() or key


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and 0.0 <= value <= 1.0 and _RATIO.search(key):
        return f"{value:.0%}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value.replace("_", " ") if re.fullmatch(r"[a-z0-9_]+", value) else value
    if value is None:
        return "-"
    if isinstance(value, list):
        if not value:
            return "none"
        shown = ", ".join(_value(key, v) for v in value[:_MAX_ITEMS])
        return shown + (f" (+{len(value) - _MAX_ITEMS} more)" if len(value) > _MAX_ITEMS else "")
    if isinstance(value, dict):
        return _inline(value)
    return str(value)


def _inline(mapping: dict[str, Any]) -> str:
    return " · ".join(f"{_words(k)} {_value(k, v)}" for k, v in mapping.items())


def _lines(mapping: dict[str, Any], indent: str) -> list[str]:
    out: list[str] = []
    for key, value in mapping.items():
        if key in _PLUMBING:
            continue
        if isinstance(value, dict) and any(isinstance(v, dict | list) for v in value.values()):
            out.append(f"{indent}{_words(key)}:")
            out.extend(_lines(value, indent + "  "))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.append(f"{indent}{_words(key)}:")
            out.extend(f"{indent}  - {_inline(v)}" for v in value[:_MAX_ITEMS])
        else:
            out.append(f"{indent}{_words(key)}: {_value(key, value)}")
    return out


def _subject(body: dict[str, Any]) -> str | None:
    for key, value in body.items():
        if key.endswith("_id") and isinstance(value, str):
            return value
    return None


def _workflow_lines(body: dict[str, Any]) -> list[str]:
    spec = parse_workflow(body)
    out = [f"workflow {spec.name}"]

    def walk(node: Step | Phase, indent: str, number: str) -> None:
        if isinstance(node, Step):
            task = _inline(node.payload) if node.payload else ""
            out.append(f"{indent}{number}{node.agent}" + (f": {task}" if task else ""))
            return
        out.append(f"{indent}{number}{_words(node.name)} ({node.mode})")
        for child in node.steps:
            walk(child, indent + "  ", "- ")

    for i, phase in enumerate(spec.phases, 1):
        walk(phase, "  ", f"{i}. ")
    return out


def render_body(body: dict[str, Any], kind: MessageKind | None = None) -> str:
    """A few lines describing ``body``; ``kind`` (the envelope's) titles bodies
    that do not show their kind themselves, such as replies."""
    shape = classify_body(body)
    kind = shape if kind is None or shape is not MessageKind.EVENT else kind
    if kind is MessageKind.WORKFLOW:
        try:
            return "\n".join(_workflow_lines(body))
        except Exception:  # an unusual shape still renders as plain fields below
            pass
    if kind is MessageKind.COMMAND:
        subject = _subject(body)
        title = f"{command_name(body)}" + (f" for {subject}" if subject else "")
        rest = {k: v for k, v in body.items() if not (k.endswith("_id") and v == subject)}
        return "\n".join([title, *_lines(rest, "  ")])
    title = {MessageKind.STATUS: "status update", MessageKind.WORKFLOW: "workflow"}.get(
        kind, str(kind)
    )
    if kind in (MessageKind.REPLY, MessageKind.ERROR) and isinstance(body.get("error"), str):
        title = f"error: {body['error']}"
        body = {k: v for k, v in body.items() if k != "error"}
    return "\n".join([title, *_lines(body, "  ")])


def render_envelope(env: Envelope) -> str:
    """The body's rendering under a one-line header: who, to whom, when."""
    when = datetime.fromtimestamp(env.created_at, UTC).strftime("%H:%M:%S")
    extra = []
    if env.attempt > 1:
        extra.append(f"attempt {env.attempt}")
    if env.tier:
        extra.append(f"tier {env.tier}")
    head = f"[{when}] {env.kind} {env.sender} -> {env.recipient}" + (
        f" ({', '.join(extra)})" if extra else ""
    )
    return (
        head
        + "\n"
        + "\n".join("  " + line for line in render_body(env.body, env.kind).splitlines())
    )
