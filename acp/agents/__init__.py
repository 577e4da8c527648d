"""What an agent is: definition files (Claude Code subagent format) and their ACP messages.

Also the Python agent SDK (handlers per command and the context they get) and
the tier/complexity configuration. Depends on ``acp.protocol`` only; nothing
here knows about a bus or Redis.

The Claude-backed agent (``ClaudeAgent``, ``claude_client``) is imported when
first used: the anthropic SDK takes about a second to import, which a command
that only sends a message should not pay.
"""

from typing import TYPE_CHECKING, Any

from acp.agents.config import (
    Budgets,
    ComplexityClass,
    McpServerConfig,
    Price,
    Results,
    RuntimeConfig,
    TierSpec,
    ToolsConfig,
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
from acp.agents.ratelimits import RateLimitSnapshot, RateLimitWindow
from acp.agents.sdk import Agent, AgentBase, Context, Handler, Reply
from acp.agents.toolbox import Toolbox
from acp.agents.tools import FunctionTool, Tool, tool

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
    "FunctionTool",
    "Handler",
    "McpServerConfig",
    "Price",
    "RateLimitSnapshot",
    "RateLimitWindow",
    "Reply",
    "Results",
    "RuntimeConfig",
    "Tier",
    "TierSpec",
    "Tool",
    "Toolbox",
    "ToolsConfig",
    "Usage",
    "claude_client",
    "load_catalogue",
    "load_config",
    "load_definition",
    "tier_of",
    "tool",
]

if TYPE_CHECKING:
    from acp.agents.claude import ClaudeAgent, claude_client

_LAZY = {"ClaudeAgent", "claude_client"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from acp.agents import claude

        return getattr(claude, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
