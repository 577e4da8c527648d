"""The delegation tree of a request, read back from what the agent loop keeps on the
server: each conversation's record (its model turns and their tool calls) and the
rendezvous where each turn's delegations were answered (every answer carries the
``_acp`` block of the agent that gave it: model, tier, tokens, cost, time).

``acp trace ROOT_ID`` prints it. A conversation is named by the id of its first
step: the root request's id, and a delegated command's id for a child that ran
a loop of its own."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from acp.agents.delegation import child_id, read_answer
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
    #: the tools it ran itself (tool, duration_ms, outcome), in call order
    tools: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "msg_id": self.msg_id,
            "agent": self.agent,
            "turns": self.turns,
            "outcome": self.outcome,
            **{k: self.meta[k] for k in ("model", "tier", "usage", "cost_usd", "elapsed_s")
               if k in self.meta},
            "tools": self.tools,
            "children": [c.as_dict() for c in self.children],
        }  # fmt: skip

    def render(self, prefix: str = "", *, last: bool = True, top: bool = True) -> list[str]:
        """The tree as ``acp trace`` prints it, one line per agent."""
        usage = self.meta.get("usage") or {}
        parts = [
            self.agent,
            str(self.meta.get("tier") or ""),
            str(self.meta.get("model") or ""),
            f"{self.turns} turn{'' if self.turns == 1 else 's'}" if self.turns else "",
            f"{usage.get('input_tokens', 0)}/{usage.get('output_tokens', 0)} tok" if usage else "",
            f"${self.meta['cost_usd']:.4f}" if "cost_usd" in self.meta else "",
            f"{self.meta['elapsed_s']:.2f} s" if "elapsed_s" in self.meta else "",
            self.outcome,
        ]
        branch = "" if top else ("└─ " if last else "├─ ")
        lines = [prefix + branch + "  ".join(p for p in parts if p)]
        below = prefix + ("" if top else ("   " if last else "│  "))
        lines += [
            f"{below}  · {t.get('tool')}  {t.get('outcome')}  {t.get('duration_ms', 0):.1f} ms"
            for t in self.tools
        ]
        for n, child in enumerate(self.children):
            lines += child.render(below, last=n == len(self.children) - 1, top=False)
        return lines

    def total_cost(self) -> float:
        own = float(self.meta.get("cost_usd") or 0.0)
        return own + sum(c.total_cost() for c in self.children)


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
        used = [b for b in turn.get("content", []) if b.get("type") == "tool_use"]
        if turn.get("role") != "assistant" or not used:
            continue
        join = f"{root_id}.{index + 1}"
        calls = [b for b in used if b.get("name") == "delegate"]
        if len(calls) < len(used):  # tools run by the agent itself: their reports
            kept = await bus.join_parts(f"{join}.tools")
            for block in used:
                report = kept.get(f"meta.{block['id']}")
                if report is not None:
                    node.tools.append(json.loads(report))
        answers = await bus.join_parts(join)
        for call in calls:
            to = str((call.get("input") or {}).get("to", "?"))
            msg_id = child_id(join, call["id"])
            child = (
                await read_trace(bus, msg_id, agent=to, depth=depth - 1)
                if depth > 0
                else TraceNode(msg_id, to)
            )
            raw = answers.get(call["id"])
            if raw is not None:
                is_error, body = read_answer(raw)
                child.meta = dict(body.get("_acp") or {})
                child.outcome = (
                    "cancelled" if body.get("cancelled") else "error" if is_error else "answered"
                )
            elif child.outcome == "running" and not child.turns:
                child.outcome = "waiting"
            node.children.append(child)
    return node
