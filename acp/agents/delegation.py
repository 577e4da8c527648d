"""Who a Claude-backed agent may delegate to, the tools it is offered for that, and
the checks a delegation passes before it becomes an ordinary ACP command.

Pure: no bus, no model client. The agent loop (``acp.agents.claude``) turns a
model's ``delegate`` tool call into a child command with :func:`plan_child`; the
runtime sends it like any other command and resumes the parent with its reply.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from acp.agents.config import Delegation
from acp.agents.definition import AgentDefinition
from acp.protocol.body import MessageKind
from acp.protocol.envelope import Envelope
from acp.protocol.headers import H_ANCESTRY, H_JOIN, H_PARENT, H_PART, H_ROOT

if TYPE_CHECKING:  # the SDK loads slowly; a worker of Python agents never needs it
    from anthropic.types import ToolParam

__all__ = [
    "DELEGATE",
    "PUBLISH_STATUS",
    "ChildPlan",
    "ancestry",
    "answer_bytes",
    "child_command",
    "child_id",
    "delegate_tool",
    "plan_child",
    "reachable",
    "read_answer",
    "status_tool",
]

DELEGATE = "delegate"
PUBLISH_STATUS = "publish_status"
#: how much of an agent's description the tool lists (descriptions can be long)
_DESCRIPTION_CHARS = 300


def reachable(
    definition: AgentDefinition,
    catalogue: Mapping[str, AgentDefinition],
    limits: Delegation,
) -> list[str]:
    """The agents ``definition`` may delegate to, in catalogue order, never itself:
    the config's ``reach`` for it, else its ``delegates_to`` (``*``: everyone), else
    the catalogue agents its body names."""
    wanted = limits.reach.get(definition.name, definition.delegates_to)
    if wanted is None:
        body = definition.system_prompt
        named = [n for n in catalogue if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", body)]
    elif "*" in wanted:
        named = list(catalogue)
    else:
        named = [n for n in catalogue if n in wanted]
    return [n for n in named if n != definition.name]


def _commands(definition: AgentDefinition) -> list[str]:
    seen: dict[str, None] = {}
    for message in definition.messages:
        if message.command and message.kind.value == "command":
            seen.setdefault(message.command, None)
    return list(seen)


def delegate_tool(agents: Sequence[AgentDefinition]) -> ToolParam:
    """The ``delegate`` tool, its description listing who it reaches and what each
    declares it takes: the model picks a recipient and writes an ACP body."""
    lines = []
    for agent in agents:
        about = " ".join(agent.description.split())
        if len(about) > _DESCRIPTION_CHARS:
            about = about[: _DESCRIPTION_CHARS - 3] + "..."
        commands = _commands(agent)
        takes = f" Commands: {', '.join(commands)}." if commands else ""
        lines.append(f"- {agent.name}: {about}{takes}")
    description = (
        "Send an ACP command to another agent and get its reply as this tool's result. "
        "Calls made in the same turn run in parallel; your next turn starts when all "
        "have answered. body is the command's JSON, e.g. "
        '{"cmd": "PIPELINE_STATUS", "component_id": "etl"}. Agents you can reach:\n'
        + "\n".join(lines)
    )
    return {
        "name": DELEGATE,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": {
                "to": {"type": "string", "enum": [a.name for a in agents]},
                "body": {"type": "object", "description": "the ACP command body"},
            },
            "required": ["to", "body"],
        },
    }


def status_tool() -> ToolParam:
    return {
        "name": PUBLISH_STATUS,
        "description": (
            "Publish a status update (a JSON object, the shape your definition's status "
            "examples show) on your status topic, where operators and observers see it. "
            "Returns at once."
        ),
        "input_schema": {
            "type": "object",
            "properties": {"status": {"type": "object"}},
            "required": ["status"],
        },
    }


def ancestry(headers: Mapping[str, str]) -> list[str]:
    """The agents above a message, root first."""
    chain = headers.get(H_ANCESTRY, "")
    return [a for a in chain.split(",") if a]


def answer_bytes(kind: MessageKind | str, body: Mapping[str, Any]) -> bytes:
    """An answer as a rendezvous keeps it: its kind (reply or error) and body."""
    value = {"kind": MessageKind(kind).value, "body": body}
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def read_answer(raw: bytes | None) -> tuple[bool, dict[str, Any]]:
    """(is it an error, its body) of an answer kept by :func:`answer_bytes`; a missing
    one is an error."""
    if raw is None:
        return True, {"error": "no answer"}
    answer = json.loads(raw)
    return answer.get("kind") == MessageKind.ERROR.value, answer.get("body", {})


def child_id(join: str, part: str) -> str:
    """The id of the command delegated as ``part`` of rendezvous ``join``: the same on
    every run of the step that sends it, so the bus drops a second copy."""
    return hashlib.blake2b(f"{join}:{part}".encode(), digest_size=16).hexdigest()


def child_command(
    parent: Envelope, me: str, to: str, body: dict[str, Any], join: str, part: str
) -> Envelope:
    """A delegated command: answering to ``me`` at the rendezvous ``join`` (as
    ``part``), under an id derived from both (a re-run sends the same command),
    never given more time than the parent has left, in the parent's trace."""
    headers = {
        H_JOIN: join,
        H_PART: part,
        H_ANCESTRY: ",".join([*ancestry(parent.headers), me]),
        H_PARENT: parent.id,
        H_ROOT: parent.headers.get(H_ROOT) or parent.id,
    }
    return Envelope.for_body(
        body,
        sender=me,
        recipient=to,
        reply_to=me,
        id=child_id(join, part),
        deadline=parent.deadline,
        priority=parent.priority,
        tenant=parent.tenant,
        headers=headers,
        traceparent=parent.traceparent,
        tracestate=parent.tracestate,
    )


@dataclass(frozen=True)
class ChildPlan:
    """A delegation that passed its checks, or why it did not (``refused``)."""

    to: str
    body: dict[str, Any]
    refused: str | None = None


def plan_child(
    call: Mapping[str, Any],
    *,
    me: str,
    above: Sequence[str],
    reach: Sequence[str],
    limits: Delegation,
    already: int,
) -> ChildPlan:
    """Check one ``delegate`` call: a known, reachable agent that is not this one nor
    above it (a cycle), within the depth and the per-turn count; a body that is an
    object. A refusal is told to the model as the tool's result."""
    body = call.get("body")
    if not isinstance(body, dict):
        return ChildPlan(
            str(call.get("to", "")), {}, "body must be a JSON object (an ACP command body)"
        )
    # an ASSIGN (project-orchestrator.md's shape) names its assignee in the body
    assignee = body.get("to") if body.get("cmd") == "ASSIGN" else None
    to = str(call.get("to") or assignee or "")
    if to == me:
        return ChildPlan(to, body, "an agent cannot delegate to itself")
    if to not in reach:
        return ChildPlan(to, body, f"{to!r} is not an agent you can reach: {', '.join(reach)}")
    if to in above:
        chain = " -> ".join([*above, me, to])
        return ChildPlan(to, body, f"refused, it would make a cycle: {chain}")
    if len(above) + 1 > limits.max_depth:
        return ChildPlan(
            to,
            body,
            f"refused: delegation depth {limits.max_depth} reached ({' -> '.join([*above, me])})",
        )
    if already >= limits.max_children_per_turn:
        return ChildPlan(
            to, body, f"refused: at most {limits.max_children_per_turn} delegations per turn"
        )
    return ChildPlan(to, body)
