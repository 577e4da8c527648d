"""Envelope, ids, body kinds, typed commands, workflows, text form and rendering."""

from __future__ import annotations

import time

import pytest

from acp.errors import DecodeError, SchemaError
from acp.protocol import (
    AssignCommand,
    CommandModel,
    CommandRegistry,
    Envelope,
    MessageKind,
    PipelineStatusCommand,
    WireCodec,
    body_from_text,
    classify_body,
    envelope_from_text,
    envelope_to_text,
    id_time,
    new_id,
    parse_workflow,
    render_body,
    render_envelope,
)
from acp.protocol.check import same_json


def test_ids_sort_by_creation_and_are_unique() -> None:
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert abs(id_time(ids[-1]) - time.time()) < 5


def test_ids_are_unique_across_threads_and_a_forked_child() -> None:
    import subprocess
    import sys
    import threading

    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(new_id() for _ in range(20_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in made for i in out]
    assert len(set(every)) == len(every)
    assert all(out == sorted(out) for out in made)

    # a fresh interpreter, since forking one that runs threads is frowned upon
    script = (
        "import os\n"
        "from acp.protocol import new_id\n"
        "read, write = os.pipe()\n"
        "before = new_id()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(write, new_id().encode())\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(before, os.read(read, 64).decode(), new_id())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, child, after = out.stdout.split()
    # the child draws its sequence again: its low 80 bits do not follow the parent's
    assert int(child[12:], 16) - int(before[12:], 16) not in range(1, 4)
    assert child not in (before, after)


def test_ids_keep_sorting_when_the_wall_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from acp.protocol import ids

    first = new_id()
    monkeypatch.setattr(ids, "_clock", lambda: time.time_ns() - 3_600_000_000_000)
    later = [new_id() for _ in range(100)]
    assert [first, *later] == sorted([first, *later])
    assert len(set(later)) == len(later)


def test_envelope_is_immutable_and_reply_keeps_the_thread() -> None:
    env = Envelope.for_body(
        {"cmd": "ASSIGN", "to": "x"}, sender="a", recipient="b", traceparent="tp", tenant="t1"
    )
    with pytest.raises(ValueError, match="frozen"):
        env.sender = "z"  # type: ignore[misc]
    reply = env.reply({"ok": True})
    assert (
        reply.sender,
        reply.recipient,
        reply.correlation_id,
        reply.traceparent,
        reply.tenant,
    ) == (
        "b",
        "a",
        env.id,
        "tp",
        "t1",
    )
    assert reply.kind is MessageKind.REPLY


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"cmd": "PIPELINE_STATUS", "component_id": "x"}, MessageKind.COMMAND),
        ({"data_platform": {"pipelines": {"running": 1}}, "hash": "h"}, MessageKind.STATUS),
        ({"security_status": {"risk_level": "low"}}, MessageKind.STATUS),
        ({"workflow": "w", "a": {"agent": "x", "delivers": "y"}}, MessageKind.WORKFLOW),
        ({"project": "p", "phases": [{"phase": "a", "agents": ["x"]}]}, MessageKind.WORKFLOW),
        ({"query": "BLOCKER_STATUS"}, MessageKind.EVENT),
    ],
)
def test_bodies_are_classified(body: dict[str, object], kind: MessageKind) -> None:
    assert classify_body(body) is kind


def test_typed_command_keeps_unknown_fields_and_names_bad_paths() -> None:
    registry = CommandRegistry.with_builtins()
    body = {
        "cmd": "PIPELINE_STATUS",
        "component_id": "c",
        "data_flow": {"quality_score": 0.5, "extra": 1},
        "zz": [1],
    }
    cmd = registry.parse(body)
    assert isinstance(cmd, PipelineStatusCommand)
    assert cmd.model_extra == {"zz": [1]}
    assert cmd.data_flow.model_extra == {"extra": 1}
    with pytest.raises(SchemaError) as info:
        registry.parse(
            {"cmd": "PIPELINE_STATUS", "component_id": "c", "data_flow": {"quality_score": 3}}
        )
    assert info.value.errors[0][0] == "data_flow.quality_score"
    with pytest.raises(SchemaError, match="to"):
        registry.parse({"cmd": "ASSIGN"})
    assert registry.parse({"cmd": "UNKNOWN_THING", "a": 1}) is None


def test_users_extend_their_own_registry() -> None:
    registry = CommandRegistry.with_builtins()

    @registry.register
    class Deploy(CommandModel):
        command = "DEPLOY"
        service: str

    assert isinstance(registry.parse({"cmd": "DEPLOY", "service": "api"}), Deploy)
    assert "DEPLOY" not in CommandRegistry.with_builtins()
    assert isinstance(registry.parse({"cmd": "ASSIGN", "to": "db"}), AssignCommand)


def test_workflow_shapes_become_phases() -> None:
    spec = parse_workflow(
        {
            "workflow": "release",
            "build": {"agent": "builder", "delivers": "artifact"},
            "checks": {
                "parallel": [{"agent": "qa", "task": "tests"}, {"agent": "sec", "task": "scan"}]
            },
            "ship": {"sequential": [{"agent": "ops", "task": "deploy"}]},
        }
    )
    assert [(p.name, p.mode) for p in spec.phases] == [
        ("build", "sequential"),
        ("checks", "parallel"),
        ("ship", "sequential"),
    ]
    assert spec.agents() == ["builder", "qa", "sec", "ops"]
    with pytest.raises(SchemaError):
        parse_workflow({"workflow": "empty", "note": "nothing"})


def test_text_form_round_trips_and_reports_bad_input() -> None:
    env = Envelope.for_body({"cmd": "X", "v": [1, 2.0, "é"]}, sender="a", recipient="b", priority=9)
    back = envelope_from_text(envelope_to_text(env))
    assert back == env
    assert same_json(back.body, env.body)
    assert '"from":"a"' in envelope_to_text(env)
    with pytest.raises(DecodeError) as info:
        body_from_text("[1, 2]")
    assert info.value.reason == "bad_body"
    with pytest.raises(DecodeError) as info:
        envelope_from_text('{"kind": "command", "from": "a", "body": {}}')
    assert "to" in str(info.value) or "recipient" in str(info.value)


def test_status_renders_as_a_few_readable_lines() -> None:
    text = render_body(
        {
            "data_platform": {"pipelines": {"running": 23, "failed": 1, "success_rate": 0.97}},
            "optimization": ["cache_hot_data"],
            "hash": "label",
        }
    )
    assert "success rate 97%" in text
    assert "cache hot data" in text
    assert "label" not in text
    env = Envelope.for_body(
        {"cmd": "PIPELINE_STATUS", "component_id": "etl"}, sender="m", recipient="d"
    )
    assert "PIPELINE_STATUS for etl" in render_envelope(env)
    assert "m -> d" in render_envelope(env)


def test_replies_render_with_their_envelope_kind() -> None:
    from acp.protocol import MessageKind

    cmd = Envelope.for_body({"cmd": "X"}, sender="a", recipient="b")
    ok = render_envelope(cmd.reply({"healthy": True, "findings": []}))
    assert "reply b -> a" in ok
    assert "findings: none" in ok
    failed = render_envelope(
        cmd.reply({"error": "schema", "detail": "bad"}, kind=MessageKind.ERROR)
    )
    assert "error: schema" in failed
    assert "detail: bad" in failed


def test_changing_one_envelope_leaves_the_others_alone() -> None:
    codec = WireCodec()
    a, b = (codec.decode(codec.encode(Envelope.for_body({"n": n}, sender="s", recipient="r")))
            for n in (1, 2))  # fmt: skip
    fields = set(b.model_fields_set)
    changed = a.evolve(attempt=3, headers={"x": "y"})
    assert (changed.attempt, a.attempt, b.attempt) == (3, 1, 1)
    assert b.model_fields_set == fields == a.model_fields_set
    assert b.model_dump(exclude_unset=True) == b.model_dump()
