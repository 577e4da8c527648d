"""The bus's delivery options as the runtime configuration sets them, so every
process of a deployment (clients, workers, coordinators) keeps result records
for the same time and count."""

from __future__ import annotations

from typing import Any

from acp.agents.config import RuntimeConfig
from acp.runtime.bus.base import BusOptions

__all__ = ["bus_options"]


def bus_options(config: RuntimeConfig, **overrides: Any) -> BusOptions:
    """``BusOptions`` with ``[results]`` of ``config`` (and ``overrides``) applied."""
    return BusOptions(
        result_ttl=config.results.ttl_s, result_max=config.results.max_entries, **overrides
    )
