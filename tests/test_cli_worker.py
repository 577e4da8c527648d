"""``acp worker`` and ``acp send`` as a user runs them: real processes, a real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from acp.protocol import WireCodec
from acp.runtime.keys import GROUP, Keys

ROOT = Path(__file__).resolve().parents[1]
ACP = [sys.executable, "-m", "acp"]


def env_for(url: str) -> dict[str, str]:
    return {**os.environ, "ACP_REDIS_URL": url, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}


def start_worker(url: str, *targets: str, name: str = "w1") -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*ACP, "worker", *targets, "--name", name],
        cwd=ROOT,
        env=env_for(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while not client.hlen("acp:{presence:workers}"):
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"worker exited: {err}")
        assert time.monotonic() < deadline, "worker did not announce itself"
        time.sleep(0.05)
    client.close()
    return proc


def stop(proc: subprocess.Popen[str], timeout: float = 40) -> int:
    """SIGTERM, then wait, reading (and closing) its pipes; its stderr is shown on failure."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout)
    if proc.returncode:
        print(err)
    return proc.returncode


def acp(url: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ACP, *args], cwd=ROOT, env=env_for(url), capture_output=True, text=True, timeout=timeout
    )


def test_send_wait_prints_the_reply_of_a_python_worker(redis_url: str) -> None:
    worker = start_worker(redis_url, "acp.catalogue.pipeline_doctor:agent")
    try:
        body = {
            "cmd": "PIPELINE_STATUS",
            "component_id": "etl",
            "data_flow": {"quality_score": 0.82, "processing_lag": "25m"},
        }
        done = acp(
            redis_url,
            "send",
            "pipeline-doctor",
            "--json",
            json.dumps(body),
            "--wait",
            "--timeout",
            "10",
        )
        assert done.returncode == 0, done.stderr
        reply = json.loads(done.stdout)
        assert reply["healthy"] is False
        assert reply["findings"] == [
            "quality score 82% is below 90%",
            "processing lag 25m is over 15 minutes",
        ]
        human = acp(
            redis_url, "send", "pipeline-doctor", "--json", json.dumps(body), "--wait", "--human"
        )
        assert "reply pipeline-doctor -> " in human.stdout
        assert "quality score 82% is below 90%" in human.stdout
        queued = acp(redis_url, "send", "nobody-yet", "--json", '{"cmd": "HELLO"}')
        assert json.loads(queued.stdout)["to"] == "nobody-yet"
        bad = acp(redis_url, "send", "pipeline-doctor", "--json", "{not json")
        assert bad.returncode == 2
        assert "--json" in bad.stderr
    finally:
        assert stop(worker) == 0


def test_sigterm_with_work_in_flight_loses_nothing(redis_url: str) -> None:
    first = start_worker(redis_url, "slow_agent:agent", name="first")
    for n in range(6):
        sent = acp(
            redis_url,
            "send",
            "slow-agent",
            "--json",
            json.dumps({"cmd": "WORK", "n": n, "seconds": 0.5 + n}),
        )
        assert sent.returncode == 0, sent.stderr
    time.sleep(1.0)
    assert stop(first) == 0  # grace 30 s: everything in flight finishes
    client = redis.Redis.from_url(redis_url)
    try:
        codec = WireCodec()
        done = [codec.decode(f[b"f"]).body["n"] for _, f in client.xrange(Keys("results").stream)]
        pending = client.xpending(Keys("slow-agent").stream, GROUP)["pending"]
        waiting = client.xlen(Keys("slow-agent").stream)
    finally:
        client.close()
    assert sorted(done) == list(range(6))
    assert (pending, waiting) == (0, 0)


def test_a_claude_backed_agent_without_a_key_refuses_to_start(redis_url: str) -> None:
    env = {k: v for k, v in env_for(redis_url).items() if k != "ANTHROPIC_API_KEY"}
    done = subprocess.run(
        [*ACP, "worker", "data-engineer", "--agents", str(ROOT / "acp" / "catalogue" / "agents")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert "ANTHROPIC_API_KEY" in done.stderr
    client = redis.Redis.from_url(redis_url)
    try:
        assert not client.exists(Keys("data-engineer").stream), "it must not touch the queue"
    finally:
        client.close()


def test_send_wait_through_a_claude_backed_worker_and_a_fake_api(
    redis_url: str, tmp_path: Path
) -> None:
    from fake_anthropic import FakeAnthropic

    # a definition that is not in the repository, as a user would bring one; its ACP
    # section declares the reply, in a format of its own
    (tmp_path / "stream-auditor.md").write_text(
        "---\nname: stream-auditor\ndescription: Audits streaming pipelines.\nmodel: sonnet\n"
        "computational_complexity: medium\n---\n\nYou audit streaming pipelines.\n\n"
        "## Agent Coordination Protocol (ACP)\n\n```json\n"
        '{"cmd": "PIPELINE_STATUS", "component_id": "x", "respond_format": "AUDIT_REPORT_v2"}\n'
        "```\n\n### Your reply\n\n```json\n"
        '{"component_id": "x", "diagnosis": "lagging", "recommendations": ["scale"]}\n```\n'
    )
    with FakeAnthropic() as api:
        env = {**env_for(redis_url), "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": api.url}
        worker = subprocess.Popen(
            [*ACP, "worker", "stream-auditor", "--agents", str(tmp_path), "--name", "claude-1"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            body = {
                "cmd": "PIPELINE_STATUS",
                "component_id": "clickstream",
                "respond_format": "AUDIT_REPORT_v2",
            }
            done = subprocess.run(
                [*ACP, "send", "stream-auditor", "--json", json.dumps(body), "--wait", "--timeout", "20"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            reply = json.loads(done.stdout)
        finally:
            assert stop(worker) == 0
    assert reply["component_id"] == "clickstream"
    assert reply["recommendations"] == ["add_partition_pruning", "scale_consumers"]
    assert reply["_acp"]["model"] == "claude-sonnet-5-5"
    assert reply["_acp"]["usage"]["output_tokens"] == 60
    assert reply["_acp"]["cost_usd"] > 0
    (call,) = api.requests
    assert (
        call["headers"]["authorization"] == "Bearer test-key"
    )  # anthropic 2.x sends the key as a bearer token
    # the runtime's preamble first, the definition after it, both under one cache mark
    system = call["body"]["system"]
    assert "Agent Coordination Protocol" in system[0]["text"]
    assert "cache_control" not in system[0]
    assert system[1]["text"].startswith("You audit streaming pipelines.")
    assert system[1]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    # the reply schema the definition declares, from the CLI (no library code)
    schema = call["body"]["output_config"]["format"]["schema"]
    assert set(schema["required"]) == {"component_id", "diagnosis", "recommendations"}
    assert schema["properties"]["recommendations"] == {"type": "array", "items": {"type": "string"}}
    assert json.loads(call["body"]["messages"][0]["content"]) == body
