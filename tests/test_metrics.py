"""Prometheus metrics from a real worker and coordinator, scraped over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import anyio
import pytest
from test_cli_coordinator import leader, wait_for
from test_cli_worker import ACP, ROOT, acp, env_for, stop

from acp.runtime.metrics import Metrics, Sample, serve_metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.mark.anyio
async def test_the_text_format() -> None:
    metrics = Metrics()
    metrics.inc("messages_handled_total", {"agent": "a", "outcome": "ok"}, 2, help="handled")
    metrics.observe("message_latency_seconds", 0.02, {"agent": "a"})

    async def gauges() -> list[Sample]:
        return [Sample("queue_depth", 3, {"agent": "a"}, "depth")]

    metrics.collector(gauges)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_metrics, metrics, 0)
        text = await anyio.to_thread.run_sync(scrape, port)
        tg.cancel_scope.cancel()
    assert 'acp_messages_handled_total{agent="a",outcome="ok"} 2' in text
    assert 'acp_message_latency_seconds_bucket{agent="a",le="0.025"} 1' in text
    assert 'acp_message_latency_seconds_count{agent="a"} 1' in text
    assert "# TYPE acp_queue_depth gauge" in text
    assert 'acp_queue_depth{agent="a"} 3' in text


def test_workers_and_coordinators_serve_metrics(redis_url: str) -> None:
    worker_port, coordinator_port = free_port(), free_port()
    env = env_for(redis_url)
    coordinator = subprocess.Popen(
        [*ACP, "coordinator", "--name", "m1", "--lease-ttl", "2", "--metrics-port", str(coordinator_port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    worker = subprocess.Popen(
        [*ACP, "worker", "acp.catalogue.pipeline_doctor:agent", "--metrics-port", str(worker_port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: leader(redis_url) == "m1")
        time.sleep(1.0)
        body = json.dumps({"cmd": "PIPELINE_STATUS", "component_id": "etl"})
        for _ in range(3):
            done = acp(
                redis_url, "send", "pipeline-doctor", "--json", body, "--wait", "--timeout", "15"
            )
            assert done.returncode == 0, done.stderr
        from_worker = scrape(worker_port)
        from_coordinator = scrape(coordinator_port)
    finally:
        stop(worker)
        stop(coordinator)
    assert 'acp_messages_handled_total{agent="pipeline-doctor",outcome="ok"} 3' in from_worker
    assert 'acp_message_latency_seconds_count{agent="pipeline-doctor"} 3' in from_worker
    assert 'acp_queue_depth{agent="pipeline-doctor"}' in from_worker
    assert 'acp_coordinator_leading{id="m1"} 1' in from_coordinator
    assert 'acp_rate_limit_headroom{kind="output_tokens",tier="opus"}' in from_coordinator
    assert 'acp_destination_depth{destination="pipeline-doctor"}' in from_coordinator
