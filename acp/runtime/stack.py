"""``acp up`` in one process: a private Redis-protocol server when no URL is given,
a coordinator, and a worker for every agent in the catalogue that can run.

Python agents always run. Claude-backed agents run when an API key is set;
without one they are listed as waiting for a key, and work sent to them is
parked by the coordinator, not lost.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio
from anyio.abc import TaskStatus

from acp.agents.config import RuntimeConfig
from acp.agents.definition import AgentDefinition
from acp.agents.imports import import_agent
from acp.agents.loader import Catalogue
from acp.agents.sdk import AgentBase
from acp.agents.toolbox import Toolbox
from acp.errors import Stalled
from acp.runtime.cluster import EmbeddedCluster
from acp.runtime.coordinator import Coordinator
from acp.runtime.embedded import EmbeddedServer
from acp.runtime.options import Deployment
from acp.runtime.settings import RedisSettings
from acp.runtime.worker import Worker

__all__ = ["Stack", "StackPlan", "plan_agents"]


@dataclass
class StackPlan:
    agents: list[AgentBase] = field(default_factory=list)
    #: Claude-backed agents not started because no API key is set
    waiting_for_key: list[str] = field(default_factory=list)


def plan_agents(
    catalogue: Catalogue,
    config: RuntimeConfig,
    *,
    extra: Sequence[str] = (),
    api_key: str | None = None,
    base_url: str | None = None,
    cache_ttl: Literal["5m", "1h"] = "5m",
) -> StackPlan:
    """Which agents can run here: every Python agent; Claude ones only with a key."""
    plan = StackPlan()
    key = api_key or os.environ.get("ANTHROPIC_API_KEY")
    client = None
    if key:
        from acp.agents.claude import ClaudeAgent, claude_client  # the SDK loads slowly

        client = claude_client(api_key=key, base_url=base_url)
        toolbox = Toolbox(config.tools)  # one per process: MCP connections are shared
    for definition in catalogue.definitions.values():
        if definition.entrypoint:
            plan.agents.append(_python_agent(definition))
        elif client is not None:
            plan.agents.append(
                ClaudeAgent(
                    definition,
                    client=client,
                    config=config,
                    cache_ttl=cache_ttl,
                    catalogue=catalogue.definitions,
                    toolbox=toolbox,
                )
            )
        else:
            plan.waiting_for_key.append(definition.name)
    names = {a.name for a in plan.agents}
    for spec in extra:
        agent = import_agent(spec)
        if agent.name not in names:
            plan.agents.append(agent)
            names.add(agent.name)
    return plan


def _python_agent(definition: AgentDefinition) -> AgentBase:
    assert definition.entrypoint is not None
    root = Path(definition.path).resolve().parent.parent if definition.path else Path.cwd()
    return import_agent(definition.entrypoint, search=[root])


class Stack:
    """Server (optional), coordinator and one worker, run together until ``stop()``."""

    def __init__(
        self,
        plan: StackPlan,
        config: RuntimeConfig,
        definitions: dict[str, AgentDefinition],
        *,
        redis_url: str | None = None,
        data_dir: str | None = None,
        cluster: int | None = None,
        deployment: Deployment | None = None,
        status_interval: float = 2.0,
    ) -> None:
        self.plan = plan
        self.config = config
        self.definitions = definitions
        self.redis_url = redis_url
        self.data_dir = data_dir
        #: with no ``redis_url``: start a local cluster of this many primaries (one
        #: replica each) instead of one private server
        self.cluster = cluster
        #: bus options, durability and codec (keys, dictionary): from ``config`` and
        #: the environment unless given
        self.deployment = deployment or Deployment.from_config(config)
        self.status_interval = status_interval
        self.url: str | None = None
        self.settings: RedisSettings | None = None
        self.worker: Worker | None = None
        self.coordinator: Coordinator | None = None
        self._stopping = anyio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with AsyncExitStack() as stack:
            url = self.redis_url
            if url is None and self.cluster:
                local = EmbeddedCluster(primaries=self.cluster, replicas=1)
                stack.callback(local.stop)
                await anyio.to_thread.run_sync(local.start)
                url = local.url
            elif url is None:
                server = EmbeddedServer(data_dir=self.data_dir, keep_data=self.data_dir is not None)
                await stack.enter_async_context(server)
                url = server.url
            self.url = url
            deployment = self.deployment
            bus = await stack.enter_async_context(deployment.bus(url))
            self.settings = bus.settings
            coordinator_bus = await stack.enter_async_context(deployment.bus(url))
            self.coordinator = Coordinator(
                coordinator_bus,
                self.config,
                definitions=self.definitions,
                status_interval=self.status_interval,
                codec=deployment.codec,
            )
            async with anyio.create_task_group() as tg:
                await tg.start(self.coordinator.run)
                if self.plan.agents:
                    self.worker = Worker(
                        bus, self.plan.agents, heartbeat=1.0, codec=deployment.codec,
                        delegation=self.config.delegation,
                    )  # fmt: skip
                    await tg.start(self.worker.run)
                with anyio.move_on_after(30):
                    await self.coordinator.has_led.wait()
                if not self.coordinator.has_led.is_set():
                    raise Stalled(
                        f"the coordinator did not take the lead within 30 s on "
                        f"{bus.settings.redacted_url}: another coordinator holds the lease "
                        "(see acp status)"
                    )
                task_status.started()
                await self._stopping.wait()
                if self.worker is not None:
                    self.worker.stop()
                self.coordinator.stop()
