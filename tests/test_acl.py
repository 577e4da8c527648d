"""Least-privilege Redis (issue 14.9): each role of ``runtime/users.acl``, loaded into
a real server, can do its job and nothing it should not; a denial or a wrong password
is a typed error at once, never a retry loop or a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis

from acp.agents import load_config
from acp.agents.imports import import_agent
from acp.catalogue import choose_agents
from acp.errors import AccessDenied
from acp.runtime import Client, Coordinator, RedisBus, Worker
from acp.runtime.embedded import EmbeddedServer
from acp.runtime.status import read_status

ROOT = Path(__file__).resolve().parents[1]
ACL_FILE = ROOT / "runtime" / "users.acl"
ROLES = ("acp-worker", "acp-sender", "acp-coordinator", "acp-observer", "acp-operator")
STATUS = {"cmd": "PIPELINE_STATUS", "component_id": "etl"}


def acl_lines() -> dict[str, list[str]]:
    """Each user's rules as ``ACL SETUSER`` takes them (a selector is one argument)."""
    users = {}
    for line in ACL_FILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("user "):
            _, name, *rules = re.findall(r"\([^)]*\)|\S+", line)
            users[name] = rules
    return users


@pytest.fixture(scope="module")
def acl_server() -> Iterator[EmbeddedServer]:
    server = EmbeddedServer()
    server.start()
    admin = redis.Redis.from_url(server.url)
    try:
        for name, rules in acl_lines().items():
            admin.execute_command("ACL", "SETUSER", name, *rules, "on", f">pw-{name}")
        yield server
    finally:
        admin.close()
        server.stop()


def as_user(server: EmbeddedServer, user: str, password: str | None = None) -> str:
    return f"redis://{user}:{password or 'pw-' + user}@127.0.0.1:{server.port}/0"


def test_the_file_names_every_role_and_they_are_off_without_a_password() -> None:
    users = acl_lines()
    assert set(users) == set(ROLES)
    for rules in users.values():
        assert rules[:2] == ["off", "resetpass"], "shipped switched off, with no password"
        assert "+time" in rules, "the scripts call TIME"
        assert not any(r in rules for r in ("+@all", "+flushall", "+config|set", "allkeys"))


def test_the_roles_run_the_main_job_together(acl_server: EmbeddedServer) -> None:
    """Worker, coordinator, sender and observer, each as its own user: a command goes
    through the coordinator to the agent and back, and the observer sees it all."""

    async def main() -> None:
        agent = import_agent("acp.catalogue.pipeline_doctor:agent")
        definitions = choose_agents(None).load().definitions
        async with (
            RedisBus.from_url(as_user(acl_server, "acp-worker")) as worker_bus,
            RedisBus.from_url(as_user(acl_server, "acp-coordinator")) as coordinator_bus,
            RedisBus.from_url(as_user(acl_server, "acp-sender")) as sender_bus,
            RedisBus.from_url(as_user(acl_server, "acp-observer")) as observer_bus,
            anyio.create_task_group() as tg,
        ):
            worker = Worker(worker_bus, [agent], heartbeat=0.5)
            coordinator = Coordinator(
                coordinator_bus, load_config(), definitions=definitions, status_interval=0.3
            )
            await tg.start(coordinator.run)
            await tg.start(worker.run)
            assert sender_bus.inbox.startswith("inbox.acp-sender.")
            via = Client(sender_bus, sender="cli", via="coordinator")
            reply = await via.request("pipeline-doctor", STATUS, timeout=20)
            assert reply.body["component_id"] == "etl"
            direct = await Client(sender_bus, sender="cli").request(
                "pipeline-doctor", STATUS, timeout=20
            )
            assert direct.body["component_id"] == "etl"
            with anyio.fail_after(10):
                while not (await read_status(observer_bus)).get("platform"):
                    await anyio.sleep(0.2)
            status = await read_status(observer_bus)
            assert "pipeline-doctor" in status["queues"]
            worker.stop()
            coordinator.stop()

    anyio.run(main)


def _denied(url: str, what: str, work: object) -> None:
    async def main() -> None:
        async with RedisBus.from_url(url, reconnect_timeout=30) as bus:
            started = time.monotonic()
            with pytest.raises(AccessDenied, match=r"denied user 'acp-\w+'"):
                await work(bus)  # type: ignore[operator]
            assert time.monotonic() - started < 1.0, f"{what}: retried instead of refusing"

    anyio.run(main)


def test_a_worker_cannot_read_other_queues_or_touch_the_coordinators_keys(
    acl_server: EmbeddedServer,
) -> None:
    url = as_user(acl_server, "acp-worker")
    _denied(url, "another agent's queue", lambda bus: bus.entries("database-administrator"))
    _denied(url, "the coordinator's intake", lambda bus: bus.entries("coordinator"))
    _denied(url, "the leader lease", lambda bus: bus.lease("coordinator", "me", ttl=5))
    _denied(url, "the coordinator's counters", lambda bus: bus.counters("spend"))
    _denied(url, "a dead-letter stream", lambda bus: bus.dead_letters("coordinator"))


def test_a_sender_cannot_read_queues_or_other_senders_replies(
    acl_server: EmbeddedServer,
) -> None:
    url = as_user(acl_server, "acp-sender")
    _denied(url, "an agent's queue", lambda bus: bus.entries("pipeline-doctor"))
    _denied(url, "another user's inbox", lambda bus: bus.entries("inbox.alice.0123"))
    _denied(url, "dead letters", lambda bus: bus.purge("pipeline-doctor"))
    raw = redis.Redis.from_url(url)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            raw.xrange("acp:{pipeline-doctor}:in")
        with pytest.raises(redis.exceptions.NoPermissionError):
            raw.flushall()
    finally:
        raw.close()


def test_an_observer_looks_but_cannot_change(acl_server: EmbeddedServer) -> None:
    url = as_user(acl_server, "acp-observer")
    _denied(url, "a replay", lambda bus: bus.replay("pipeline-doctor"))
    _denied(url, "a purge", lambda bus: bus.purge("pipeline-doctor"))


def test_without_time_the_scripts_are_refused_by_name(acl_server: EmbeddedServer) -> None:
    admin = redis.Redis.from_url(acl_server.url)
    rules = [r for r in acl_lines()["acp-sender"] if r != "+time"]
    admin.execute_command("ACL", "SETUSER", "notime", *rules, "on", ">pw-notime")
    admin.close()

    async def main() -> None:
        async with RedisBus.from_url(as_user(acl_server, "notime")) as bus:
            with pytest.raises(AccessDenied, match="time"):
                await Client(bus).send("pipeline-doctor", STATUS)

    with pytest.raises(AccessDenied, match="time"):
        anyio.run(main)  # at connect (the clock sync), or at the first script


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acp", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_wrong_password_and_a_denial_are_one_line_at_once(acl_server: EmbeddedServer) -> None:
    started = time.monotonic()
    wrong = _cli("status", "--redis", as_user(acl_server, "acp-observer", "nope"))
    assert time.monotonic() - started < 15  # the interpreter's start; no 4 s of retries
    assert wrong.returncode == 1
    assert "refused user 'acp-observer'" in wrong.stderr
    assert "nope" not in wrong.stderr + wrong.stdout, "the password is never shown"
    assert "Traceback" not in wrong.stderr
    admin = redis.Redis.from_url(acl_server.url)
    admin.sadd("acp:destinations", "pipeline-doctor")
    admin.xadd("acp:{pipeline-doctor}:dead", {"m": "x", "f": "y", "reason": "test"})
    admin.close()
    denied = _cli("dlq", "purge", "pipeline-doctor", "--all", "--yes", "--redis",
                  as_user(acl_server, "acp-observer"))  # fmt: skip
    assert denied.returncode == 1
    assert "denied user 'acp-observer'" in denied.stderr
    assert "Traceback" not in denied.stderr
