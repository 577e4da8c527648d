"""What shape a Claude-backed agent's reply takes, read from its definition.

A definition says what it answers in two places: the reply examples of its ACP
section (a JSON block under a heading or line such as "Your reply" or
"Response format:", after the command it answers) and an ``output_contract``
in its frontmatter (``required_fields``). From them this module derives a JSON
schema for the API's structured output, so a definition run from the CLI gets
the same structure a library caller gets by registering a reply model.

The schema is a reading of examples, so it is deliberately plain: the example's
keys with the JSON types of their values, the contract's required fields added
(as strings when no example says otherwise). A registered model or schema
always wins over it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from acp.agents.definition import AgentDefinition, DeclaredMessage
from acp.protocol.body import MessageKind

__all__ = ["PLAIN_FORMATS", "is_structured", "reply_examples", "reply_schema", "schema_of"]

#: ``respond_format`` values that ask for prose; any other value names a structured
#: format (``STRUCTURED_JSON``, ``IDEATION_REPORT_v1``, ``TRIAGE_RESULT`` ...)
PLAIN_FORMATS = frozenset(
    {"TEXT", "PLAIN", "PLAIN_TEXT", "PLAINTEXT", "MARKDOWN", "PROSE", "NATURAL_LANGUAGE", "HUMAN"}
)
_REPLY_CONTEXT = re.compile(r"\b(repl|respon|answer|result|return|output)", re.IGNORECASE)
_FIELD = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)")


def is_structured(respond_format: object) -> bool:
    """Whether a ``respond_format`` asks for a JSON object rather than prose."""
    return (
        isinstance(respond_format, str)
        and bool(respond_format.strip())
        and (respond_format.strip().upper() not in PLAIN_FORMATS)
    )


def _is_reply(message: DeclaredMessage) -> bool:
    return (
        message.in_acp_section
        and message.command is None
        and message.kind is not MessageKind.WORKFLOW
        and bool(_REPLY_CONTEXT.search(message.context))
    )


def reply_examples(definition: AgentDefinition) -> dict[str | None, list[dict[str, Any]]]:
    """Reply examples by the command they answer: the nearest command example before
    them in the ACP section (``None`` when no command precedes them)."""
    found: dict[str | None, list[dict[str, Any]]] = {}
    command: str | None = None
    for message in sorted(definition.messages, key=lambda m: m.line):
        if not message.in_acp_section:
            continue
        if message.command is not None:
            command = message.command
        elif _is_reply(message):
            found.setdefault(command, []).append(message.example)
    return found


def schema_of(value: Any) -> dict[str, Any]:
    """A JSON schema a value of this shape satisfies (objects keep their keys)."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        items = [v for v in value if v is not None]
        return {"type": "array", "items": schema_of(items[0]) if items else {"type": "string"}}
    if isinstance(value, Mapping):
        return {
            "type": "object",
            "properties": {str(k): schema_of(v) for k, v in value.items() if v is not None},
            "required": [str(k) for k, v in value.items() if v is not None],
        }
    return {"type": "string"}  # null: nothing to go by


def _contract_fields(definition: AgentDefinition) -> tuple[list[str], list[str]]:
    """(required, optional) field names of the definition's ``output_contract``."""
    contract = definition.extra.get("output_contract")
    if not isinstance(contract, Mapping):
        return [], []
    required: list[str] = []
    optional: list[str] = []
    for entry in contract.get("required_fields") or []:
        match = _FIELD.match(str(entry))
        if match:
            (optional if "optional" in str(entry).lower() else required).append(match[1])
    return required, optional


def reply_schema(definition: AgentDefinition, command: str | None) -> dict[str, Any] | None:
    """The schema of the reply to ``command`` the definition declares, if it declares one."""
    examples = reply_examples(definition)
    chosen = examples.get(command) or (examples.get(None) if command else None)
    if chosen is None and len(examples) == 1 and len(definition.commands) <= 1:
        (chosen,) = examples.values()  # one command, one reply: they go together
    required, optional = _contract_fields(definition)
    if not chosen and not required:
        return None
    schema: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    if chosen:
        schema = schema_of(chosen[0])
        schema["properties"].pop("hash", None)  # the runtime's integrity tag, not the model's
        schema["required"] = [k for k in schema["required"] if k != "hash"]
    for name in required + optional:
        schema["properties"].setdefault(name, {"type": "string"})
    schema["required"] = list(dict.fromkeys([*schema["required"], *required]))
    return schema
