"""Turn what a user names (an agent in the catalogue, or ``module:attr``) into agents.

A definition with an ``entrypoint`` is a Python agent; one without is backed by
Claude. Claude-backed agents are built before anything connects, so a worker
without an API key refuses to start and consumes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from acp.agents.definition import AgentDefinition
from acp.agents.imports import import_agent
from acp.agents.loader import Catalogue
from acp.agents.sdk import AgentBase
from acp.errors import ConfigError

__all__ = ["resolve_targets"]

ClaudeFactory = Callable[[AgentDefinition], AgentBase]


def resolve_targets(
    targets: Sequence[str],
    *,
    catalogue: Catalogue,
    claude: ClaudeFactory | None = None,
) -> list[AgentBase]:
    """Agents for ``targets``, in order; duplicates are refused.

    ``claude`` builds Claude-backed agents; it is only called for definitions
    without an entrypoint (and may raise ``MissingAPIKey``).
    """
    agents: list[AgentBase] = []
    for target in targets:
        if ":" in target:
            agents.append(import_agent(target))
            continue
        definition = catalogue.get(target)  # UnknownAgent names the close matches
        if definition.entrypoint:
            # a project's catalogue sits beside its code: make that importable too
            root = Path(definition.path).resolve().parent.parent if definition.path else Path.cwd()
            agent = import_agent(definition.entrypoint, search=[root])
            if agent.name != definition.name:
                raise ConfigError(
                    f"{definition.entrypoint} is agent {agent.name!r}, but definition {definition.name!r} names it"
                )
            agents.append(agent)
        elif claude is None:
            raise ConfigError(f"{target!r} is Claude-backed; no Claude client was configured")
        else:
            agents.append(claude(definition))
    names = [a.name for a in agents]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"agents named more than once: {', '.join(duplicates)}")
    return agents
