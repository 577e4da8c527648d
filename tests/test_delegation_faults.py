"""Delegation survives crashes (issue 15.5): 20 root requests each delegating to 2
children, through real worker and coordinator processes on a real server and a
loopback fake Anthropic API; the worker is SIGKILLed 3 times during the run, the
coordinator once and the server once (safe durability, restarted on its data).

Every root gets exactly one reply; no model turn the runtime recorded is paid for
again (a call repeated for the same conversation and turn is only allowed when a
kill fell inside the earlier call, before the runtime could record its answer);
no child command is answered twice."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from acp.runtime import Client, RedisBus
from tests.fake_anthropic import FakeAnthropic

ROOT = Path(__file__).resolve().parents[1]
ROOTS = 20

LEAD = """---
name: release-lead
description: Plans a release and asks the pipeline checker about each component.
model: haiku
computational_complexity: low
delegates_to: [pipeline-checker]
---
You are the release lead. Ask the pipeline-checker, then decide.
"""
CHECKER = """---
name: pipeline-checker
description: Checks one data pipeline component and says whether it is healthy.
model: haiku
computational_complexity: low
---
You are the pipeline checker. Reply in compact JSON.
"""


def answer(request: dict[str, Any], number: int) -> str | dict[str, Any] | None:
    system = " ".join(block["text"] for block in request["system"])
    messages = request["messages"]
    asked = json.loads(messages[0]["content"])
    if "release lead" not in system:
        return json.dumps({"component_id": asked.get("component_id"), "healthy": True})
    if len(messages) == 1:
        calls = [
            {
                "type": "tool_use",
                "id": f"toolu_{i}",
                "name": "delegate",
                "input": {
                    "to": "pipeline-checker",
                    "body": {"cmd": "PIPELINE_STATUS", "component_id": f"{asked['n']}-{i}"},
                },
            }
            for i in range(2)
        ]
        return {"content": calls, "stop_reason": "tool_use"}
    results = [b for b in messages[-1]["content"] if b["type"] == "tool_result"]
    return json.dumps({"release": asked["n"], "answers": len(results)})


def _key(request: dict[str, Any]) -> tuple[str, int]:
    """(which conversation, which turn) a call is."""
    asked = json.loads(request["messages"][0]["content"])
    who = str(asked.get("n", asked.get("component_id")))
    return who, len(request["messages"])


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)


@pytest.mark.timeout(180)
def test_twenty_trees_survive_three_worker_kills(
    isolated_redis_server: Any, tmp_path: Path
) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "release-lead.md").write_text(LEAD)
    (agents / "pipeline-checker.md").write_text(CHECKER)
    url = isolated_redis_server.url
    with FakeAnthropic(delay=0.2, answer=answer) as api:
        env = {
            **os.environ,
            "ACP_REDIS_URL": url,
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": api.url,
            "ACP_BUS_DURABILITY": "safe",
            "PYTHONPATH": str(ROOT),
        }
        acp = [sys.executable, "-m", "acp"]
        worker_cmd = [*acp, "worker", "release-lead", "pipeline-checker", "--agents",
                      str(agents), "--name", "w1", "--concurrency", "4"]  # fmt: skip
        log = tmp_path / "processes.log"
        coordinator_cmd = [*acp, "coordinator", "--agents", str(agents)]
        coordinator = _start(coordinator_cmd, env, log)
        worker = _start(worker_cmd, env, log)
        kills: list[float] = []
        replies: dict[str, list[dict[str, Any]]] = defaultdict(list)

        async def main() -> None:
            nonlocal worker, coordinator
            async with RedisBus.from_url(url) as bus, anyio.create_task_group() as tg:
                client = Client(bus, sender="tester", via="coordinator")

                async def one(n: int) -> None:
                    body = {"cmd": "PLAN_RELEASE", "n": n, "respond_format": "STRUCTURED_JSON"}
                    reply = await client.request("release-lead", body, timeout=150)
                    replies[str(n)].append(reply.body)

                async def killer() -> None:
                    nonlocal worker, coordinator
                    for round_ in range(3):
                        # a kill in the middle of the work: after this worker made
                        # some calls, while others are in flight
                        seen = len(api.calls)
                        while len(api.calls) < seen + 8 or api.in_flight == 0:
                            await anyio.sleep(0.01)
                        worker.send_signal(signal.SIGKILL)
                        kills.append(time.monotonic())
                        await anyio.to_thread.run_sync(worker.wait)
                        worker = _start(worker_cmd, env, log)
                        if round_ == 1:  # and the coordinator once, mid-run
                            coordinator.send_signal(signal.SIGKILL)
                            await anyio.to_thread.run_sync(coordinator.wait)
                            coordinator = _start(coordinator_cmd, env, log)
                        if round_ == 2:  # and the server (safe mode: nothing acked is lost)
                            server = isolated_redis_server
                            await anyio.to_thread.run_sync(server.kill)
                            await anyio.sleep(0.5)
                            await anyio.to_thread.run_sync(server.restart)

                async with anyio.create_task_group() as requests:
                    requests.start_soon(killer)
                    for n in range(ROOTS):
                        requests.start_soon(one, n)
                tg.cancel_scope.cancel()

        try:
            anyio.run(main)
        finally:
            for proc in (worker, coordinator):
                proc.send_signal(signal.SIGTERM)
            for proc in (worker, coordinator):
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    proc.kill()
        assert len(kills) == 3
        assert sorted(replies, key=int) == [str(n) for n in range(ROOTS)]
        for n, got in replies.items():
            assert len(got) == 1, f"root {n} answered {len(got)} times"
            assert got[0]["release"] == int(n)
            assert got[0]["answers"] == 2
        # a repeated call is allowed only when a kill fell inside the one before it
        by_turn: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
        for started, answered, request in api.calls:
            by_turn[_key(request)].append((started, answered))
        repeats = 0
        for key, windows in by_turn.items():
            windows.sort()
            for (start, end), _ in itertools.pairwise(windows):
                repeats += 1
                assert any(start <= k <= end + 0.1 for k in kills), (
                    f"{key} paid twice with no kill during the first call"
                )
        assert len(by_turn) == ROOTS * 2 + ROOTS * 2  # two lead turns, two children each
        cut = len(api.billed) - len(api.calls)
        print(f"{len(api.calls)} calls answered, {cut} cut by a kill, {repeats} repeated")
        dead = redis.Redis.from_url(url)
        try:
            assert dead.xlen("acp:{release-lead}:dead") == 0
            assert dead.xlen("acp:{pipeline-checker}:dead") == 0
        finally:
            dead.close()
