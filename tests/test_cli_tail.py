"""``acp tail`` follows messages as they flow, without consuming them."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from test_cli_worker import ACP, ROOT, acp, env_for


def test_tail_prints_each_message_as_it_arrives(redis_url: str) -> None:
    acp(redis_url, "send", "data-engineer", "--json", '{"cmd": "WARM_UP"}')  # the queue exists
    tail = subprocess.Popen(
        [*ACP, "tail", "--agent", "data-engineer"], cwd=ROOT, env=env_for(redis_url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.0)
        body = {"cmd": "PIPELINE_STATUS", "component_id": "etl"}
        sent = acp(redis_url, "send", "data-engineer", "--json", json.dumps(body))
        assert sent.returncode == 0, sent.stderr
        time.sleep(1.5)
    finally:
        tail.send_signal(signal.SIGINT)
        out, err = tail.communicate(timeout=20)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [m["body"] for m in lines] == [body], err
    assert lines[0]["to"] == "data-engineer"
    assert lines[0]["from"] == "cli"
