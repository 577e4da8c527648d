"""The main job as a newcomer runs it: ``acp demo`` and ``acp up``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from test_cli_worker import ACP, ROOT


def test_demo_runs_on_the_embedded_default_without_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ACP_REDIS_URL")}
    done = subprocess.run(
        [*ACP, "demo", "--messages", "60"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Started a private Redis-protocol server" in out
    assert "Sent 60 PIPELINE_STATUS commands through the coordinator" in out
    assert "both in the dead letters (decode:bad_magic" in out
    assert "PIPELINE_STATUS for acp_demo" in out
    assert "No ANTHROPIC_API_KEY is set" in out
    assert "commands waiting for a worker: 1" in out
    assert "Summary: 61 messages handled" in out

    as_json = subprocess.run(
        [*ACP, "demo", "--messages", "20", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert summary["messages"] == 20
    assert summary["dead_letters"] == 2
    assert summary["claude"] is False


def test_up_runs_until_interrupted_and_stops_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ACP_REDIS_URL")}
    proc = subprocess.Popen(
        [*ACP, "up"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(6)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Redis at redis://127.0.0.1:" in out
    assert "agents running: pipeline-doctor" in out
    assert "pipeline-monitor" in out
    assert "waiting for ANTHROPIC_API_KEY" in out
    assert "stopping" in out


def test_up_on_a_local_cluster_serves_commands_through_the_coordinator() -> None:
    """``acp up --cluster 3``: three primaries with a replica each; the coordinator and
    the workers run on it, and `acp send`, `acp status` and `acp tail` reach them."""
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ACP_REDIS_URL")}
    proc = subprocess.Popen(
        [*ACP, "up", "--cluster", "3"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = ""
        deadline = time.monotonic() + 40
        while "Redis at" not in line:
            assert time.monotonic() < deadline, "acp up --cluster did not start"
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.communicate()[1]
        url = line.split("Redis at ", 1)[1].split(";", 1)[0].strip()
        assert url.startswith("redis+cluster://127.0.0.1:")
        body = json.dumps(
            {"cmd": "PIPELINE_STATUS", "component_id": "etl", "data_flow": {"quality_score": 0.9}}
        )
        sent = subprocess.run(
            [*ACP, "send", "pipeline-doctor", "--json", body, "--wait", "--timeout", "20"],
            cwd=ROOT, env={**env, "ACP_REDIS_URL": url}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["healthy"] is True
        status = subprocess.run(
            [*ACP, "status", "--json"], cwd=ROOT, env={**env, "ACP_REDIS_URL": url},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert "pipeline-doctor" in {w["agent"] for w in json.loads(status.stdout)["workers"]}
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
