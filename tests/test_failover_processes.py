"""The coordinator's promises across a SIGKILL, with real processes: two coordinators
(leader and standby), a Claude-backed worker on a fake model API, callers using
``acp send``. Calls outlast the lease, so the standby takes over while they run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from fake_anthropic import FakeAnthropic
from test_cli_coordinator import leader, wait_for
from test_cli_worker import ACP, ROOT, env_for, stop

from acp.agents import Usage, load_config
from acp.runtime.bus import RedisBus

CAP = 2
AUDITOR = """---
name: stream-auditor
description: Audits streaming pipelines.
model: sonnet
computational_complexity: medium
---
You audit streaming pipelines and answer in JSON.
"""


def spend_today(url: str) -> float:
    async def read() -> float:
        async with RedisBus.from_url(url) as bus:
            key = "spend." + datetime.now(UTC).strftime("%Y-%m-%d")
            return (await bus.counters(key)).get("total", 0.0)

    return anyio.run(read)


def test_a_sigkilled_leader_with_calls_in_flight_keeps_the_cap_and_the_books(
    redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "stream-auditor.md").write_text(AUDITOR)
    with FakeAnthropic(delay=4.0) as api:  # each call outlasts the 2 s lease
        env = {
            **env_for(redis_url),
            "ACP_AGENTS": str(tmp_path / "agents"),
            "ACP_TIER_SONNET_CONCURRENCY": str(CAP),
            "ANTHROPIC_API_KEY": "test",
            "ANTHROPIC_BASE_URL": api.url,
        }

        def start(*args: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [*ACP, *args], cwd=ROOT, env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip

        first = start("coordinator", "--name", "coord-a", "--lease-ttl", "2")
        wait_for(lambda: leader(redis_url) == "coord-a")
        second = start("coordinator", "--name", "coord-b", "--lease-ttl", "2")
        worker = start("worker", "stream-auditor", "--name", "w1")
        senders: list[subprocess.Popen[str]] = []
        try:
            time.sleep(2.0)  # the worker announces itself, the leader sees it
            for i in range(6):
                body = json.dumps({"cmd": "AUDIT", "component_id": f"c{i}"})
                senders.append(
                    start("send", "stream-auditor", "--json", body, "--wait", "--timeout", "90")
                )
            wait_for(lambda: api.in_flight >= CAP, timeout=30)
            first.send_signal(signal.SIGKILL)  # with CAP calls in flight
            first.communicate(timeout=10)
            wait_for(lambda: leader(redis_url) == "coord-b", timeout=10)
            outs = [s.communicate(timeout=120) for s in senders]
            assert [s.returncode for s in senders] == [0] * 6, [err for _, err in outs]
            replies = [json.loads(out) for out, _ in outs]
            assert all("error" not in r for r in replies), replies
            time.sleep(1.0)  # the last completion events reach the new leader
            recorded = spend_today(redis_url)
        finally:
            for proc in (*senders, first):
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            stop(worker)
            stop(second)
    cfg = load_config(env={k: v for k, v in os.environ.items() if k.startswith("ACP_")})
    billed = sum(cfg.tiers["sonnet"].cost(Usage(**usage)) for _, usage in api.billed)
    assert len(api.billed) == 6, "each command called the API once: nothing lost or doubled"
    assert api.max_in_flight <= CAP, f"{api.max_in_flight} calls at once, cap {CAP}"
    assert recorded == pytest.approx(billed, rel=1e-9)
