"""Workflow bodies as an ordered plan: phases of steps, run in parallel or in sequence.

Real definitions write workflows in a few shapes; all become one ``WorkflowSpec``:

* ``{"workflow": name, "<phase>": {"agent": ...}, "<phase>": {"parallel": [...]}}``
* ``{"project": name, "phases": [{"phase": p, "agents": [...], "parallel": true}, ...]}``
* ``{"decision": ..., "sequential_review": [{"agent": ...}, ...]}`` (any key with a step list)

A step is an agent plus the rest of its object as the task payload.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from acp.errors import SchemaError

__all__ = ["Phase", "Step", "WorkflowSpec", "parse_workflow"]

Mode = Literal["parallel", "sequential"]
_GROUP_KEYS = ("parallel", "sequential")


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    agent: str
    payload: dict[str, Any] = {}


class Phase(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    mode: Mode = "sequential"
    steps: tuple[Step | Phase, ...]


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    phases: tuple[Phase, ...]
    #: top-level fields that are not phases (``orchestrator``, ``outcome``, ...)
    meta: dict[str, Any] = {}

    def agents(self) -> list[str]:
        """Every agent the workflow involves, in first-use order."""
        seen: dict[str, None] = {}

        def walk(node: Step | Phase) -> None:
            if isinstance(node, Step):
                seen.setdefault(node.agent)
            else:
                for child in node.steps:
                    walk(child)

        for phase in self.phases:
            walk(phase)
        return list(seen)


def _step(value: dict[str, Any], path: str) -> Step:
    agent = value.get("agent")
    if not isinstance(agent, str) or not agent:
        raise SchemaError("workflow", [(f"{path}.agent", "a step needs an agent name")])
    return Step(agent=agent, payload={k: v for k, v in value.items() if k != "agent"})


def _node(value: Any, name: str, path: str) -> Step | Phase | None:
    """A step or group from one JSON value; None when the value is not workflow-shaped."""
    if isinstance(value, list):
        mode: Mode = "parallel" if "parallel" in name else "sequential"
        return _group(name, mode, value, path)
    if not isinstance(value, dict):
        return None
    for key in _GROUP_KEYS:
        items = value.get(key)
        if isinstance(items, list):
            return _group(name, key, items, f"{path}.{key}")  # type: ignore[arg-type]
    agents = value.get("agents")
    if isinstance(agents, list) and agents:
        mode = "parallel" if value.get("parallel") is True else "sequential"
        payload = {k: v for k, v in value.items() if k not in ("agents", "parallel")}
        if not all(isinstance(a, str) and a for a in agents):
            raise SchemaError("workflow", [(f"{path}.agents", "agents must be names")])
        label = str(value.get("phase") or value.get("stage") or name)
        return Phase(
            name=label, mode=mode, steps=tuple(Step(agent=a, payload=payload) for a in agents)
        )
    if "agent" in value:
        return _step(value, path)
    return None


def _group(name: str, mode: Mode, items: list[Any], path: str) -> Phase | None:
    steps: list[Step | Phase] = []
    for i, item in enumerate(items):
        node = _node(item, f"{name}[{i}]", f"{path}[{i}]")
        if node is None:
            return None
        steps.append(node)
    return Phase(name=name, mode=mode, steps=tuple(steps)) if steps else None


def parse_workflow(body: dict[str, Any]) -> WorkflowSpec:
    """The plan in a workflow body; raises ``SchemaError`` when no phase can be found."""
    name = next(
        (
            body[k]
            for k in ("workflow", "project", "decision", "name")
            if isinstance(body.get(k), str)
        ),
        "workflow",
    )
    phases: list[Phase] = []
    meta: dict[str, Any] = {}
    for key, value in body.items():
        if key == "phases" and isinstance(value, list):
            for i, item in enumerate(value):
                node = _node(item, f"phase_{i + 1}", f"phases[{i}]")
                if node is None:
                    raise SchemaError(
                        "workflow", [(f"phases[{i}]", "not a step or a group of steps")]
                    )
                phases.append(
                    node if isinstance(node, Phase) else Phase(name=f"phase_{i + 1}", steps=(node,))
                )
            continue
        node = _node(value, key, key)
        if node is None:
            meta[key] = value
        else:
            phases.append(node if isinstance(node, Phase) else Phase(name=key, steps=(node,)))
    if not phases:
        raise SchemaError("workflow", [("", "no phase with an agent was found")])
    return WorkflowSpec(name=name, phases=tuple(phases), meta=meta)
