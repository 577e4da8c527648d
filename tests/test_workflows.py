"""Durable workflows: the real shapes run in order, in parallel where asked, each step
once, through a coordinator restart, with a report of outcome, cost and time."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from acp.agents import Agent, Context
from acp.protocol import MessageKind, PipelineStatusCommand, WireCodec, parse_workflow
from acp.protocol.envelope import Envelope
from acp.runtime.bus import Bus, BusOptions, MemoryBroker, MemoryBus, RedisBus
from acp.runtime.client import Client, new_traceparent
from acp.runtime.keys import WORKFLOW_INTAKE, WORKFLOW_REPLIES, WORKFLOW_TOPIC, workflow_key
from acp.runtime.keys import WORKFLOWS_ACTIVE as ACTIVE_KEY
from acp.runtime.processor import Processor
from acp.runtime.worker import Worker
from acp.runtime.workflows import (
    MemoryWorkflowStore,
    RedisWorkflowStore,
    WorkflowRunner,
    WorkflowStore,
    send_via,
    step_id,
)

pytestmark = pytest.mark.anyio
FAST = BusOptions(min_idle=2.0, reclaim_interval=0.1)
REPORTS = "tester.reports"
EXAMPLES = Path(__file__).parent.parent / "acp" / "catalogue" / "workflows"
codec = WireCodec()

AUDIO = {
    "workflow": "podcast_production",
    "pre_production": {"agent": "tv-writer", "delivers": "script_outline"},
    "recording": {"agent": "audio-engineer", "delivers": "raw_recordings"},
    "post_production": {
        "parallel": [
            {"agent": "audio-engineer", "task": "editing_mixing"},
            {"agent": "digital-artist", "task": "cover_art"},
        ]
    },
    "distribution": {"agent": "devops-engineer", "distributes": "podcast_platforms"},
}
SAAS = {
    "project": "saas_platform",
    "phases": [
        {"phase": "architecture", "agents": ["full-stack-architect", "the-critic"]},
        {
            "phase": "implementation",
            "agents": ["full-stack-architect", "data-engineer"],
            "parallel": True,
        },
        {
            "phase": "quality",
            "agents": ["qa-test-engineer", "security-audit-specialist"],
            "parallel": True,
        },
        {"phase": "deployment", "agents": ["devops-engineer"]},
    ],
    "orchestrator": "manages_handoffs_and_integration",
}
REVIEW = {
    "decision": "should_we_build_growth_hacker_agent",
    "sequential_review": [
        {"agent": "the-realist", "asks": "Is there actual demand?"},
        {"agent": "the-pragmatist", "asks": "Can we validate demand cheaply?"},
        {"agent": "the-critic", "asks": "Is the validation approach rigorous?"},
    ],
    "outcome": "Build 5 commands for 90-day validation instead of full agent",
}
#: a phase, a parallel pair, a last phase: the shape the policy and restart tests use
THREE = {
    "workflow": "three",
    "prepare": {"agent": "a", "task": "prepare"},
    "build": {"parallel": [{"agent": "b", "task": "left"}, {"agent": "c", "task": "right"}]},
    "ship": {"agent": "d", "task": "ship"},
}
THREE_PATHS = ["1.prepare.1", "2.build.1", "2.build.2", "3.ship.1"]


# -- harness --------------------------------------------------------------------------


@dataclass
class Backend:
    make_bus: Callable[[], AbstractAsyncContextManager[Bus]]
    make_store: Callable[[Bus], WorkflowStore]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        broker, store = MemoryBroker(), MemoryWorkflowStore()
        return Backend(lambda: MemoryBus(broker, FAST), lambda bus: store)
    url = request.getfixturevalue("redis_url")

    def redis_store(bus: Bus) -> WorkflowStore:
        assert isinstance(bus, RedisBus)
        return RedisWorkflowStore(bus.redis)

    return Backend(lambda: RedisBus.from_url(url, FAST), redis_store)


@dataclass
class Recorder:
    """What the test agents saw and did, and how each step should behave."""

    calls: Counter[str] = field(default_factory=Counter)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    envs: dict[str, Envelope] = field(default_factory=dict)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    gated: set[str] = field(default_factory=set)
    gate: anyio.Event = field(default_factory=anyio.Event)

    def agent(self, name: str) -> Agent:
        agent = Agent(name)

        @agent.command()
        async def step(_: Any, ctx: Context) -> dict[str, Any] | None:
            body = ctx.envelope.body  # typed commands arrive as models: read the raw body
            path = body["step"]
            self.calls[ctx.envelope.id] += 1
            self.bodies[path], self.envs[path] = body, ctx.envelope
            started = time.monotonic()
            if path in self.gated:
                await self.gate.wait()
            await anyio.sleep(self.delays.get(path, 0.0))
            self.spans[path] = (started, time.monotonic())
            if path in self.silent:
                return None
            if path in self.fail:
                return {"error": "boom", "detail": f"{name} broke {path}"}
            return {"by": name, "did": path, "_acp": {"cost_usd": self.costs.get(path, 0.01)}}

        return agent

    def agents(self, body: dict[str, Any]) -> list[Agent]:
        return [self.agent(n) for n in parse_workflow(body).agents()]

    def ran_once(self, workflow_id: str, paths: list[str]) -> None:
        assert dict(self.calls) == {step_id(workflow_id, p): 1 for p in paths}


@dataclass
class Harness:
    bus: Bus
    runner: WorkflowRunner
    client: Client


@asynccontextmanager
async def running(
    backend: Backend, agents: list[Agent], **runner_options: Any
) -> AsyncIterator[Harness]:
    """Workers for ``agents`` and a runner, each on its own bus (as separate processes)."""
    async with (
        backend.make_bus() as worker_bus,
        backend.make_bus() as bus,
        anyio.create_task_group() as tg,
    ):
        await tg.start(Worker(worker_bus, agents, heartbeat=0.2, grace=1).run)
        runner = WorkflowRunner(bus, backend.make_store(bus), **runner_options)
        await tg.start(runner.run)
        yield Harness(bus, runner, Client(bus, sender="tester"))
        tg.cancel_scope.cancel()


def workflow(body: dict[str, Any], **fields: Any) -> Envelope:
    fields.setdefault("reply_to", REPORTS)
    return Envelope.for_body(
        body, sender="tester", recipient=WORKFLOW_INTAKE, traceparent=new_traceparent(), **fields
    )


async def reports(bus: Bus, *, wait: float = 20.0, quiet: float = 0.3) -> list[Envelope]:
    """Every report on the tester's destination: waits for the first, then ``quiet`` more."""
    found: list[Envelope] = []
    with anyio.move_on_after(wait):
        while True:
            batch = await bus.consume(REPORTS, "tester", block=quiet if found else 0.5)
            await bus.commit("tester", [(d, ()) for d in batch])
            found += [codec.decode(d.frame) for d in batch]
            if found and not batch:
                break
    return found


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {s["step"]: s["status"] for s in report["steps"]}


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


# -- the shapes of real definitions ---------------------------------------------------


async def test_audio_engineer_shape_runs_phases_in_order_and_the_parallel_group_at_once(
    backend: Backend,
) -> None:
    rec = Recorder()
    post = ("3.post_production.1", "3.post_production.2")
    rec.delays.update(dict.fromkeys(post, 0.4))
    rec.costs.update({"1.pre_production.1": 0.02, "3.post_production.2": 0.25})
    async with running(backend, rec.agents(AUDIO)) as h:
        reply = await h.client.request(WORKFLOW_INTAKE, AUDIO, timeout=20)
    report = reply.body
    assert reply.kind is MessageKind.REPLY
    assert report["workflow"] == "podcast_production"
    assert report["status"] == "succeeded"
    assert [(s["step"], s["agent"]) for s in report["steps"]] == [
        ("1.pre_production.1", "tv-writer"),
        ("2.recording.1", "audio-engineer"),
        ("3.post_production.1", "audio-engineer"),
        ("3.post_production.2", "digital-artist"),
        ("4.distribution.1", "devops-engineer"),
    ]
    # each phase gets the previous phase's outputs, keyed by step path
    assert rec.bodies["2.recording.1"]["inputs"] == {
        "1.pre_production.1": {"by": "tv-writer", "did": "1.pre_production.1"}
    }
    for path in post:
        assert list(rec.bodies[path]["inputs"]) == ["2.recording.1"]
    assert sorted(rec.bodies["4.distribution.1"]["inputs"]) == list(post)
    # the parallel pair really ran at the same time
    assert overlap(rec.spans[post[0]], rec.spans[post[1]])
    # the step command: a WORKFLOW_STEP carrying the sender's task whole, on the same trace
    body = rec.bodies["3.post_production.2"]
    assert body["cmd"] == "WORKFLOW_STEP"
    assert body["workflow"] == "podcast_production"
    assert body["task"] == {"task": "cover_art"}
    assert rec.bodies["4.distribution.1"]["task"] == {"distributes": "podcast_platforms"}
    assert {e.traceparent for e in rec.envs.values()} == {reply.traceparent}
    # outcome, cost and time per step, and the totals
    by_step = {s["step"]: s for s in report["steps"]}
    assert by_step["3.post_production.2"]["cost_usd"] == 0.25
    assert by_step["3.post_production.2"]["output"] == {
        "by": "digital-artist",
        "did": "3.post_production.2",
    }
    assert by_step["3.post_production.1"]["seconds"] >= 0.4
    assert report["cost_usd"] == pytest.approx(0.02 + 0.01 + 0.01 + 0.25 + 0.01)
    assert report["seconds"] >= 0.4
    rec.ran_once(reply.correlation_id or "", list(by_step))


async def test_project_orchestrator_phases_with_parallel_true(backend: Backend) -> None:
    rec = Recorder()
    rec.delays.update(dict.fromkeys(["2.implementation.1", "2.implementation.2"], 0.4))
    rec.delays["1.architecture.1"] = 0.1
    async with running(backend, rec.agents(SAAS)) as h:
        env = workflow(SAAS)
        assert await h.runner.start(env) == env.id
        (reply,) = await reports(h.bus)
    report = reply.body
    assert reply.correlation_id == env.id
    assert report["status"] == "succeeded"
    assert report["workflow"] == "saas_platform"
    assert [s["step"] for s in report["steps"]] == [
        "1.architecture.1",
        "1.architecture.2",
        "2.implementation.1",
        "2.implementation.2",
        "3.quality.1",
        "3.quality.2",
        "4.deployment.1",
    ]
    # "architecture" has no "parallel": the critic goes second and sees the architect's work
    assert rec.spans["1.architecture.2"][0] >= rec.spans["1.architecture.1"][1]
    assert list(rec.bodies["1.architecture.2"]["inputs"]) == ["1.architecture.1"]
    assert rec.bodies["1.architecture.1"]["inputs"] == {}
    assert overlap(rec.spans["2.implementation.1"], rec.spans["2.implementation.2"])
    for path in ("2.implementation.1", "2.implementation.2"):
        assert sorted(rec.bodies[path]["inputs"]) == ["1.architecture.1", "1.architecture.2"]
        assert rec.bodies[path]["task"] == {"phase": "implementation"}
    assert sorted(rec.bodies["4.deployment.1"]["inputs"]) == ["3.quality.1", "3.quality.2"]
    rec.ran_once(env.id, [s["step"] for s in report["steps"]])


async def test_a_sequential_list_runs_in_order_through_a_scheduling_intake(
    backend: Backend,
) -> None:
    """Steps routed through another destination (as the coordinator's intake does)."""
    rec = Recorder()
    rec.delays.update(dict.fromkeys(["1.sequential_review.1", "1.sequential_review.2"], 0.1))
    async with backend.make_bus() as relay_bus, anyio.create_task_group() as relay:

        async def forward(env: Envelope) -> list[Envelope]:
            return [env]  # a stand-in scheduler: straight on to env.recipient

        intake = Processor(relay_bus, "steps.intake", forward, accept=lambda env: True)
        await relay.start(intake.run)
        async with running(backend, rec.agents(REVIEW)) as h:
            h.runner.send_step = send_via(h.bus, "steps.intake")
            env = workflow(REVIEW)
            await h.runner.start(env)
            (reply,) = await reports(h.bus)
        relay.cancel_scope.cancel()
    paths = ["1.sequential_review.1", "1.sequential_review.2", "1.sequential_review.3"]
    assert [s["step"] for s in reply.body["steps"]] == paths
    assert [s["agent"] for s in reply.body["steps"]] == [
        "the-realist",
        "the-pragmatist",
        "the-critic",
    ]
    assert rec.spans[paths[1]][0] >= rec.spans[paths[0]][1]
    assert rec.spans[paths[2]][0] >= rec.spans[paths[1]][1]
    # each step gets the previous step's output
    assert rec.bodies[paths[0]]["inputs"] == {}
    assert list(rec.bodies[paths[1]]["inputs"]) == [paths[0]]
    assert list(rec.bodies[paths[2]]["inputs"]) == [paths[1]]
    assert rec.bodies[paths[2]]["task"] == {"asks": "Is the validation approach rigorous?"}
    assert intake.stats.handled == 3
    rec.ran_once(env.id, paths)


async def test_nested_groups_a_sequence_inside_a_parallel_group(backend: Backend) -> None:
    body = {
        "workflow": "nested",
        "build": {
            "parallel": [
                {"sequential": [{"agent": "a", "task": "one"}, {"agent": "b", "task": "two"}]},
                {"agent": "c", "task": "alongside"},
            ]
        },
        "ship": {"agent": "d"},
    }
    rec = Recorder()
    rec.delays.update({"1.build.1.1": 0.2, "1.build.1.2": 0.2, "1.build.2": 0.5})
    async with running(backend, rec.agents(body)) as h:
        env = workflow(body)
        await h.runner.start(env)
        (reply,) = await reports(h.bus)
    assert outcomes(reply.body) == {
        "1.build.1.1": "succeeded",
        "1.build.1.2": "succeeded",
        "1.build.2": "succeeded",
        "2.ship.1": "succeeded",
    }
    assert rec.spans["1.build.1.2"][0] >= rec.spans["1.build.1.1"][1]
    assert overlap(rec.spans["1.build.2"], rec.spans["1.build.1.1"])
    assert list(rec.bodies["1.build.1.2"]["inputs"]) == ["1.build.1.1"]
    assert rec.bodies["1.build.2"]["inputs"] == {}
    assert sorted(rec.bodies["2.ship.1"]["inputs"]) == ["1.build.1.1", "1.build.1.2", "1.build.2"]


async def test_a_task_naming_its_command_reaches_the_typed_handler(backend: Backend) -> None:
    doctor = Agent("pipeline-doctor")

    @doctor.command(PipelineStatusCommand)
    async def diagnose(cmd: PipelineStatusCommand, ctx: Context) -> dict[str, Any]:
        return {"component_id": cmd.component_id, "healthy": cmd.data_flow.quality_score == 1}

    task = {
        "cmd": "PIPELINE_STATUS",
        "component_id": "orders_etl",
        "data_flow": {"quality_score": 1.0},
        "step": "a task field that clashes with the runner's",
    }
    body = {"workflow": "check", "diagnose": {"agent": "pipeline-doctor", **task}}
    async with running(backend, [doctor]) as h:
        reply = await h.client.request(WORKFLOW_INTAKE, body, timeout=20)
    (step,) = reply.body["steps"]
    assert step["status"] == "succeeded"
    assert step["output"] == {"component_id": "orders_etl", "healthy": True}


async def test_the_release_example_runs(backend: Backend) -> None:
    body = json.loads((EXAMPLES / "release.json").read_text())
    rec = Recorder()
    async with running(backend, rec.agents(body)) as h:
        reply = await h.client.request(WORKFLOW_INTAKE, body, timeout=20)
    assert reply.body["status"] == "succeeded"
    assert [s["step"] for s in reply.body["steps"]] == [
        "1.triage.1",
        "2.readiness.1",
        "2.readiness.2.1",
        "2.readiness.2.2",
        "3.go_no_go.1",
    ]
    measure = rec.bodies["2.readiness.2.1"]
    assert (measure["cmd"], measure["window_s"]) == ("MEASURE", 5)
    # a step naming its command sends each of its fields once (no copy under "task")
    triage = rec.bodies["1.triage.1"]
    assert "task" not in triage
    assert triage["request"]["title"] == "Open issues tagged release-1.4"
    assert list(rec.bodies["2.readiness.2.2"]["inputs"]) == ["1.triage.1", "2.readiness.2.1"]
    assert rec.envs["1.triage.1"].deadline is not None


# -- failure policy -------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["stop", "continue"])
async def test_failure_policy(backend: Backend, policy: str) -> None:
    rec = Recorder()
    rec.fail.add("2.build.1")
    rec.delays["2.build.2"] = 0.3  # still running when its sibling fails
    body = {**THREE, "failure_policy": policy}
    async with running(backend, rec.agents(THREE)) as h:
        env = workflow(body)
        await h.runner.start(env)
        (reply,) = await reports(h.bus)
    report = reply.body
    by_step = {s["step"]: s for s in report["steps"]}
    assert by_step["2.build.1"]["status"] == "failed"
    assert by_step["2.build.1"]["output"]["error"] == "boom"
    # the sibling in flight is waited for: its outcome and cost are in the report
    assert by_step["2.build.2"]["status"] == "succeeded"
    assert by_step["2.build.2"]["cost_usd"] == 0.01
    if policy == "stop":
        assert report["status"] == "failed"
        assert by_step["3.ship.1"]["status"] == "skipped"
        assert by_step["3.ship.1"]["output"] is None
        assert step_id(env.id, "3.ship.1") not in rec.calls
    else:
        assert report["status"] == "partial"
        assert by_step["3.ship.1"]["status"] == "succeeded"
        # later phases run with the partial results: the failed step's output is absent
        assert list(rec.bodies["3.ship.1"]["inputs"]) == ["2.build.2"]
    assert report["failure_policy"] == policy


async def test_a_step_without_a_reply_times_out(backend: Backend) -> None:
    rec = Recorder()
    rec.silent.add("2.build.2")
    options = {"step_timeout": 0.5, "sweep_interval": 0.1, "timeout_grace": 0.1}
    async with running(backend, rec.agents(THREE), **options) as h:
        env = workflow(THREE)
        await h.runner.start(env)
        (reply,) = await reports(h.bus)
    assert outcomes(reply.body) == {
        "1.prepare.1": "succeeded",
        "2.build.1": "succeeded",
        "2.build.2": "timed_out",
        "3.ship.1": "skipped",
    }
    assert reply.body["status"] == "failed"
    # the step command carried the deadline, so a late worker would not run it
    sent = rec.envs["2.build.2"]
    assert sent.deadline is not None
    assert sent.deadline - sent.created_at == pytest.approx(0.5)


async def test_a_bad_workflow_is_answered_with_an_error(backend: Backend) -> None:
    async with running(backend, [Recorder().agent("a")]) as h:
        no_plan = await h.client.request(WORKFLOW_INTAKE, {"workflow": "empty"}, timeout=10)
        bad_policy = await h.client.request(
            WORKFLOW_INTAKE, {**THREE, "failure_policy": "retry"}, timeout=10
        )
        bad_agent = await h.client.request(
            WORKFLOW_INTAKE, {"workflow": "x", "p": {"agent": "no such {agent}"}}, timeout=10
        )
    assert bad_agent.body["fields"][0]["path"] == "1.p.1.agent"
    assert no_plan.kind is MessageKind.ERROR
    assert no_plan.body["error"] == "schema"
    assert bad_policy.body["fields"] == [
        {"path": "failure_policy", "message": "must be 'stop' or 'continue'"}
    ]


# -- durability -----------------------------------------------------------------------


async def test_a_restarted_runner_finishes_the_workflow_and_no_step_runs_twice(
    backend: Backend,
) -> None:
    rec = Recorder()
    rec.gated.update({"2.build.1", "2.build.2"})
    async with (
        backend.make_bus() as worker_bus,
        anyio.create_task_group() as workers,
    ):
        await workers.start(Worker(worker_bus, rec.agents(THREE), heartbeat=0.2, grace=1).run)
        env = workflow(THREE)
        async with backend.make_bus() as bus, anyio.create_task_group() as first:
            runner = WorkflowRunner(bus, backend.make_store(bus))
            await first.start(runner.run)
            await runner.start(env)
            # the first phase is done and the second is with its agents: the runner dies
            with anyio.fail_after(10):
                while len(rec.calls) < 3:
                    await anyio.sleep(0.02)
            view = await runner.progress(env.id)
            assert view is not None
            assert [p["status"] for p in view["phases"]] == ["succeeded", "running", "pending"]
            first.cancel_scope.cancel()
        # the agents answer while no runner is alive: the replies wait on the bus
        rec.gate.set()
        await anyio.sleep(0.3)
        async with backend.make_bus() as bus, anyio.create_task_group() as second:
            runner = WorkflowRunner(bus, backend.make_store(bus))
            await second.start(runner.run)
            found = await reports(bus)
            second.cancel_scope.cancel()
        workers.cancel_scope.cancel()
    (reply,) = found
    assert reply.body["status"] == "succeeded"
    assert list(rec.bodies["3.ship.1"]["inputs"]) == ["2.build.1", "2.build.2"]
    rec.ran_once(env.id, THREE_PATHS)


async def test_a_crash_between_recording_a_reply_and_sending_the_next_step(
    backend: Backend,
) -> None:
    """The runner dies inside the reply handler, after the result is stored and
    before the next phase is sent: the next runner sends it, once."""
    rec = Recorder()
    async with (
        backend.make_bus() as worker_bus,
        anyio.create_task_group() as workers,
    ):
        await workers.start(Worker(worker_bus, rec.agents(THREE), heartbeat=0.2, grace=1).run)
        env = workflow(THREE)
        async with backend.make_bus() as bus, anyio.create_task_group() as first:
            runner = WorkflowRunner(bus, backend.make_store(bus))
            plain = runner.send_step

            async def crash_before_the_last_phase(step: Envelope) -> None:
                if step.body["step"] == "3.ship.1":
                    first.cancel_scope.cancel()
                    await anyio.sleep_forever()
                await plain(step)

            runner.send_step = crash_before_the_last_phase
            await first.start(runner.run)
            await runner.start(env)
            await anyio.sleep_forever()  # until the crash cancels this scope
        assert step_id(env.id, "3.ship.1") not in rec.calls
        async with backend.make_bus() as bus, anyio.create_task_group() as second:
            runner = WorkflowRunner(bus, backend.make_store(bus))
            await second.start(runner.run)
            found = await reports(bus)
            second.cancel_scope.cancel()
        workers.cancel_scope.cancel()
    (reply,) = found
    assert reply.body["status"] == "succeeded"
    rec.ran_once(env.id, THREE_PATHS)


async def test_starting_the_same_workflow_twice_is_idempotent(backend: Backend) -> None:
    rec = Recorder()
    rec.delays["1.prepare.1"] = 0.2
    async with running(backend, rec.agents(THREE)) as h:
        env = workflow(THREE)
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(h.runner.start, env)
        # the same message on the intake too, under a new entry (the bus would drop a resend)
        assert await h.runner.on_workflow(env) == []
        found = await reports(h.bus, quiet=0.6)
        assert await h.runner.start(env) == env.id  # after it finished: nothing new
        assert await h.runner.report(env.id) == found[0].body
        late = await reports(h.bus, wait=0.5)
        if isinstance(h.bus, RedisBus):
            assert await h.bus.redis.exists(workflow_key(env.id)) == 1
            assert await h.bus.redis.scard(ACTIVE_KEY) == 0
    assert len(found) == 1
    assert late == []
    rec.ran_once(env.id, THREE_PATHS)


# -- live view and events -------------------------------------------------------------


async def test_progress_and_events_follow_the_workflow(backend: Backend) -> None:
    rec = Recorder()
    rec.gated.add("2.build.2")
    rec.costs["1.prepare.1"] = 0.5
    async with running(backend, rec.agents(THREE)) as h:
        events: list[dict[str, Any]] = []

        async def follow() -> None:
            async with aclosing(h.bus.subscribe(WORKFLOW_TOPIC)) as feed:
                async for event in feed:
                    events.append(codec.decode(event.frame).body["workflow_status"])
                    if events[-1]["event"] == "finished":
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.1)
            env = workflow(THREE)
            await h.runner.start(env)
            with anyio.fail_after(10):
                while step_id(env.id, "2.build.2") not in rec.calls or len(rec.spans) < 2:
                    await anyio.sleep(0.02)
                while True:  # the done sibling's reply is recorded
                    view = await h.runner.progress(env.id)
                    assert view is not None
                    if view["steps_done"] == 2:
                        break
                    await anyio.sleep(0.02)
            assert view["status"] == "running"
            assert view["cost_usd"] == pytest.approx(0.51)
            assert [(p["phase"], p["mode"], p["status"]) for p in view["phases"]] == [
                ("prepare", "sequential", "succeeded"),
                ("build", "parallel", "running"),
                ("ship", "sequential", "pending"),
            ]
            assert [s["status"] for s in view["phases"][1]["steps"]] == ["succeeded", "running"]
            rec.gate.set()
            (reply,) = await reports(h.bus)
        done = await h.runner.progress(env.id)
        assert await h.runner.progress("0" * 32) is None
    assert done is not None
    assert done["status"] == "succeeded"
    assert done["steps_done"] == done["steps_total"] == 4
    assert [e["event"] for e in events] == ["started", "step", "step", "step", "step", "finished"]
    assert {e["workflow_id"] for e in events} == {env.id}
    assert events[-1]["status"] == "succeeded"
    assert events[-1]["cost_usd"] == reply.body["cost_usd"] == pytest.approx(0.53)


# -- the store ------------------------------------------------------------------------


async def test_store_primitives_keep_the_first_of_everything(backend: Backend) -> None:
    async with backend.make_bus() as bus:
        store = backend.make_store(bus)
        assert await store.create("w1", {"n": 1})
        assert not await store.create("w1", {"n": 2})
        assert await store.active() == ["w1"]
        assert await store.mark_sent("w1", "1.a.1", "s1", 10.0) == 10.0
        assert await store.mark_sent("w1", "1.a.1", "s1", 20.0) == 10.0
        assert await store.locate("s1") == ("w1", "1.a.1")
        assert await store.record("w1", "1.a.1", {"ok": True})
        assert not await store.record("w1", "1.a.1", {"ok": False})
        assert not await store.record("missing", "1.a.1", {"ok": True})
        assert await store.finish("w1", {"status": "succeeded"}, ["s1"])
        assert not await store.finish("w1", {"status": "failed"}, ["s1"])
        assert not await store.create("w1", {"n": 3})  # finished: not active again
        loaded = await store.load("w1")
        assert await store.load("missing") is None
        assert await store.active() == []
        assert await store.locate("s1") is None
    assert loaded is not None
    assert loaded.record == {"n": 1}
    assert loaded.sent == {"1.a.1": 10.0}
    assert loaded.results == {"1.a.1": {"ok": True}}
    assert loaded.report == {"status": "succeeded"}


def test_step_ids_are_deterministic_per_workflow_and_path() -> None:
    assert step_id("w", "1.a.1") == step_id("w", "1.a.1")
    assert step_id("w", "1.a.1") != step_id("w", "1.a.2") != step_id("v", "1.a.1")
    assert len(step_id("w", "1.a.1")) == 32
    assert WORKFLOW_REPLIES != WORKFLOW_INTAKE
