"""What an agent is: definition files (Claude Code subagent format) and their ACP messages.

Depends on ``acp.protocol`` only; nothing here knows about a bus or Redis.
"""

from acp.agents.definition import (
    COMPLEXITIES,
    FRONTMATTER_KEYS,
    MODEL_ALIASES,
    AgentDefinition,
    Complexity,
    DeclaredMessage,
    Tier,
    tier_of,
)
from acp.agents.loader import Catalogue, load_catalogue, load_definition

__all__ = [
    "COMPLEXITIES",
    "FRONTMATTER_KEYS",
    "MODEL_ALIASES",
    "AgentDefinition",
    "Catalogue",
    "Complexity",
    "DeclaredMessage",
    "Tier",
    "load_catalogue",
    "load_definition",
    "tier_of",
]
