"""``acp coordinator`` and ``acp status`` as an operator runs them, failover included."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import redis
from test_cli_worker import ACP, ROOT, acp, env_for, start_worker, stop

from acp.runtime.keys import lease_keys


def start_coordinator(url: str, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*ACP, "coordinator", "--name", name, "--lease-ttl", "2", "--status-interval", "0.5"],
        cwd=ROOT, env=env_for(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def leader(url: str) -> str | None:
    client = redis.Redis.from_url(url)
    try:
        value = client.get(lease_keys("coordinator")[0])
    finally:
        client.close()
    return value.decode().split("|")[0] if value else None


def wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_sigkilled_leader_is_replaced_and_work_keeps_flowing(redis_url: str) -> None:
    first = start_coordinator(redis_url, "coord-a")
    wait_for(lambda: leader(redis_url) == "coord-a")
    second = start_coordinator(redis_url, "coord-b")
    worker = start_worker(redis_url, "acp.catalogue.pipeline_doctor:agent")
    body = json.dumps(
        {"cmd": "PIPELINE_STATUS", "component_id": "etl", "data_flow": {"quality_score": 0.95}}
    )
    try:
        before = acp(
            redis_url, "send", "pipeline-doctor", "--json", body, "--wait", "--timeout", "15"
        )
        assert before.returncode == 0, before.stderr
        assert json.loads(before.stdout)["healthy"] is True

        status = json.loads(acp(redis_url, "status", "--json").stdout)
        assert {w["agent"] for w in status["workers"]} == {"pipeline-doctor"}
        assert {c["id"] for c in status["coordinators"]} == {"coord-a", "coord-b"}
        assert "coordinator" in status["queues"]

        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        started = time.monotonic()
        wait_for(lambda: leader(redis_url) == "coord-b")
        takeover = time.monotonic() - started
        after = acp(
            redis_url, "send", "pipeline-doctor", "--json", body, "--wait", "--timeout", "15"
        )
        assert after.returncode == 0, after.stderr
        assert takeover < 5, f"standby took {takeover:.1f}s to lead"
        wait_for(
            lambda: json.loads(acp(redis_url, "status", "--json").stdout)["platform"] is not None
        )
    finally:
        stop(worker)
        assert stop(second) == 0
