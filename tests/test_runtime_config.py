"""The production configuration in runtime/ works as shipped: the server starts
with runtime/valkey.conf, the coordinator with runtime/acp.toml."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import redis

from acp.agents import load_config
from acp.runtime.bus import RedisBus
from acp.runtime.coordinator import Coordinator
from acp.runtime.embedded import EmbeddedServer

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"
#: the launcher owns where the test server listens and keeps its data
MANAGED = {"bind", "port", "dir", "protected-mode", "requirepass"}


def server_settings() -> dict[str, str]:
    settings = {}
    for line in (RUNTIME / "valkey.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            if name not in MANAGED:
                settings[name] = value.strip().strip('"')
    return settings


def test_the_server_runs_with_the_production_settings() -> None:
    settings = server_settings()
    assert settings["appendonly"] == "yes"
    assert settings["maxmemory-policy"] == "noeviction"
    with EmbeddedServer(config=settings) as server:
        client = redis.Redis.from_url(server.url)
        try:
            for name in ("appendonly", "maxmemory-policy", "appendfsync"):
                assert client.config_get(name)[name] == settings[name]
        finally:
            client.close()


@pytest.mark.anyio
async def test_the_coordinator_leads_with_the_shipped_configuration() -> None:
    config = load_config(RUNTIME / "acp.toml", env={})
    assert set(config.tiers) == {"haiku", "sonnet", "opus"}
    async with (
        EmbeddedServer(config=server_settings()) as server,
        RedisBus.from_url(server.url) as bus,
    ):
        coordinator = Coordinator(bus, config)
        async with anyio.create_task_group() as tg:
            await tg.start(coordinator.run)
            with anyio.fail_after(10):
                await coordinator.has_led.wait()
            status = await coordinator.platform_status()
            assert status["data_platform"]["cost_today"]["budget_usd"] == config.budgets.daily_usd
            coordinator.stop()
            tg.cancel_scope.cancel()
