"""Durable workflows: phases of agent steps run to the end, across restarts, once each.

A workflow message (any shape :func:`acp.protocol.parse_workflow` reads) becomes
a plan: top-level phases in order; within a group, ``parallel`` steps all at
once and ``sequential`` steps one after another; groups nest. Each step is a
command to its agent whose ``inputs`` are the previous phase's outputs (keyed
by step path), plus, in a sequential group, the previous step's output.

Why it survives a coordinator restart without running a step twice:

* the store holds only facts (the workflow message, each step's first send
  time, each step's first result, the report); what to do next is recomputed
  from them, so any runner can pick a workflow up where another left it;
* a step's message id is derived from (workflow id, step path), and the bus
  deduplicates sends by message id: re-sending an unanswered step after a
  restart never makes a second entry;
* a reply is recorded with a set-if-absent, so a redelivered or duplicate
  reply changes nothing; the next steps are sent (again, idempotently) on
  every reply, so a crash between recording and sending loses nothing.

Failure policy (``"failure_policy"`` in the body): ``"stop"`` (default) starts
nothing new after a failed step and finishes as ``failed`` once the steps in
flight have answered; ``"continue"`` runs later phases with the outputs that
exist and finishes as ``partial``. A step with no reply by its deadline
(``step_timeout``, capped by the workflow message's own deadline) is
recorded as ``timed_out``.

The report (each step's outcome, cost and time) is the reply to the workflow
message's ``reply_to``; progress events go to the ``workflows`` topic.

A restarted runner first records the replies that queued up while it was down,
then re-sends what is still unanswered. The bus remembers sent ids for its
``dedup_ttl``: a runner down longer than that could hand an agent a step it
still holds in its queue a second time, so size ``dedup_ttl`` for the outages
you plan to survive.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from anyio.abc import TaskStatus

from acp.errors import BusError, ConfigError, Rejected, RetryableError, SchemaError
from acp.logs import get_logger
from acp.protocol.body import MessageKind
from acp.protocol.codec import WireCodec
from acp.protocol.envelope import Envelope
from acp.protocol.workflow import Phase, Step, WorkflowSpec, parse_workflow
from acp.runtime.bus.base import Bus, derived_id
from acp.runtime.keys import WORKFLOW_INTAKE, WORKFLOW_REPLIES, WORKFLOW_TOPIC, check_name
from acp.runtime.processor import Processor, to_outgoing
from acp.runtime.workflows.store import (
    StoredWorkflow,
    WorkflowStore,
)

__all__ = [
    "STEP_COMMAND",
    "FailurePolicy",
    "SendStep",
    "WorkflowRunner",
    "send_via",
    "step_id",
]

log = get_logger("acp.workflows")

#: the command of a step whose task names none
STEP_COMMAND = "WORKFLOW_STEP"

FailurePolicy = Literal["stop", "continue"]
#: puts a step command on its way (to the agent, or through the coordinator's intake)
SendStep = Callable[[Envelope], Awaitable[None]]
#: step body fields the runner sets; a task's own fields of these names stay in ``task``
_RESERVED = frozenset({"cmd", "workflow", "workflow_id", "step", "task", "inputs"})


def step_id(workflow_id: str, path: str) -> str:
    """The message id of a step: the same on every send, so the bus deduplicates it."""
    return derived_id(workflow_id, path)


def send_via(bus: Bus, dest: str, *, codec: WireCodec | None = None) -> SendStep:
    """Send steps to ``dest`` (e.g. the coordinator's intake, which routes them by
    recipient and schedules them) instead of straight to each agent."""
    wire = codec or WireCodec()

    async def send(env: Envelope) -> None:
        await bus.send(to_outgoing(env, wire.encode(env), dest))

    return send


# -- the plan -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    path: str
    #: index of the top-level phase it belongs to
    phase: int
    step: Step


@dataclass(frozen=True, slots=True)
class _Launch:
    """A step whose turn has come, with the inputs it gets."""

    path: str
    step: Step
    inputs: dict[str, Any]


def _phase_path(index: int, phase: Phase) -> str:
    return f"{index + 1}.{phase.name}"


def _leaves(spec: WorkflowSpec) -> list[_Leaf]:
    """Every step in plan order, with its path (``<phase no>.<phase name>.<i>[.<j>...]``)."""
    out: list[_Leaf] = []

    def walk(node: Step | Phase, path: str, phase: int) -> None:
        if isinstance(node, Step):
            out.append(_Leaf(path, phase, node))
        else:
            for i, child in enumerate(node.steps, 1):
                walk(child, f"{path}.{i}", phase)

    for k, phase in enumerate(spec.phases):
        walk(phase, _phase_path(k, phase), k)
    return out


def _walk(
    node: Step | Phase,
    path: str,
    inputs: dict[str, Any],
    results: Mapping[str, Mapping[str, Any]],
    ready: dict[str, _Launch],
) -> tuple[bool, dict[str, Any]]:
    """(done, outputs of successful steps) of ``node``; steps due now go to ``ready``."""
    if isinstance(node, Step):
        result = results.get(path)
        if result is None:
            ready[path] = _Launch(path, node, inputs)
            return False, {}
        return True, ({path: result.get("output")} if result.get("ok") else {})
    outputs: dict[str, Any] = {}
    if node.mode == "parallel":
        done = True
        for i, child in enumerate(node.steps, 1):
            child_done, child_out = _walk(child, f"{path}.{i}", inputs, results, ready)
            done = done and child_done
            outputs.update(child_out)
        return done, outputs
    previous: dict[str, Any] = {}
    for i, child in enumerate(node.steps, 1):
        child_done, child_out = _walk(child, f"{path}.{i}", {**inputs, **previous}, results, ready)
        if not child_done:
            return False, outputs
        outputs.update(child_out)
        previous = child_out
    return True, outputs


def _ready(
    spec: WorkflowSpec, results: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, _Launch], bool]:
    """Steps due now (whatever the failure policy) and whether every step has a result."""
    ready: dict[str, _Launch] = {}
    inputs: dict[str, Any] = {}
    for k, phase in enumerate(spec.phases):
        done, outputs = _walk(phase, _phase_path(k, phase), inputs, results, ready)
        if not done:
            return ready, False
        inputs = outputs
    return ready, True


# -- one workflow, as loaded ----------------------------------------------------------


@dataclass
class _Workflow:
    id: str
    env: Envelope
    spec: WorkflowSpec
    policy: FailurePolicy
    step_timeout: float | None
    created_at: float
    sent: dict[str, float]
    results: dict[str, dict[str, Any]]
    report: dict[str, Any] | None
    leaves: dict[str, _Leaf]

    @classmethod
    def from_stored(cls, stored: StoredWorkflow) -> _Workflow:
        record = stored.record
        env = Envelope.model_validate(record["envelope"])
        spec = parse_workflow(env.body)
        return cls(
            id=stored.id,
            env=env,
            spec=spec,
            policy=record["failure_policy"],
            step_timeout=record.get("step_timeout"),
            created_at=float(record["created_at"]),
            sent=stored.sent,
            results=stored.results,
            report=stored.report,
            leaves={leaf.path: leaf for leaf in _leaves(spec)},
        )

    @property
    def failed(self) -> bool:
        return any(not r.get("ok") for r in self.results.values())

    @property
    def stopped(self) -> bool:
        """A failure under the "stop" policy: nothing new may start."""
        return self.policy == "stop" and self.failed

    def deadline(self, path: str) -> float | None:
        """When a sent step counts as timed out: its timeout, capped by the workflow's deadline."""
        sent = self.sent.get(path)
        limits = [self.env.deadline]
        if sent is not None and self.step_timeout is not None:
            limits.append(sent + self.step_timeout)
        found = [x for x in limits if x is not None]
        return min(found) if found else None

    def cost(self) -> float:
        return round(sum(float(r.get("cost_usd") or 0.0) for r in self.results.values()), 6)

    def step_status(self, path: str) -> str:
        result = self.results.get(path)
        if result is not None:
            return str(result["status"])
        if path in self.sent:
            return "running"
        return "skipped" if self.report is not None or self.stopped else "pending"


@dataclass(frozen=True, slots=True)
class _Decision:
    send: list[_Launch]
    finished: bool
    status: str


def _decide(wf: _Workflow, *, resend: bool) -> _Decision:
    """What to send now and whether the workflow is over, from its facts alone."""
    ready, all_done = _ready(wf.spec, wf.results)
    if wf.stopped:
        # steps in flight may still answer (and cost); nothing new starts
        in_flight = [p for p in wf.sent if p not in wf.results]
        send = [launch for p, launch in ready.items() if p in wf.sent] if resend else []
        return _Decision(send, not in_flight, "failed")
    send = [launch for p, launch in ready.items() if resend or p not in wf.sent]
    if not all_done:
        return _Decision(send, False, "running")
    if not wf.failed:
        status = "succeeded"
    elif any(r.get("ok") for r in wf.results.values()):
        status = "partial"
    else:
        status = "failed"
    return _Decision([], True, status)


def _policy(body: Mapping[str, Any]) -> FailurePolicy:
    value = body.get("failure_policy", "stop")
    if value == "stop":
        return "stop"
    if value == "continue":
        return "continue"
    raise SchemaError("workflow", [("failure_policy", "must be 'stop' or 'continue'")])


def _step_timeout(body: Mapping[str, Any], default: float | None) -> float | None:
    value = body.get("step_timeout", default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise SchemaError("workflow", [("step_timeout", "must be a positive number of seconds")])
    return float(value)


def _valid_name(agent: str) -> bool:
    try:
        check_name(agent, "agent")
    except ConfigError:
        return False
    return True


def _outcome(env: Envelope) -> tuple[bool, dict[str, Any], float]:
    """(ok, output without the runtime's ``_acp`` block, cost) of a step reply."""
    body = env.body
    ok = (
        env.kind is not MessageKind.ERROR
        and "error" not in body
        and body.get("cancelled") is not True
    )
    meta = body.get("_acp")
    cost = meta.get("cost_usd") if isinstance(meta, dict) else None
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        cost = 0.0
    output = {k: v for k, v in body.items() if k != "_acp"}
    return ok, output, float(cost)


# -- the runner -----------------------------------------------------------------------


class WorkflowRunner:
    """Start workflows, turn step replies into the next steps, report when done.

    ``await tg.start(runner.run)`` consumes step replies (``WORKFLOW_REPLIES``) and
    workflow messages (``WORKFLOW_INTAKE``) and resumes unfinished workflows;
    :meth:`start` starts one directly. ``send_step`` is how steps leave (default:
    straight to the agent; :func:`send_via` routes them through a scheduler).
    """

    def __init__(
        self,
        bus: Bus,
        store: WorkflowStore,
        *,
        codec: WireCodec | None = None,
        clock: Callable[[], float] = time.time,
        step_timeout: float | None = 1800.0,
        send_step: SendStep | None = None,
        replies: str = WORKFLOW_REPLIES,
        intake: str | None = WORKFLOW_INTAKE,
        consumer: str | None = None,
        sweep_interval: float = 1.0,
        timeout_grace: float = 2.0,
        settle_timeout: float = 10.0,
    ) -> None:
        self.bus = bus
        self.store = store
        self.codec = codec or WireCodec()
        self.clock = clock
        self.step_timeout = step_timeout
        self.send_step: SendStep = send_step or self._send_direct
        self.replies = replies
        self.intake = intake
        self.consumer = consumer
        self.sweep_interval = sweep_interval
        #: a reply queued before the deadline gets this long to be read before
        #: the step is called timed out (it may be behind a restart's backlog)
        self.timeout_grace = timeout_grace
        self.settle_timeout = settle_timeout
        self._locks: dict[str, anyio.Lock] = {}
        self._processors: list[Processor] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve step replies and workflow messages until :meth:`stop` or cancellation;
        unfinished workflows are resumed once the replies that waited are recorded."""
        self._processors = [
            Processor(
                self.bus, self.replies, self.on_reply, codec=self.codec, consumer=self.consumer
            )
        ]
        if self.intake is not None:
            self._processors.append(
                Processor(
                    self.bus,
                    self.intake,
                    self.on_workflow,
                    codec=self.codec,
                    consumer=self.consumer,
                )
            )
        async with anyio.create_task_group() as background:
            async with anyio.create_task_group() as tg:
                for processor in self._processors:
                    await tg.start(processor.run)
                background.start_soon(self._resume_then_sweep)
                log.info("workflows_serving", replies=self.replies, intake=self.intake)
                task_status.started()
            background.cancel_scope.cancel()

    async def _resume_then_sweep(self) -> None:
        await self._settle()
        resumed = await self.resume()
        log.info("workflows_resumed", count=resumed)
        while True:
            await anyio.sleep(self.sweep_interval)
            try:
                await self.expire_steps()
            except BusError as exc:
                log.warning("sweep_failed", error=str(exc))

    async def _settle(self) -> None:
        """Wait (a little) until the replies that queued up while no runner was alive
        are recorded: then resuming re-sends only steps that were really never answered."""
        with anyio.move_on_after(self.settle_timeout):
            while True:
                stats = await self.bus.stats(self.replies)
                if stats.ready == 0 and stats.pending == 0:
                    return
                await anyio.sleep(0.05)

    def stop(self) -> None:
        """Stop reading; handlers in flight finish (what does not stays pending)."""
        for processor in self._processors:
            processor.stop()

    async def resume(self) -> int:
        """Pick up every unfinished workflow: re-send its unanswered steps (the bus
        drops the ones already queued) and send whatever became due meanwhile."""
        count = 0
        for workflow_id in await self.store.active():
            async with self._lock(workflow_id):
                wf = await self._load(workflow_id)
                if wf is None or wf.report is not None:
                    await self.store.deactivate(workflow_id)
                    continue
                await self._advance(wf, resend=True)
                count += 1
        return count

    # -- starting ----------------------------------------------------------------------

    async def start(self, env: Envelope) -> str:
        """Start the workflow ``env`` describes, under its message id; starting the
        same id again does nothing new. Raises ``SchemaError`` for a body with no
        plan or a bad ``failure_policy`` / ``step_timeout``."""
        spec = parse_workflow(env.body)
        bad = [leaf for leaf in _leaves(spec) if not _valid_name(leaf.step.agent)]
        if bad:
            errors = [(f"{leaf.path}.agent", "not a valid agent name") for leaf in bad]
            raise SchemaError("workflow", errors)
        record = {
            "envelope": env.model_dump(mode="json"),
            "failure_policy": _policy(env.body),
            "step_timeout": _step_timeout(env.body, self.step_timeout),
            "created_at": self.clock(),
        }
        async with self._lock(env.id):
            created = await self.store.create(env.id, record)
            wf = await self._load(env.id)
            if wf is None:  # expired between the two calls: nothing to run
                return env.id
            if created:
                log.info("workflow_started", workflow_id=env.id, workflow=spec.name)
                await self._publish(wf, "started", {"steps": len(wf.leaves)})
            if wf.report is None:
                await self._advance(wf, resend=False)
        return env.id

    async def on_workflow(self, env: Envelope) -> list[Envelope]:
        """Processor handler for the intake: a workflow message starts a workflow; a
        body with no plan is answered with an error (or dead-lettered without reply_to)."""
        try:
            await self.start(env)
        except SchemaError as exc:
            if not env.reply_to:
                raise Rejected("bad_workflow", str(exc)) from exc
            fields = [{"path": p, "message": m} for p, m in exc.errors]
            body = {"error": exc.code, "detail": str(exc), "fields": fields}
            return [env.reply(body, kind=MessageKind.ERROR)]
        except BusError as exc:
            raise RetryableError(str(exc)) from exc
        return []

    # -- replies -----------------------------------------------------------------------

    async def on_reply(self, env: Envelope) -> list[Envelope]:
        """Processor handler for step replies: record the result once, then send the
        steps now due (or the report). Store or bus trouble asks for a retry."""
        if not env.correlation_id:
            return []
        try:
            where = await self.store.locate(env.correlation_id)
            if where is None:
                log.info("reply_ignored", correlation_id=env.correlation_id, sender=env.sender)
                return []
            workflow_id, path = where
            async with self._lock(workflow_id):
                wf = await self._load(workflow_id)
                if wf is None or wf.report is not None or path not in wf.leaves:
                    return []
                ok, output, cost = _outcome(env)
                status = "succeeded" if ok else "failed"
                await self._record(wf, path, status, output=output, cost=cost)
                await self._advance(wf, resend=False)
        except BusError as exc:
            raise RetryableError(str(exc)) from exc
        return []

    async def _record(
        self, wf: _Workflow, path: str, status: str, *, output: dict[str, Any], cost: float
    ) -> None:
        """Keep the step's first result (``status``: succeeded, failed or timed_out)."""
        now = self.clock()
        leaf = wf.leaves[path]
        result = {
            "agent": leaf.step.agent,
            "ok": status == "succeeded",
            "status": status,
            "output": output,
            "cost_usd": cost,
            "at": now,
            "seconds": round(max(0.0, now - wf.sent.get(path, now)), 3),
        }
        if await self.store.record(wf.id, path, result):
            wf.results[path] = result
            log.info("step_done", workflow_id=wf.id, step=path, status=status, cost_usd=cost)
            await self._publish(
                wf, "step", {"step": path, "agent": leaf.step.agent, "step_status": status}
            )
        else:
            # a duplicate, or another runner got there first: its result stands
            stored = await self.store.load(wf.id)
            if stored is not None:
                wf.results = stored.results

    # -- advancing ---------------------------------------------------------------------

    async def _advance(self, wf: _Workflow, *, resend: bool) -> None:
        decision = _decide(wf, resend=resend)
        for launch in decision.send:
            sid = step_id(wf.id, launch.path)
            sent_at = await self.store.mark_sent(wf.id, launch.path, sid, self.clock())
            wf.sent[launch.path] = sent_at
            await self.send_step(self._step_envelope(wf, launch, sid))
        if decision.finished:
            await self._finish(wf, decision.status)

    def _step_envelope(self, wf: _Workflow, launch: _Launch, sid: str) -> Envelope:
        """The step command; the same on every send (the bus keeps only the first)."""
        task = launch.step.payload
        cmd = task.get("cmd")
        if isinstance(cmd, str) and cmd:
            # a task naming its own command is that command: its fields at the top, so
            # the agent's typed model for it parses them; "task" keeps only the fields
            # whose names the runner's own would hide (each field is sent once: a model
            # pays for every input token)
            body = {k: v for k, v in task.items() if k not in _RESERVED}
            hidden = {k: v for k, v in task.items() if k in _RESERVED and k != "cmd"}
        else:
            body, hidden, cmd = {}, dict(task), STEP_COMMAND
        body.update(
            cmd=cmd, workflow=wf.spec.name, workflow_id=wf.id, step=launch.path,
            inputs=launch.inputs,
        )  # fmt: skip
        if hidden:
            body["task"] = hidden
        return Envelope(
            id=sid,
            kind=MessageKind.COMMAND,
            sender=self.replies,
            recipient=launch.step.agent,
            body=body,
            correlation_id=sid,
            reply_to=self.replies,
            created_at=wf.sent[launch.path],
            deadline=wf.deadline(launch.path),
            priority=wf.env.priority,
            traceparent=wf.env.traceparent,
            tracestate=wf.env.tracestate,
            tenant=wf.env.tenant,
        )

    async def _send_direct(self, env: Envelope) -> None:
        await self.bus.send(to_outgoing(env, self.codec.encode(env)))

    async def _finish(self, wf: _Workflow, status: str) -> None:
        """Report, then mark finished: a crash in between re-sends the report under the
        same id (dropped by the bus) instead of losing it."""
        report = self._report(wf, status)
        if wf.env.reply_to:
            reply = Envelope(
                id=step_id(wf.id, "report"),
                kind=MessageKind.REPLY,
                sender=self.replies,
                recipient=wf.env.reply_to,
                body=report,
                correlation_id=wf.id,
                traceparent=wf.env.traceparent,
                tracestate=wf.env.tracestate,
                tenant=wf.env.tenant,
            )
            await self.bus.send(to_outgoing(reply, self.codec.encode(reply)))
        await self._publish(wf, "finished", {"cost_usd": report["cost_usd"]}, status=status)
        await self.store.finish(wf.id, report, [step_id(wf.id, p) for p in wf.leaves])
        wf.report = report
        self._locks.pop(wf.id, None)
        log.info(
            "workflow_finished",
            workflow_id=wf.id,
            status=status,
            cost_usd=report["cost_usd"],
            seconds=report["seconds"],
        )

    def _report(self, wf: _Workflow, status: str) -> dict[str, Any]:
        now = self.clock()
        steps = []
        for path, leaf in wf.leaves.items():
            result = wf.results.get(path)
            steps.append(
                {
                    "step": path,
                    "phase": wf.spec.phases[leaf.phase].name,
                    "agent": leaf.step.agent,
                    "status": wf.step_status(path) if result is None else result["status"],
                    "cost_usd": result["cost_usd"] if result else 0.0,
                    "seconds": result["seconds"] if result else 0.0,
                    "output": result["output"] if result else None,
                }
            )
        return {
            "workflow": wf.spec.name,
            "workflow_id": wf.id,
            "status": status,
            "failure_policy": wf.policy,
            "steps": steps,
            "cost_usd": wf.cost(),
            "seconds": round(max(0.0, now - wf.created_at), 3),
            "started_at": wf.created_at,
            "finished_at": now,
        }

    # -- timeouts ----------------------------------------------------------------------

    async def expire_steps(self) -> int:
        """Record ``timed_out`` for steps past their deadline (plus grace) and move
        their workflows on; returns how many steps timed out."""
        now = self.clock()
        expired = 0
        for workflow_id in await self.store.active():
            async with self._lock(workflow_id):
                wf = await self._load(workflow_id)
                if wf is None or wf.report is not None:
                    continue
                late = [
                    p
                    for p in wf.sent
                    if p not in wf.results
                    and (deadline := wf.deadline(p)) is not None
                    and now >= deadline + self.timeout_grace
                ]
                for path in late:
                    waited = now - wf.sent[path]
                    output = {"error": "timeout", "detail": f"no reply within {waited:.1f}s"}
                    await self._record(wf, path, "timed_out", output=output, cost=0.0)
                    expired += 1
                if late:
                    await self._advance(wf, resend=False)
        return expired

    # -- views -------------------------------------------------------------------------

    async def progress(self, workflow_id: str) -> dict[str, Any] | None:
        """A live view: each phase and step with its status, cost and time so far;
        None for an unknown (or expired) workflow."""
        wf = await self._load(workflow_id)
        if wf is None:
            return None
        now = self.clock()
        phases: list[dict[str, Any]] = []
        for k, phase in enumerate(wf.spec.phases):
            steps: list[dict[str, Any]] = []
            for path, leaf in wf.leaves.items():
                if leaf.phase != k:
                    continue
                result = wf.results.get(path)
                sent = wf.sent.get(path)
                seconds = result["seconds"] if result else (now - sent if sent else 0.0)
                steps.append(
                    {
                        "step": path,
                        "agent": leaf.step.agent,
                        "status": wf.step_status(path),
                        "cost_usd": result["cost_usd"] if result else 0.0,
                        "seconds": round(seconds, 3),
                    }
                )
            phases.append(
                {
                    "phase": phase.name,
                    "path": _phase_path(k, phase),
                    "mode": phase.mode,
                    "status": _phase_status([s["status"] for s in steps]),
                    "steps": steps,
                }
            )
        report = wf.report
        return {
            "workflow_id": wf.id,
            "workflow": wf.spec.name,
            "status": report["status"] if report else "running",
            "failure_policy": wf.policy,
            "phases": phases,
            "steps_done": len(wf.results),
            "steps_total": len(wf.leaves),
            "cost_usd": wf.cost(),
            "seconds": report["seconds"] if report else round(now - wf.created_at, 3),
        }

    async def report(self, workflow_id: str) -> dict[str, Any] | None:
        """The final report of a finished workflow (kept for the store's retention)."""
        stored = await self.store.load(workflow_id)
        return stored.report if stored is not None else None

    # -- helpers -----------------------------------------------------------------------

    def _lock(self, workflow_id: str) -> anyio.Lock:
        """One handler at a time per workflow in this process (replies of parallel
        steps arrive together); across processes the store's set-if-absent rules."""
        lock = self._locks.get(workflow_id)
        if lock is None:
            lock = self._locks[workflow_id] = anyio.Lock()
        return lock

    async def _load(self, workflow_id: str) -> _Workflow | None:
        stored = await self.store.load(workflow_id)
        return None if stored is None else _Workflow.from_stored(stored)

    async def _publish(
        self, wf: _Workflow, event: str, extra: Mapping[str, Any], *, status: str = "running"
    ) -> None:
        body = {
            "workflow_status": {
                "workflow_id": wf.id,
                "workflow": wf.spec.name,
                "event": event,
                "status": status,
                **extra,
            }
        }
        env = Envelope.for_body(
            body,
            sender=self.replies,
            recipient=WORKFLOW_TOPIC,
            correlation_id=wf.id,
            traceparent=wf.env.traceparent,
            tenant=wf.env.tenant,
        )
        await self.bus.publish(
            WORKFLOW_TOPIC, self.codec.encode(env), {"workflow": wf.id, "event": event}
        )


def _phase_status(statuses: list[str]) -> str:
    if all(s == "pending" for s in statuses):
        return "pending"
    if all(s == "skipped" for s in statuses):
        return "skipped"
    if any(s in ("pending", "running") for s in statuses):
        return "running"
    if any(s in ("failed", "timed_out") for s in statuses):
        return "failed"
    return "succeeded"
