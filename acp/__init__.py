"""acp-runtime: run agents that speak the Agent Coordination Protocol."""

__version__ = "0.1.0"
