"""The delegation tree of a request, read back from what the agent loop keeps on the
server: each conversation's record (its model turns and their tool calls) and the
rendezvous where each turn's delegations were answered (every answer carries the
``_acp`` block of the agent that gave it: model, tier, tokens, cost, time).

``acp trace ROOT_ID`` prints it. A conversation is named by the id of its first
step: the root request's id, and a delegated command's id for a child that ran
a loop of its own."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from acp.runtime.bus.base import Bus

__all__ = ["TraceNode", "read_trace"]


@dataclass
class TraceNode:
    """One agent's part in a tree: what it did, and whom it asked."""

    msg_id: str
    agent: str
    #: model turns recorded (0 for an agent that answered without a loop)
    turns: int = 0
    #: the answer's ``_acp`` block when known: model, tier, usage, cost, elapsed
    meta: dict[str, Any] = field(default_factory=dict)
    outcome: str = "running"
    children: list[TraceNode] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "msg_id": self.msg_id,
            "agent": self.agent,
            "turns": self.turns,
            "outcome": self.outcome,
            **{k: self.meta[k] for k in ("model", "tier", "usage", "cost_usd", "elapsed_s")
               if k in self.meta},
            "children": [c.as_dict() for c in self.children],
        }  # fmt: skip

    def total_cost(self) -> float:
        own = float(self.meta.get("cost_usd") or 0.0)
        return own + sum(c.total_cost() for c in self.children)


def _child_id(join: str, call_id: str) -> str:
    # the id the agent loop gives a delegated command (acp.agents.claude)
    return hashlib.blake2b(f"{join}:{call_id}".encode(), digest_size=16).hexdigest()


async def read_trace(bus: Bus, root_id: str, *, agent: str = "?", depth: int = 8) -> TraceNode:
    """The tree below ``root_id``, as far as the server still keeps it."""
    node = TraceNode(msg_id=root_id, agent=agent)
    turns = [json.loads(t) for t in await bus.read_record(root_id)]
    node.turns = sum(1 for t in turns if t.get("role") == "assistant")
    if turns and node.agent == "?":
        node.agent = str(turns[0].get("agent", "?"))
    if turns and turns[-1].get("role") == "assistant" and turns[-1].get("stop") == "end_turn":
        node.outcome = "answered"
    for index, turn in enumerate(turns):
        calls = [
            b for b in turn.get("content", []) if b.get("type") == "tool_use"
            and b.get("name") == "delegate"
        ]  # fmt: skip
        if turn.get("role") != "assistant" or not calls:
            continue
        join = f"{root_id}.{index + 1}"
        answers = await bus.join_parts(join)
        for call in calls:
            to = str((call.get("input") or {}).get("to", "?"))
            child_id = _child_id(join, call["id"])
            child = (
                await read_trace(bus, child_id, agent=to, depth=depth - 1)
                if depth > 0
                else TraceNode(child_id, to)
            )
            raw = answers.get(call["id"])
            if raw is not None:
                answer = json.loads(raw)
                body = answer.get("body", {})
                child.meta = dict(body.get("_acp") or {})
                child.outcome = (
                    "cancelled" if body.get("cancelled")
                    else "error" if answer.get("kind") == "error"
                    else "answered"
                )  # fmt: skip
            elif child.outcome == "running" and not child.turns:
                child.outcome = "waiting"
            node.children.append(child)
    return node
