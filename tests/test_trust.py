"""Trust: what a hostile or broken writer on the server can and cannot do.

Each test names the finding of issue 14 it covers; each failed before the fix.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgpack
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from acp.errors import ConfigError, DecodeError, IntegrityError
from acp.protocol import Envelope, KeyRing, MessageKind, WireCodec
from acp.runtime.bus import BusOptions, Outgoing, RedisBus
from acp.runtime.bus.redis import _delivery
from acp.runtime.keys import Keys
from acp.runtime.processor import Processor, to_outgoing

pytestmark = pytest.mark.anyio
FAST = BusOptions(min_idle=0.3, reclaim_interval=0.05, relay_after=0.2, max_deliveries=3)
codec = WireCodec()


async def doubler(env: Envelope) -> Sequence[Envelope]:
    return [env.reply({"n": env.body["n"] * 2})]


def command(n: int, **fields: Any) -> Envelope:
    return Envelope.for_body(
        {"cmd": "DOUBLE", "n": n}, sender="tester", recipient="worker", **fields
    )


def raw_add(url: str, fields: dict[bytes, bytes], dest: str = "worker") -> None:
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.ResponseError):  # the group exists already
        client.xgroup_create(Keys(dest).stream, "workers", id="0", mkstream=True)
    try:
        client.xadd(Keys(dest).stream, fields)  # type: ignore[arg-type]
    finally:
        client.close()


# -- 1. a stream entry that cannot be parsed ---------------------------------------------

GOOD = command(0)
BAD_ENTRIES: list[dict[bytes, bytes]] = [
    {b"m": b"\xff\xfe", b"f": b"zz"},  # an id that is not UTF-8
    {b"m": GOOD.id.encode(), b"f": codec.encode(GOOD), b"a": b"lots"},  # attempts not a number
    {b"m": b"x1", b"f": b"zz", b"h.acp-trace": b"\xc3\x28"},  # a header that is not UTF-8
    {b"m": b"x2", b"f": b"zz", b"r": b"\xff\x1eok"},  # a history that is not UTF-8
    {b"f": b"zz"},  # no id at all
    {b"m": b"x3"},  # no frame
    {b"\xff": b"\xfe"},  # nothing an ACP writer makes
]


async def _run_past(url: str, bad: list[dict[bytes, bytes]]) -> tuple[Processor, list[Any], int]:
    """Bad entries, then good messages: the processor must answer the good ones."""
    for fields in bad:
        raw_add(url, fields)
    async with (
        RedisBus.from_url(url, FAST) as worker_bus,
        RedisBus.from_url(url, FAST) as client,
        anyio.create_task_group() as tg,
    ):
        processor = Processor(worker_bus, "worker", doubler, consumer="w1")
        await tg.start(processor.run)
        replies = []
        for n in (1, 2):
            env = command(n, reply_to=client.inbox)
            reply = await client.request(to_outgoing(env, codec.encode(env)), timeout=10)
            replies.append(codec.decode(reply.frame).body)
        with anyio.fail_after(10):
            while processor.stats.dead_lettered < len(bad):
                await anyio.sleep(0.02)
        dead = await client.dead_letters("worker", count=1000)
        processor.stop()
    return processor, [(d.reason, d.error) for d in dead], len(dead)


async def test_entries_that_cannot_be_parsed_are_dead_lettered_and_work_goes_on(
    redis_url: str,
) -> None:
    processor, dead, count = await _run_past(redis_url, BAD_ENTRIES)
    assert count == len(BAD_ENTRIES)
    reasons = [reason for reason, _ in dead]
    assert set(reasons) <= {"bad_entry", "decode:bad_magic", "decode:truncated"}, dead
    assert reasons.count("bad_entry") >= 5, dead
    entry_errors = [error for reason, error in dead if reason == "bad_entry"]
    assert any("'m'" in e for e in entry_errors), entry_errors  # names the field
    assert any("'a'" in e for e in entry_errors), entry_errors
    assert processor.stats.handled == 2


async def test_a_bad_entry_left_pending_does_not_stop_the_next_worker(redis_url: str) -> None:
    """A worker that died holding a bad entry: its successor drains its pending entries
    (the restart path) and then reads on."""
    raw_add(redis_url, BAD_ENTRIES[0])
    client = redis.Redis.from_url(redis_url)
    try:  # the entry is delivered to w1 (pending), as if w1 died right after reading it
        client.xreadgroup("workers", "w1", {Keys("worker").stream: ">"}, count=10)
    finally:
        client.close()
    processor, dead, count = await _run_past(redis_url, [])
    assert count == 1
    assert dead[0][0] == "bad_entry"
    assert processor.stats.handled == 2


_field_names = st.one_of(
    st.sampled_from([b"m", b"f", b"a", b"r", b"h.acp-corr", b"h.x"]), st.binary(max_size=8)
)
_entries = st.dictionaries(_field_names, st.binary(max_size=40), min_size=1, max_size=6)


@settings(max_examples=500, deadline=None)
@given(fields=_entries, as_list=st.booleans(), times=st.integers(0, 3))
def test_any_stream_entry_is_read_or_said_to_be_unreadable(
    fields: dict[bytes, bytes], as_list: bool, times: int
) -> None:
    """The entry parser never raises, whatever the fields (as redis-py's dict or as the
    flat list a script returns): an entry is either read as written or says why not."""
    raw: Any = [x for pair in fields.items() for x in pair] if as_list else fields
    delivery = _delivery("worker", b"1-0", raw, times)
    if delivery.problem:
        assert delivery.frame == msgpack.packb(fields, use_bin_type=True)
    else:
        assert delivery.msg_id.encode() == fields[b"m"]
        assert delivery.frame == fields[b"f"]
        assert delivery.deliveries == int(fields.get(b"a", b"0")) + times


async def test_a_run_of_random_entries_never_stops_a_worker(redis_url: str) -> None:
    rng = random.Random(14)
    names = [b"m", b"f", b"a", b"r", b"h.acp-corr", b"h.x", b"\xff", b""]
    entries = [
        {rng.choice(names): rng.randbytes(rng.randrange(40)) for _ in range(rng.randrange(1, 6))}
        for _ in range(40)
    ]
    processor, dead, count = await _run_past(redis_url, entries)
    assert count == len(entries)
    assert processor.stats.handled == 2
    assert all(reason for reason, _ in dead)


# -- 4. replays: dedup and the ledger key on the signed envelope id ----------------------

INBOX = "inbox.replayed"


def _inbox_replies(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.xlen(Keys(INBOX).stream))
    finally:
        client.close()


async def _process(
    url: str, *, until_idle: float = 1.0, check_ledger: bool = False
) -> tuple[Processor, list[Envelope]]:
    seen: list[Envelope] = []

    async def counting(env: Envelope) -> Sequence[Envelope]:
        seen.append(env)
        return [env.reply({"n": env.body["n"] * 2})]

    async with RedisBus.from_url(url, FAST) as bus, anyio.create_task_group() as tg:
        processor = Processor(bus, "worker", counting, consumer="w1", check_ledger=check_ledger)
        await tg.start(processor.run)
        await anyio.sleep(until_idle)
        processor.stop()
    return processor, seen


async def test_a_frame_added_under_other_entry_ids_is_dead_lettered_not_run(
    redis_url: str,
) -> None:
    env = command(3, reply_to=INBOX)
    frame = codec.encode(env)
    for n in range(4):
        raw_add(redis_url, {b"m": f"forged-{n}".encode(), b"f": frame})
    processor, seen = await _process(redis_url)
    assert seen == []
    assert processor.stats.dead_lettered == 4
    async with RedisBus.from_url(redis_url) as bus:
        dead = await bus.dead_letters("worker")
    assert {d.reason for d in dead} == {"id_mismatch"}
    assert _inbox_replies(redis_url) == 0


async def test_copies_of_one_message_in_one_batch_run_once_and_answer_once(
    redis_url: str,
) -> None:
    env = command(4, reply_to=INBOX)
    frame = codec.encode(env)
    for _ in range(4):
        raw_add(redis_url, {b"m": env.id.encode(), b"f": frame})
    processor, seen = await _process(redis_url)
    assert [e.id for e in seen] == [env.id]
    assert processor.stats.handled == 1
    assert processor.stats.duplicates == 3
    assert _inbox_replies(redis_url) == 1


@pytest.mark.parametrize("check_ledger", [True, False])
async def test_a_message_replayed_after_its_commit_is_not_run_again(
    redis_url: str, check_ledger: bool
) -> None:
    """Asking the ledger first (agents whose work is paid), a replay is not run; without
    it (plain handlers, which may run twice after a crash anyway) it may run, but its
    commit is refused and no second reply leaves."""
    env = command(5, reply_to=INBOX)
    frame = codec.encode(env)
    raw_add(redis_url, {b"m": env.id.encode(), b"f": frame})
    _, seen_first = await _process(redis_url, check_ledger=check_ledger)
    raw_add(redis_url, {b"m": env.id.encode(), b"f": frame})  # the same frame, later
    second, seen_second = await _process(redis_url, check_ledger=check_ledger)
    assert len(seen_first) == 1
    assert len(seen_second) == (0 if check_ledger else 1)
    assert second.stats.duplicates == 1
    assert _inbox_replies(redis_url) == 1
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.xlen(Keys("worker").stream) == 0  # acknowledged and gone
    finally:
        client.close()


async def test_a_replayed_command_to_a_claude_agent_is_not_paid_for_twice(
    redis_url: str,
) -> None:
    from fake_anthropic import FakeAnthropic

    from acp.agents import AgentDefinition, ClaudeAgent, claude_client, load_config
    from acp.runtime.worker import Worker

    definition = AgentDefinition(
        name="auditor", description="Audits.", model="sonnet",
        computational_complexity="low", system_prompt="You audit and answer in JSON.",
    )  # fmt: skip
    env = Envelope.for_body(
        {"cmd": "AUDIT", "component_id": "c"}, sender="tester", recipient="auditor",
        reply_to=INBOX,
    )  # fmt: skip
    frame = codec.encode(env)
    with FakeAnthropic() as api:
        agent = ClaudeAgent(
            definition, client=claude_client(api_key="test", base_url=api.url),
            config=load_config(env={}),
        )  # fmt: skip
        for _ in range(2):  # the command, then the same frame written again later
            raw_add(redis_url, {b"m": env.id.encode(), b"f": frame}, dest="auditor")
            async with RedisBus.from_url(redis_url, FAST) as bus, anyio.create_task_group() as tg:
                worker = Worker(bus, [agent], heartbeat=0.2)
                await tg.start(worker.run)
                with anyio.fail_after(10):
                    while _inbox_replies(redis_url) == 0:
                        await anyio.sleep(0.05)
                await anyio.sleep(0.5)
                worker.stop()
    assert len(api.requests) == 1
    assert _inbox_replies(redis_url) == 1


# -- 3. the tag covers every header that routes, prices or names a message ---------------

RING = KeyRing({"k1": b"a" * 32})
SIGNED = WireCodec(keys=RING)
COVERED = {
    "id": "0" * 32,
    "kind": MessageKind.REPLY,
    "sender": "impostor",
    "recipient": "costly-agent",
    "correlation_id": "someone-else",
    "reply_to": "inbox.attacker",
    "created_at": 1.0,
    "deadline": 4e9,
    "priority": 9,
    "tier": "opus",
    "tenant": "other-tenant",
    "headers": {"acp-res": "opus|0|16000|9.99|1|0"},
}


def _signed_command() -> Envelope:
    return Envelope.for_body(
        {"cmd": "AUDIT", "component_id": "c"}, sender="client", recipient="auditor",
        reply_to="inbox.client", correlation_id="c-1", deadline=time.time() + 60,
        tier="haiku", tenant="acme", priority=3,
    )  # fmt: skip


def _rewritten(frame: bytes, **changes: Any) -> bytes:
    """What someone who can write the stream but holds no key can do: decode, change
    fields, keep the original tag, encode again."""
    env = WireCodec(verify=False).decode(frame)
    return WireCodec(verify=False).encode(env.evolve(**changes, hash=env.hash))


@pytest.mark.parametrize("field", sorted(COVERED))
def test_rewriting_a_covered_header_breaks_the_signature(field: str) -> None:
    frame = SIGNED.encode(_signed_command())
    assert SIGNED.decode(frame).sender == "client"
    with pytest.raises(IntegrityError):
        SIGNED.decode(_rewritten(frame, **{field: COVERED[field]}))


def test_the_delivery_count_and_trace_context_may_change_on_the_way() -> None:
    frame = SIGNED.encode(_signed_command())
    hop = _rewritten(frame, attempt=3, traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    assert SIGNED.decode(hop).attempt == 3


def test_unsigned_frames_and_unknown_keys_are_refused_where_signatures_are_required() -> None:
    env = _signed_command()
    with pytest.raises(IntegrityError, match="unsigned"):
        SIGNED.decode(WireCodec().encode(env))
    other = WireCodec(keys=KeyRing({"k9": b"b" * 32}))
    with pytest.raises(IntegrityError, match="unknown key id 'k9'"):
        SIGNED.decode(other.encode(env))
    # during a rollout of keys: sign, and still accept unsigned frames
    rollout = WireCodec(keys=RING, require_signatures=False)
    assert rollout.decode(WireCodec().encode(env)).id == env.id
    with pytest.raises(ConfigError, match="no key ring"):
        WireCodec(require_signatures=True)


def test_body_only_signatures_are_read_only_during_an_upgrade() -> None:
    env = _signed_command()
    body = msgpack.packb(env.body, use_bin_type=True)
    v2 = "h2.k1." + base64.urlsafe_b64encode(
        hmac.digest(b"a" * 32, body, "sha256")[:16]
    ).decode().rstrip("=")
    frame = WireCodec(verify=False).encode(env.evolve(hash=v2))
    with pytest.raises(IntegrityError, match="covers the body only"):
        SIGNED.decode(frame)
    upgrading = WireCodec(keys=RING, legacy_signatures=True)
    assert upgrading.decode(frame).id == env.id


# -- 8. times that are not times ----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("created_at", math.nan), ("created_at", math.inf), ("created_at", -5.0),
     ("deadline", math.inf), ("deadline", math.nan), ("deadline", 1e300)],
)  # fmt: skip
def test_headers_that_are_not_times_are_refused(field: str, value: float) -> None:
    env = command(1).evolve(**{field: value})
    with pytest.raises(DecodeError, match=f"bad_header.*{field}"):
        codec.decode(codec.encode(env))
    with pytest.raises(ValidationError):
        Envelope.model_validate({**command(1).model_dump(), field: value})


# -- 7. dead letters cannot be used to fill the server -----------------------------------


async def test_dead_letters_keep_a_capped_copy_and_a_bounded_stream(
    bus_backend: Any,
) -> None:
    """A 10 MB frame is kept as its first 64 KiB with its size and hash, is never
    replayed as if whole, and the dead-letter stream keeps only the newest dead_max."""
    big = b"\x93" + random.Random(14).randbytes(10 * 1024 * 1024)
    options = BusOptions(min_idle=0.3, reclaim_interval=0.05, dead_max=3)
    async with bus_backend(options) as bus, anyio.create_task_group() as tg:
        await bus.send_many([Outgoing("worker", "big", big)])
        await bus.send_many([Outgoing("worker", f"junk{i}", b"not a frame") for i in range(4)])
        processor = Processor(bus, "worker", doubler, consumer="w1")
        await tg.start(processor.run)
        with anyio.fail_after(20):
            while processor.stats.dead_lettered < 5:
                await anyio.sleep(0.05)
        processor.stop()
    async with bus_backend(options) as bus:
        letters = await bus.dead_letters("worker")
        assert len(letters) == 3, "the oldest two were trimmed"
        assert sum(processor.bus.dead_trimmed.values()) == 2
    # the big one alone, with room for it
    options = BusOptions(min_idle=0.3, reclaim_interval=0.05)
    async with bus_backend(options) as bus, anyio.create_task_group() as tg:
        await bus.purge("worker")
        await bus.send_many([Outgoing("worker", "big2", big)])
        processor = Processor(bus, "worker", doubler, consumer="w1")
        await tg.start(processor.run)
        with anyio.fail_after(20):
            while processor.stats.dead_lettered < 1:
                await anyio.sleep(0.05)
        processor.stop()
        (letter,) = await bus.dead_letters("worker")
        assert letter.cut
        assert letter.size == len(big)
        assert letter.frame == big[: options.dead_payload_max]
        assert letter.sha256 == hashlib.sha256(big).hexdigest()
        assert await bus.replay("worker") == 0, "a cut frame is not replayed"


# -- 2, 6 and 11. the command line: key ring, required signatures, durability, URL file --

ROOT = Path(__file__).resolve().parents[1]
DOCTOR = "acp.catalogue.pipeline_doctor:agent"
STATUS_BODY = json.dumps({"cmd": "PIPELINE_STATUS", "component_id": "etl"})


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACP_", "ANTHROPIC_"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _acp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acp", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _dead(url: str, dest: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(url)
    try:
        rows = client.xrange(Keys(dest).dead)
    finally:
        client.close()
    return [{k.decode(): v.decode(errors="replace") for k, v in f.items()} for _, f in rows]


def test_the_command_line_signs_and_requires_signatures(redis_url: str, tmp_path: Path) -> None:
    """A worker given a key ring (in a file, and its server URL in a file too) answers
    sends signed with it, dead-letters unsigned and wrongly signed ones as
    'integrity', and the dead-letter tools say why."""
    keys = tmp_path / "keys"
    keys.write_text("# oldest first\nk1=" + "s" * 32 + "\n")
    url_file = tmp_path / "url"
    url_file.write_text(redis_url + "\n")
    worker_env = _cli_env(ACP_HMAC_KEYS_FILE=str(keys))
    worker = subprocess.Popen(
        [sys.executable, "-m", "acp", "worker", DOCTOR, "--redis-url-file", str(url_file)],
        cwd=ROOT, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        signed = _cli_env(ACP_REDIS_URL=redis_url, ACP_HMAC_KEYS="k1=" + "s" * 32)
        done = _acp("send", "pipeline-doctor", "--json", STATUS_BODY, "--wait", env=signed)
        assert done.returncode == 0, done.stderr
        assert "component_id" in json.loads(done.stdout), done.stdout
        unsigned = _cli_env(ACP_REDIS_URL=redis_url)
        assert _acp("send", "pipeline-doctor", "--json", STATUS_BODY, env=unsigned).returncode == 0
        forged = _cli_env(ACP_REDIS_URL=redis_url, ACP_HMAC_KEYS="k1=" + "f" * 32)
        assert _acp("send", "pipeline-doctor", "--json", STATUS_BODY, env=forged).returncode == 0
        deadline = time.monotonic() + 30
        while len(_dead(redis_url, "pipeline-doctor")) < 2:
            assert time.monotonic() < deadline, "unsigned and forged sends were not refused"
            time.sleep(0.1)
        dead = _dead(redis_url, "pipeline-doctor")
        assert [d["reason"] for d in dead] == ["integrity", "integrity"]
        assert "unsigned" in dead[0]["error"], dead[0]["error"]
        shown = _acp("dlq", "show", "pipeline-doctor", _dead_ids(redis_url)[1], "--json",
                     env=signed)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["signature"].startswith("refused: integrity")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=40)


def _dead_ids(url: str) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        return [i.decode() for i, _ in client.xrange(Keys("pipeline-doctor").dead)]
    finally:
        client.close()


def test_required_signatures_without_a_key_ring_stop_a_command_at_once(redis_url: str) -> None:
    env = _cli_env(ACP_REDIS_URL=redis_url, ACP_WIRE_REQUIRE_SIGNATURES="true")
    done = _acp("send", "pipeline-doctor", "--json", STATUS_BODY, env=env)
    assert done.returncode == 1
    assert "signatures are required but no key ring" in done.stderr


def test_safe_durability_is_chosen_from_the_command_line(
    isolated_redis_server: Any,
) -> None:
    """A server without an append-only file cannot promise "safe": asked for it by
    flag, variable or config, every writing command says so instead of writing."""
    url = isolated_redis_server.url
    client = redis.Redis.from_url(url)
    client.config_set("appendonly", "no")
    try:
        env = _cli_env(ACP_REDIS_URL=url)
        flag = _acp("send", "x", "--json", STATUS_BODY, "--durability", "safe", env=env)
        variable = _acp(
            "send", "x", "--json", STATUS_BODY, env={**env, "ACP_BUS_DURABILITY": "safe"}
        )
        for done in (flag, variable):
            assert done.returncode == 1
            assert "safe durability needs" in done.stderr
        assert client.xlen(Keys("x").stream) == 0
        fast = _acp("send", "x", "--json", STATUS_BODY, env=env)
        assert fast.returncode == 0, fast.stderr
        assert client.xlen(Keys("x").stream) == 1
    finally:
        client.config_set("appendonly", "yes")
        client.close()


def test_the_deployment_reads_the_wire_and_bus_settings(tmp_path: Path) -> None:
    from acp.runtime import Deployment

    keys = tmp_path / "ring"
    keys.write_text("old=" + "o" * 20 + ", new=" + "n" * 20)
    env = {
        "ACP_WIRE_DICTIONARY": "1",
        "ACP_WIRE_LEGACY_SIGNATURES": "true",
        "ACP_BUS_DEAD_MAX": "500",
        "ACP_HMAC_KEYS_FILE": str(keys),
    }
    deployment = Deployment.load(env=env)
    assert deployment.codec.dictionary == 1
    assert deployment.codec.legacy_signatures
    assert deployment.codec.require_signatures, "a key ring makes signatures required"
    assert deployment.codec.keys is not None
    assert deployment.codec.keys.signing_key_id == "new"
    assert deployment.options.dead_max == 500
    assert deployment.durability == "fast"
    assert Deployment.load(env=env, durability="safe").durability == "safe"
    with pytest.raises(ConfigError, match="ACP_HMAC_KEYS"):
        Deployment.load(env={"ACP_HMAC_KEYS": "no-equals-sign"})
    with pytest.raises(ConfigError, match="bus"):
        Deployment.load(env={"ACP_BUS_DURABILITY": "sometimes"})


def test_help_says_a_password_on_the_command_line_shows_in_ps() -> None:
    done = _acp("worker", "--help", env=_cli_env(COLUMNS="200"))
    assert "shows in `ps`" in done.stdout
    assert "--redis-url-file" in done.stdout
    assert "--durability" in done.stdout
