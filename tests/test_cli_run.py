"""``acp run``: workflows through a coordinator process, and a coordinator killed mid-workflow."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import redis
from counting_agent import RUNS
from test_cli_coordinator import leader, start_coordinator, wait_for
from test_cli_worker import acp, start_worker, stop


def test_run_wait_prints_the_report(redis_url: str, tmp_path: Path) -> None:
    workflow = {
        "workflow": "health_check",
        "look": {"parallel": [
            {"agent": "pipeline-doctor", "cmd": "PIPELINE_STATUS", "component_id": "orders", "data_flow": {"quality_score": 0.95}},
            {"agent": "pipeline-doctor", "cmd": "PIPELINE_STATUS", "component_id": "refunds", "data_flow": {"quality_score": 0.5}},
        ]},
        "recheck": {"agent": "pipeline-doctor", "cmd": "PIPELINE_STATUS", "component_id": "all"},
    }  # fmt: skip
    path = tmp_path / "health.json"
    path.write_text(json.dumps(workflow))
    coordinator = start_coordinator(redis_url, "c1")
    worker = start_worker(redis_url, "acp.catalogue.pipeline_doctor:agent")
    try:
        wait_for(lambda: leader(redis_url) == "c1")
        done = acp(redis_url, "run", str(path), "--wait", "--json", "--timeout", "60", timeout=90)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        shown = acp(redis_url, "run", str(path), "--wait", timeout=90)
        assert "workflow health_check: succeeded" in shown.stdout
        assert "started: 3 steps" in shown.stdout
    finally:
        stop(worker)
        stop(coordinator)
    assert report["status"] == "succeeded"
    assert [s["status"] for s in report["steps"]] == ["succeeded"] * 3
    outputs = {s["output"]["component_id"]: s["output"]["healthy"] for s in report["steps"]}
    assert outputs == {"orders": True, "refunds": False, "all": True}


def test_a_coordinator_killed_mid_workflow_is_restarted_and_no_step_runs_twice(
    redis_url: str, tmp_path: Path
) -> None:
    steps = [{"agent": "counting-agent", "cmd": "WORK", "n": n, "seconds": 1.0} for n in range(6)]
    workflow = {
        "workflow": "slow",
        "first": {"parallel": steps[:3]},
        "second": {"parallel": steps[3:]},
    }
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(workflow))
    first = start_coordinator(redis_url, "c-first")
    worker = start_worker(redis_url, "counting_agent:agent")
    client = redis.Redis.from_url(redis_url)

    def done() -> list[int]:
        """Every time a step's handler ran, as the agent itself recorded it."""
        return [int(n) for n in client.lrange(RUNS, 0, -1)]

    try:
        wait_for(lambda: leader(redis_url) == "c-first")
        started = acp(redis_url, "run", str(path))
        assert started.returncode == 0, started.stderr
        wait_for(lambda: len(done()) >= 3, timeout=30)  # the first phase has answered
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        time.sleep(0.5)
        second = start_coordinator(redis_url, "c-second")
        try:
            wait_for(lambda: len(done()) >= 6, timeout=60)
            time.sleep(2.0)  # room for any step to run a second time, if one would
        finally:
            stop(second)
    finally:
        stop(worker)
        client.close()
    assert sorted(done()) == list(range(6)), "every step ran, and exactly once"
