"""The compact JSON text form of a message, for prompts, logs and the CLI.

Header fields use short, readable names (``from``, ``to``) and only appear
when set; the body is kept exactly as written.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from acp.errors import DecodeError
from acp.protocol.envelope import Envelope

__all__ = ["body_from_text", "body_to_text", "envelope_from_text", "envelope_to_text"]

_RENAMES = {"sender": "from", "recipient": "to"}
_BACK = {v: k for k, v in _RENAMES.items()}


def body_to_text(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def body_from_text(text: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError("bad_json", str(exc)) from exc
    except RecursionError as exc:
        raise DecodeError("bad_json", "JSON nested too deeply") from exc
    if not isinstance(value, dict):
        raise DecodeError("bad_body", f"JSON text is a {type(value).__name__}, not an object")
    return value


def envelope_to_text(env: Envelope) -> str:
    data = env.model_dump(mode="json", exclude_defaults=True)
    for field in ("id", "kind", "sender", "recipient", "created_at"):
        data[field] = getattr(env, field)
    ordered = {"id": data.pop("id"), "kind": str(data.pop("kind"))}
    ordered.update({_RENAMES.get(k, k): v for k, v in data.items() if k != "body"})
    ordered["body"] = env.body
    return body_to_text(ordered)


def envelope_from_text(text: str | bytes) -> Envelope:
    data = body_from_text(text)
    fields = {_BACK.get(k, k): v for k, v in data.items()}
    try:
        return Envelope.model_validate(fields)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise DecodeError("bad_envelope", where) from exc
