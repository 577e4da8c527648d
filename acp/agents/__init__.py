"""What an agent is: definition files (Claude Code subagent format) and their ACP messages.

Also the Python agent SDK (handlers per command and the context they get) and
the tier/complexity configuration. Depends on ``acp.protocol`` only; nothing
here knows about a bus or Redis.
"""

from acp.agents.claude import ClaudeAgent, RateLimitSnapshot, claude_client
from acp.agents.config import (
    Budgets,
    ComplexityClass,
    Price,
    RuntimeConfig,
    TierSpec,
    Usage,
    load_config,
)
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
from acp.agents.sdk import Agent, AgentBase, Context, Handler, Reply

__all__ = [
    "COMPLEXITIES",
    "FRONTMATTER_KEYS",
    "MODEL_ALIASES",
    "Agent",
    "AgentBase",
    "AgentDefinition",
    "Budgets",
    "Catalogue",
    "ClaudeAgent",
    "Complexity",
    "ComplexityClass",
    "Context",
    "DeclaredMessage",
    "Handler",
    "Price",
    "RateLimitSnapshot",
    "Reply",
    "RuntimeConfig",
    "Tier",
    "TierSpec",
    "Usage",
    "claude_client",
    "load_catalogue",
    "load_config",
    "load_definition",
    "tier_of",
]
