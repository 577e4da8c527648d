"""The coordinator daemon: schedules agent work by tier and complexity, inside limits
and budgets, and loses nothing when anything crashes.

Work for agents is sent to the coordinator's intake (``Client(bus, via="coordinator")``,
``acp send``). Each message stays a *pending entry* of the intake stream, held and
renewed by the coordinator, until the scheduling policy decides; dispatching is an
atomic commit that forwards it to the agent's queue. So queued work is durable
in Redis, a restart re-reads it (keeping its age), and nothing is dispatched twice.

Two coordinators may run: the one holding the ``coordinator`` lease leads. A new
leader takes over every pending intake entry at once, which fences out a stale
leader (its commits no longer own the entries) and makes failover take seconds.

Only Claude-backed agents use model capacity, so only their work goes through
the policy; work for Python agents is forwarded at once. Work for an agent with
no live worker is parked, visible in the status, until one announces itself or
its deadline passes. Work for an agent nobody knows (not in the catalogue, no
worker ever served it here) is refused at once: a typo must not wait forever.
Whatever is refused goes to the dead letters, and its sender gets the error reply.
"""

from __future__ import annotations

import difflib
import json
import os
import socket
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import TaskStatus

from acp.agents.config import RuntimeConfig, Usage
from acp.agents.definition import AgentDefinition
from acp.agents.prompt import prompt_bytes
from acp.agents.ratelimits import RateLimitSnapshot
from acp.errors import Rejected
from acp.logs import get_logger
from acp.protocol.body import MessageKind
from acp.protocol.codec import WireCodec
from acp.protocol.envelope import Envelope
from acp.protocol.headers import H_NOT_BEFORE, H_RESERVATION, H_ROOT, H_SINCE
from acp.runtime.bus.base import Bus, Delivery
from acp.runtime.dispatches import InputSizer, Reservation
from acp.runtime.keys import (
    COMPLETIONS_TOPIC,
    CONTROL_TOPIC,
    COORDINATOR_EVENTS_TOPIC,
    COORDINATORS,
    INBOX_PREFIX,
    INTAKE,
    LEADER_LEASE,
    PLATFORM_TOPIC,
    RATE_LIMIT_TOPIC,
    RESULTS,
    WORKERS,
    WORKFLOW_INTAKE,
    WORKFLOW_REPLIES,
    intake_queue,
    intake_queues,
    is_intake,
)
from acp.runtime.metrics import Metrics, Sample
from acp.runtime.processor import DeadLettered, Processor, current_delivery, to_outgoing
from acp.runtime.records import CoordinatorPresence, PlatformStatus, QueueHealth, read_presence
from acp.runtime.results import ResultState, is_tracked, result_record
from acp.runtime.scheduling.policy import Dispatch, Job, Rejection, SchedulingPolicy
from acp.runtime.status import agent_queues
from acp.runtime.tracing import hop, outgoing_trace
from acp.runtime.workflows import WorkflowRunner
from acp.runtime.workflows.store import WorkflowStore

__all__ = ["Coordinator"]

log = get_logger("acp.coordinator")


@dataclass
class _Waiter:
    env: Envelope
    agent: str
    #: when its chain first reached a coordinator (server clock): its age in the queue
    since: float
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: tuple[str, Dispatch | Rejection | None] | None = None
    #: when it was parked for want of a worker (epoch seconds)
    parked_at: float | None = None

    def resolve(self, kind: str, item: Dispatch | Rejection | None = None) -> None:
        self.outcome = (kind, item)
        self.done.set()


@dataclass
class _Live:
    """What the workers of one agent announced."""

    kind: str
    tier: str
    complexity: str
    workers: int
    #: the most its workers announced a turn's server tools may bill (None: none said)
    server_tools_usd: float | None = None


class Coordinator:
    """``await Coordinator(bus, config).run()``: lead when elected, stand by otherwise."""

    def __init__(
        self,
        bus: Bus,
        config: RuntimeConfig,
        *,
        definitions: Mapping[str, AgentDefinition] | None = None,
        coordinator_id: str | None = None,
        lease_ttl: float = 5.0,
        status_interval: float = 10.0,
        registry_interval: float = 1.0,
        max_waiting: int = 10_000,
        reconcile_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        codec: WireCodec | None = None,
        workflow_store: WorkflowStore | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.bus = bus
        self.config = config
        self.definitions = dict(definitions or {})
        self.id = coordinator_id or f"{socket.gethostname()}-{os.getpid()}"
        self.lease_ttl = lease_ttl
        self.status_interval = status_interval
        self.registry_interval = registry_interval
        self.max_waiting = max_waiting
        #: intake partitions senders are told to use (``intake_queue``)
        self.partitions = config.bus.intake_partitions
        #: the intake queues the leader consumes, each by its own processor
        self._intakes: dict[str, Processor] = {}
        #: this host's clock; :meth:`now` is the server's, measured against it
        self.clock = clock
        self._offset = 0.0
        self.codec = codec or WireCodec()
        self.leading = False
        self.token: int | None = None
        self.policy = SchedulingPolicy(config, clock=self.now)
        #: what this leader holds in flight: agent, dispatch time, reservation
        self._dispatched: dict[str, tuple[str, float, Reservation]] = {}
        #: dispatches missing from their agent's queue at the last reconciliation
        self._missing: set[str] = set()
        self.sizer = InputSizer()
        self.reconcile_interval = reconcile_interval
        self.workflows: WorkflowRunner | None = None
        #: workflow state: in Redis on a RedisBus; pass one store to in-memory coordinators
        #: that should share it
        self.workflow_store = workflow_store
        self.metrics = metrics
        if metrics is not None:
            metrics.collector(self._collect)
        self._waiters: dict[str, _Waiter] = {}
        self._parked: dict[str, _Waiter] = {}
        self._live: dict[str, _Live] = {}
        #: agents whose queue exists on this server (a worker served them once)
        self._queues: set[str] = set()
        self._synced = time.time()
        self._wake = anyio.Event()
        self._stopping = anyio.Event()
        #: set once this coordinator has led (tests and ``acp up`` wait for it)
        self.has_led = anyio.Event()
        self._latencies: deque[float] = deque(maxlen=1000)
        self._outcomes: dict[str, int] = {"ok": 0, "failed": 0}
        self._log = log.bind(coordinator=self.id)

    def stop(self) -> None:
        self._stopping.set()

    def now(self) -> float:
        """The server's clock (``Bus.now``), read through this host's: every age and
        deadline the coordinator judges is on it, whatever this host's clock says."""
        return self.clock() + self._offset

    async def _sync_clock(self) -> None:
        await self.bus.sync_clock()
        self._offset = self.bus.now() - self.clock()

    # -- leadership ---------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._announce_forever)
            task_status.started()
            try:
                await self._contend()
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await self.bus.withdraw(COORDINATORS, self.id)
                    await self.bus.release(LEADER_LEASE, self.id)

    async def _announce_forever(self) -> None:
        """Clients route through a coordinator when one is alive (see ``Client``); running
        workers are told at once that one is."""
        told = False
        while True:
            info: CoordinatorPresence = {
                "id": self.id,
                "leading": self.leading,
                "token": self.token,
                "partitions": self.partitions,
            }
            await self.bus.announce(
                COORDINATORS, self.id, json.dumps(info).encode(), ttl=self.lease_ttl * 2
            )
            if not told:
                await self.bus.publish(CONTROL_TOPIC, b"", {"coordinator": self.id})
                told = True
            await anyio.sleep(self.lease_ttl / 3)

    async def _contend(self) -> None:
        while not self._stopping.is_set():
            token = await self.bus.lease(LEADER_LEASE, self.id, ttl=self.lease_ttl)
            if token is None:
                with anyio.move_on_after(self.lease_ttl / 3):
                    await self._stopping.wait()
                continue
            await self._lead(token)

    async def _lead(self, token: int) -> None:
        self.token, self.leading = token, True
        self.has_led.set()
        consumer = f"coordinator-{token}"
        self._log.info("leading", token=token)
        try:
            await self._sync_clock()
            intakes = await self._intake_queues()
            for dest in intakes:
                await self._take_over(dest, consumer)
            self.policy = SchedulingPolicy(self.config, clock=self.now)
            self._dispatched.clear()
            self._missing.clear()
            await self._restore_spend()
            await self._refresh_registry()
            await self._rebuild(token)
            self._intakes = {}
            store = self.workflow_store or self.bus.workflow_store()
            self.workflow_store = store  # a later term of this coordinator keeps the same state
            self.workflows = WorkflowRunner(
                self.bus,
                store,
                codec=self.codec,
                clock=self.now,
                send_step=self._send_step,
                consumer=consumer,
            )
            async with anyio.create_task_group() as tg:
                await tg.start(self.workflows.run)
                tg.start_soon(self._keep_lease, token, tg.cancel_scope)
                tg.start_soon(self._follow_registry)
                await tg.start(self._follow_completions)
                tg.start_soon(self._reconcile_forever)
                tg.start_soon(self._follow_rate_limits)
                tg.start_soon(self._decide_forever)
                tg.start_soon(self._publish_status_forever)
                await self._consume_intake(consumer, intakes)
                tg.cancel_scope.cancel()
        finally:
            self.leading = False
            if self.workflows is not None:
                self.workflows.stop()
            for waiter in [*self._waiters.values(), *self._parked.values()]:
                waiter.resolve("abandoned")  # the entries stay pending: the next leader has them
            self._parked.clear()
            self._log.info("stepped_down", token=token)

    async def _intake_queues(self) -> list[str]:
        """This leader's partitions, and any other intake queue the server has (left
        by a coordinator with another partition count: its work is drained too)."""
        mine = intake_queues(self.partitions)
        others = [d for d in await self.bus.destinations() if is_intake(d) and d not in mine]
        return [*mine, *sorted(others)]

    async def _consume_intake(self, consumer: str, intakes: list[str]) -> None:
        """One processor per intake queue, until the leader stops; queues that appear
        later (a sender with another partition count) get theirs when seen."""
        share = max(self.max_waiting // max(self.partitions, 1), 1)

        async def consume(dest: str) -> None:
            processor = Processor(
                self.bus, dest, self._admit, codec=self.codec, consumer=consumer,
                concurrency=share, accept=lambda env: True, grace=0.5,
                agent_of=self._route, on_dead=self._dead_lettered,
            )  # fmt: skip
            self._intakes[dest] = processor
            await processor.run()

        async with anyio.create_task_group() as tg:
            for dest in intakes:
                tg.start_soon(consume, dest)
            while not self._stopping.is_set():
                with anyio.move_on_after(self.reconcile_interval):
                    await self._stopping.wait()
                for dest in await self._intake_queues():
                    if dest not in self._intakes:
                        self._log.info("intake_found", queue=dest)
                        await self._take_over(dest, consumer)
                        tg.start_soon(consume, dest)

    async def _send_step(self, env: Envelope) -> None:
        """Workflow steps go through the intake partition of their agent."""
        dest = intake_queue(env.recipient, self.partitions)
        await self.bus.send(to_outgoing(env, self.codec.encode(env), dest))

    async def _take_over(self, dest: str, consumer: str) -> None:
        """Claim every pending entry of an intake queue for this leader: a stale leader
        can no longer commit them, and nothing waits for ``min_idle`` to pass."""
        while True:
            claimed = await self.bus.take_over(dest, consumer, min_idle=0.0, count=500)
            if len(claimed) < 500:
                return

    def _stop_intake(self) -> None:
        for processor in self._intakes.values():
            processor.stop()

    async def _keep_lease(self, token: int, scope: anyio.CancelScope) -> None:
        while True:
            with anyio.move_on_after(self.lease_ttl / 3):
                await self._stopping.wait()
            if self._stopping.is_set():
                self._stop_intake()
                return
            renewed = await self.bus.lease(LEADER_LEASE, self.id, ttl=self.lease_ttl)
            if renewed != token:
                self._log.error("lease_lost", token=token)
                scope.cancel()
                return

    # -- admission ----------------------------------------------------------------------

    def _route(self, env: Envelope) -> str:
        """The agent that should do the work: ``ASSIGN`` goes to the one named in ``to``."""
        if env.command == "ASSIGN" and isinstance(env.body.get("to"), str) and env.body["to"]:
            return str(env.body["to"])
        return env.recipient

    async def _admit(self, env: Envelope) -> list[Envelope]:
        if env.kind is MessageKind.WORKFLOW or env.recipient == WORKFLOW_INTAKE:
            # workflows run here, durably; their steps come back through this intake
            assert self.workflows is not None
            return await self.workflows.on_workflow(env)
        agent = self._route(env)
        with hop(
            "coordinator admit",
            env,
            {"acp.agent": agent, "acp.command": env.command, "acp.tier": env.tier},
        ):
            return await self._wait_and_decide(env, agent)

    async def _wait_and_decide(self, env: Envelope, agent: str) -> list[Envelope]:
        if not await self._known(agent):
            raise Rejected("unknown_agent", self._unknown(agent))
        # Its age, on the server's clock, from its chain's first entry. Written into the
        # message only when it is dispatched for model capacity (its next steps keep it
        # there): a forward to a Python agent leaves with its frame unchanged.
        since = _float_header(env, H_SINCE)
        if since is None:
            since = _entry_time(current_delivery.get(None)) or self.now()
        not_before = _float_header(env, H_NOT_BEFORE)
        if not_before is not None and not_before > self.now():
            # a retry the model API asked to wait for: held here, its entry renewed
            await anyio.sleep(not_before - self.now())
        waiter = _Waiter(env, agent, since)
        self._place(waiter)
        if waiter.outcome is None:  # queued for capacity, or parked: wait for the decision
            self._waiters[env.id] = waiter
            try:
                if waiter.parked_at is not None and env.headers and is_tracked(env):
                    await self.bus.send(self._parked_record(waiter))
                await waiter.done.wait()
            finally:
                self._waiters.pop(env.id, None)
                self._parked.pop(env.id, None)
        assert waiter.outcome is not None
        kind, item = waiter.outcome
        traceparent, tracestate = outgoing_trace(env)  # the next hop is our child
        if kind == "forward":
            if agent == env.recipient and traceparent == env.traceparent:
                return [env]  # passed on as it came: the processor forwards its frame
            return [env.evolve(recipient=agent, traceparent=traceparent, tracestate=tracestate)]
        if kind == "dispatch":
            assert isinstance(item, Dispatch)
            reservation = self._held(item, agent, env)
            headers = {H_SINCE: f"{since:.3f}", **env.headers, H_RESERVATION: reservation.header()}
            return [
                env.evolve(
                    recipient=agent, tier=item.tier, traceparent=traceparent,
                    tracestate=tracestate, headers=headers,
                )
            ]  # fmt: skip
        if kind in ("dead", "refused"):
            # the processor dead-letters it and tells the requester; an operator can
            # replay it (after raising a budget, say)
            assert isinstance(item, Rejection)
            raise Rejected(item.reason, item.detail)
        if kind == "expired":
            raise Rejected("deadline", self._expired(waiter))
        raise anyio.get_cancelled_exc_class()()  # abandoned: this leader stepped down

    def _held(self, item: Dispatch, agent: str, env: Envelope) -> Reservation:
        """The reservation a dispatch carries (and this leader remembers until settled)."""
        definition = self.definitions.get(agent)
        reservation = Reservation(
            tier=item.tier, input_tokens=item.input_tokens, max_tokens=item.max_tokens,
            cost_usd=item.reserved_usd, term=self.token or 0,
            prompt_bytes=prompt_bytes(definition, env) if definition else 0,
        )  # fmt: skip
        self._dispatched[env.id] = (agent, self.now(), reservation)
        return reservation

    async def _known(self, agent: str) -> bool:
        """In the catalogue, served by a live worker, or served here before. Asked
        again of the server before saying no: a worker may have just started."""
        if agent in self.definitions or agent in self._live or agent in self._queues:
            return True
        await self._refresh_registry()
        return agent in self._live or agent in self._queues

    def _unknown(self, agent: str) -> str:
        known = sorted({*self.definitions, *self._live, *self._queues})
        close = difflib.get_close_matches(agent, known, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        return (
            f"no agent named {agent!r}: it is not in the coordinator's catalogue "
            f"({len(self.definitions)} definitions) and no worker has served it on this "
            f"server{hint}"
        )

    def _expired(self, waiter: _Waiter) -> str:
        assert waiter.env.deadline is not None
        late = self.now() - waiter.env.deadline
        if waiter.parked_at is not None:
            waited = self.now() - waiter.parked_at
            return (
                f"deadline passed {late:.1f}s ago after {waited:.1f}s waiting for a worker "
                f"of {waiter.agent} (no live worker)"
            )
        return f"deadline passed {late:.1f}s ago before {waiter.agent} could take it"

    def _parked_record(self, waiter: _Waiter) -> Any:
        return result_record(
            waiter.env.id, ResultState.PARKED, agent=waiter.agent,
            command=waiter.env.command,
            detail=f"no live worker for {waiter.agent}; waiting in the coordinator since "
            f"{datetime.fromtimestamp(waiter.parked_at or self.now(), UTC):%H:%M:%S} UTC",
        )  # fmt: skip

    async def _dead_lettered(self, letter: DeadLettered) -> None:
        """Every refusal is an event too: operators follow ``coordinator.events``."""
        env = letter.env
        record = {
            "kind": "dead_letter",
            "reason": letter.reason,
            "detail": letter.error,
            "msg_id": letter.delivery.msg_id,
            "agent": self._route(env) if env is not None else None,
            "at": self.now(),
            "dead_letter": {"dest": letter.delivery.dest, "entry_id": letter.entry_id},
        }
        await self.bus.publish(
            COORDINATOR_EVENTS_TOPIC, json.dumps({"coordinator_event": record}).encode()
        )

    def _place(self, waiter: _Waiter) -> None:
        live = self._live.get(waiter.agent)
        if live is None:
            waiter.parked_at = waiter.parked_at or self.now()
            self._parked[waiter.env.id] = waiter
            return
        if live.kind != "claude":
            waiter.resolve("forward")
            return
        self.policy.submit(self._job(waiter, live))
        self._wake.set()

    def _job(self, waiter: _Waiter, live: _Live) -> Job:
        env, agent = waiter.env, waiter.agent
        definition = self.definitions.get(agent)
        tier = env.tier if env.tier in self.config.tiers else live.tier
        if tier not in self.config.tiers:
            tier = "sonnet" if "sonnet" in self.config.tiers else next(iter(self.config.tiers))
        allowed: tuple[str, ...] = ()
        if definition is not None:
            if definition.model == "inherit":
                allowed = tuple(self.config.tier_order())
            elif definition.allowed_tiers:
                allowed = tuple(t for t in definition.allowed_tiers if t in self.config.tiers)
        complexity = live.complexity if live.complexity in self.config.complexity else "medium"
        return Job(
            id=env.id,
            agent=agent,
            tier=tier,
            complexity=complexity,
            submitted_at=min(waiter.since, self.now()),
            priority=env.priority,
            deadline=env.deadline,
            tenant=env.tenant,
            allowed_tiers=allowed,
            attempt=env.attempt,
            input_tokens=(
                self.sizer.estimate(agent, prompt_bytes(definition, env)) if definition else None
            ),
            request=env.headers.get(H_ROOT) or env.id,
            server_tools_usd=self._server_tools_usd(definition, live),
        )

    def _server_tools_usd(self, definition: AgentDefinition | None, live: _Live) -> float:
        """What a turn's server tools may bill: as the agent's workers announced it
        (their ``[tools]`` decide what they offer), else as this coordinator's own
        settings price the definition (workers older than the announcement)."""
        if live.server_tools_usd is not None:
            return live.server_tools_usd
        if definition is None:
            return 0.0
        return self.config.tools.server_tools_usd(definition.tools, definition.disallowed_tools)

    # -- deciding -----------------------------------------------------------------------

    async def _decide_forever(self) -> None:
        while True:
            decisions = self.policy.decide()
            for d in decisions.dispatch:
                self._resolve(d.job.id, "dispatch", d)
                if self.metrics is not None:
                    self.metrics.inc(
                        "dispatched_total", {"tier": d.tier}, help="Work dispatched by tier"
                    )
            for r in decisions.dead_letter:
                self._resolve(r.job.id, "dead", r)
            for r in decisions.refused:
                self._resolve(r.job.id, "refused", r)
            for event in decisions.events:
                record = {k: v for k, v in asdict(event).items() if v is not None}
                self._log.info("decision", **record)
                await self.bus.publish(
                    COORDINATOR_EVENTS_TOPIC, json.dumps({"coordinator_event": record}).encode()
                )
            wait = 1.0 if decisions.wake_at is None else max(decisions.wake_at - self.now(), 0.0)
            with anyio.move_on_after(min(wait, 1.0)):
                await self._wake.wait()
            self._wake = anyio.Event()

    def _resolve(self, job_id: str, kind: str, item: Dispatch | Rejection) -> None:
        waiter = self._waiters.get(job_id)
        if waiter is not None:
            waiter.resolve(kind, item)

    # -- what the workers say ------------------------------------------------------------

    async def _follow_registry(self) -> None:
        while True:
            await self._refresh_registry()
            if time.time() - self._synced > 60.0:  # hosts' clocks drift
                await self._sync_clock()
                self._synced = time.time()
            now = self.now()
            for waiter in list(self._parked.values()):
                if waiter.env.deadline is not None and waiter.env.deadline <= now:
                    del self._parked[waiter.env.id]
                    waiter.resolve("expired")
            await anyio.sleep(self.registry_interval)

    async def _refresh_registry(self) -> None:
        """Who serves which agent now, and which agents ever had a queue here."""
        self._queues = {
            dest
            for dest in await self.bus.destinations()
            if not dest.startswith(INBOX_PREFIX)
            and dest not in (INTAKE, RESULTS, WORKFLOW_INTAKE, WORKFLOW_REPLIES)
        }
        live: dict[str, _Live] = {}
        for raw in (await self.bus.members(WORKERS)).values():
            info = read_presence(raw)  # a WorkerPresence, from whichever version wrote it
            agent = str(info.get("agent"))
            known = live.get(agent)
            priced = [
                float(usd)
                for usd in (info.get("server_tools_usd"), known and known.server_tools_usd)
                if isinstance(usd, int | float) and usd >= 0
            ]
            live[agent] = _Live(
                kind=str(info.get("kind", "python")),
                tier=str(info.get("tier", "sonnet")),
                complexity=str(info.get("complexity", "medium")),
                workers=(known.workers if known else 0) + 1,
                server_tools_usd=max(priced) if priced else None,
            )
        self._live = live
        for waiter in [w for w in self._parked.values() if w.agent in live]:
            del self._parked[waiter.env.id]
            self._place(waiter)

    async def _follow_completions(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Settle what finished. The topic is read from its start: completions a former
        leader never saw (it died) are charged now, those it did are not charged again
        (each is counted once, durably), and only new ones feed the status figures."""
        live_from = await self.bus.latest(COMPLETIONS_TOPIC)
        replay_until = live_from.event_id if live_from is not None else "0-0"
        task_status.started()
        async for event in self.bus.subscribe(COMPLETIONS_TOPIC, after="0"):
            replayed = _id_key(event.event_id) <= _id_key(replay_until)
            try:
                body = self.codec.decode(event.frame).body
                records = body["completed"]
                if isinstance(records, dict):  # one record per event, as workers sent it once
                    records = [records]
                outcomes = body.get("outcomes") or []
                if not isinstance(records, list) or not isinstance(outcomes, list):
                    raise TypeError("completed and outcomes must be lists")
            except Exception:  # a foreign or broken event must not stop the coordinator
                self._log.warning("bad_completion_event", event_id=event.event_id)
                continue
            if not replayed:
                for outcome in outcomes:  # work that held no model capacity: counted only
                    if isinstance(outcome, list) and len(outcome) == 2:
                        self._outcomes["ok" if outcome[0] else "failed"] += 1
                        self._latencies.append(float(outcome[1]))
            for record in records:
                if isinstance(record, dict) and isinstance(record.get("msg_id"), str):
                    await self._completion(record, replayed=replayed)

    async def _completion(self, record: dict[str, Any], *, replayed: bool = False) -> None:
        """One finished dispatch: its slot and reservation back to the policy, its cost
        recorded once, the status figures."""
        job_id = record["msg_id"]
        ok = bool(record.get("ok"))
        if not replayed:
            self._outcomes["ok" if ok else "failed"] += 1
            if isinstance(record.get("created_at"), float) and isinstance(
                record.get("finished_at"), float
            ):
                self._latencies.append(record["finished_at"] - record["created_at"])
        usage = Usage(**record["usage"]) if isinstance(record.get("usage"), dict) else None
        held = self._dispatched.pop(job_id, None)
        self._missing.discard(job_id)
        if held is not None and usage is not None:
            total_in = (
                usage.input_tokens
                + usage.cache_creation_input_tokens
                + usage.cache_read_input_tokens
            )
            self.sizer.observe(held[0], held[2].prompt_bytes, total_in)
        if self.policy.holds(job_id):
            cost = self.policy.complete(job_id, usage=usage, ok=ok, model=record.get("model"))
            self._wake.set()
        else:
            cost = self._price(record, usage)
        counted = await self._record_spend(
            cost, record, once=f"{job_id}:{record.get('attempt', 1)}"
        )
        if counted and held is None and not self.policy.holds(job_id):
            # charged by nobody this term: a former leader's call, or one run after a failover
            self.policy.restore_spend(cost, agent=record.get("agent"), tenant=record.get("tenant"))

    def _price(self, record: Mapping[str, Any], usage: Usage | None) -> float:
        """What a completion costs at its model's (else its tier's) prices."""
        if usage is None:
            return float(record.get("cost_usd") or 0.0)
        tier = next(
            (name for name, spec in self.config.tiers.items() if spec.model == record.get("model")),
            record.get("tier"),
        )
        if str(tier) not in self.config.tiers:
            return float(record.get("cost_usd") or 0.0)
        return self.config.price(str(tier), usage)

    # -- failover ------------------------------------------------------------------------

    async def _rebuild(self, token: int) -> None:
        """Before dispatching anything, count what earlier leaders dispatched and is still
        running: every message in a model agent's queue that carries a reservation."""
        restored = 0
        for agent in sorted(self._model_agents()):
            for delivery in await self.bus.entries(agent):
                try:
                    env = self.codec.decode(delivery.frame)
                except Exception:
                    continue  # its worker will dead-letter it; reconciliation settles it
                reservation = Reservation.of(env)
                if reservation is None or reservation.tier not in self.config.tiers:
                    continue
                job = Job(
                    id=env.id, agent=agent, tier=reservation.tier,
                    complexity=self._complexity(agent), submitted_at=min(env.created_at, self.now()),
                    priority=env.priority, deadline=env.deadline, tenant=env.tenant,
                    attempt=env.attempt, request=env.headers.get(H_ROOT) or env.id,
                )  # fmt: skip
                if self.policy.restore_flight(
                    job, tier=reservation.tier, input_tokens=reservation.input_tokens,
                    max_tokens=reservation.max_tokens, cost_usd=reservation.cost_usd,
                ):  # fmt: skip
                    self._dispatched[env.id] = (agent, self.now(), reservation)
                    restored += 1
        if restored:
            self._log.info("in_flight_restored", count=restored, token=token)

    def _model_agents(self) -> set[str]:
        """Agents whose work takes model capacity: Claude-backed definitions, and agents
        whose live workers say so."""
        agents = {name for name, d in self.definitions.items() if not d.entrypoint}
        agents |= {name for name, live in self._live.items() if live.kind != "python"}
        return agents & (self._queues | set(self._live) | set(self.definitions))

    def _complexity(self, agent: str) -> str:
        definition = self.definitions.get(agent)
        live = self._live.get(agent)
        name = (
            definition.computational_complexity
            if definition
            else (live.complexity if live else "medium")
        )
        return name if name in self.config.complexity else "medium"

    # -- leaks -----------------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        while True:
            await anyio.sleep(self.reconcile_interval)
            await self.reconcile()

    async def reconcile(self, *, grace: float | None = None) -> int:
        """Settle dispatches that ended without a completion: gone from their agent's
        queue (a frame the worker could not read, a dead letter of the bus) and still
        gone a round later (a completion may be on its way). They are charged their
        whole reservation, which bounds what they could have cost. Returns how many."""
        grace = self.reconcile_interval if grace is None else grace
        now = self.now()
        by_agent: dict[str, set[str]] = {}
        released = 0
        for job_id, (agent, at, reservation) in list(self._dispatched.items()):
            if now - at < grace:
                continue
            if agent not in by_agent:
                by_agent[agent] = {d.msg_id for d in await self.bus.entries(agent)}
            if job_id in by_agent[agent]:
                self._missing.discard(job_id)
                continue
            if job_id not in self._missing:
                self._missing.add(job_id)
                continue
            self._missing.discard(job_id)
            self._dispatched.pop(job_id, None)
            record = {"msg_id": job_id, "agent": agent, "tier": reservation.tier, "tenant": None}
            if self.policy.holds(job_id):
                cost = self.policy.complete(job_id, usage=None, ok=False)
                await self._record_spend(cost, record, once=f"{job_id}:lost")
                self._wake.set()
                released += 1
                self._log.warning("dispatch_lost", msg_id=job_id, agent=agent, charged_usd=cost)
        return released

    async def _follow_rate_limits(self) -> None:
        async for event in self.bus.subscribe(RATE_LIMIT_TOPIC):
            try:
                snapshot = RateLimitSnapshot.model_validate_json(event.frame)
            except ValueError:
                continue
            if snapshot.tier in self.config.tiers:
                self.policy.observe_snapshot(snapshot)
                self._wake.set()

    # -- budgets across restarts -----------------------------------------------------------

    def _spend_key(self) -> str:
        return "spend." + datetime.fromtimestamp(self.now(), UTC).strftime("%Y-%m-%d")

    async def _record_spend(
        self, usd: float, record: Mapping[str, Any], *, once: str | None = None
    ) -> bool:
        """Per (agent, tenant), so a new leader can restore every budget scope exactly;
        ``once`` makes a replayed completion count nothing more. True if recorded."""
        amounts = {
            "total": usd,
            f"tier:{record.get('tier')}": usd,
            f"spend:{record.get('agent') or ''}|{record.get('tenant') or ''}": usd,
        }
        return await self.bus.add_to_counters(self._spend_key(), amounts, ttl=3 * 86_400, once=once)

    async def recorded_spend(self) -> float:
        """Today's spend as recorded durably (what a new leader starts from)."""
        return (await self.bus.counters(self._spend_key())).get("total", 0.0)

    async def _restore_spend(self) -> None:
        """Today's spend before this leader started counts against today's budgets."""
        for name, usd in (await self.bus.counters(self._spend_key())).items():
            if name.startswith("spend:"):
                agent, _, tenant = name[len("spend:") :].partition("|")
                self.policy.restore_spend(usd, agent=agent or None, tenant=tenant or None)

    # -- status ---------------------------------------------------------------------------

    async def platform_status(self) -> PlatformStatus:
        """The platform's health, shaped like a ``data_platform`` status update."""
        snapshot = self.policy.snapshot()
        queues: dict[str, QueueHealth] = {}
        for dest, stats in (await agent_queues(self.bus)).items():
            queues[dest] = {
                "depth": stats.ready + stats.pending,
                "lag_s": stats.lag_s,
                "dead": stats.dead,
            }
        spent = await self.bus.counters(self._spend_key())
        done = self._outcomes["ok"] + self._outcomes["failed"]
        lat = sorted(self._latencies)
        budget = self.config.budgets.daily_usd
        return {
            "data_platform": {
                "agents": {
                    "running": len(self._live),
                    "workers": sum(live.workers for live in self._live.values()),
                    "waiting_for_a_worker": len(self._parked),
                    "failed": self._outcomes["failed"],
                    "success_rate": round(self._outcomes["ok"] / done, 3) if done else None,
                },
                "queues": queues,
                "scheduling": {
                    "queued": snapshot["queued"],
                    # what dispatched work holds until it settles: zero when idle
                    "held": {
                        "slots": snapshot["in_flight"]["total"],
                        "reserved_usd": round(self.policy.reserved_usd(), 6),
                    },
                    "tiers": {
                        name: {
                            "in_flight": t["in_flight"],
                            "concurrency": t["concurrency"],
                            "requests_left": t["requests"]["level"],
                        }
                        for name, t in snapshot["tiers"].items()
                    },
                },
                "latency": {
                    "p50_s": round(statistics.median(lat), 3) if lat else None,
                    "p95_s": round(lat[int(len(lat) * 0.95) - 1], 3) if len(lat) >= 20 else None,
                },
                "cost_today": {
                    "by_tier": {
                        k[5:]: round(v, 4) for k, v in spent.items() if k.startswith("tier:")
                    },
                    "total_usd": round(spent.get("total", 0.0), 4),
                    "budget_usd": budget,
                },
                "coordinator": {"id": self.id, "leading": self.leading, "token": self.token},
            },
            "hash": f"acp_platform_{int(self.now())}",
        }

    async def _collect(self) -> list[Sample]:
        """Queue depth and lag per destination, in-flight work and rate-limit headroom
        per tier, cost today: read when Prometheus scrapes."""
        samples: list[Sample] = [
            Sample("coordinator_leading", float(self.leading), {"id": self.id}, "1 on the leader")
        ]
        for dest, stats in (await agent_queues(self.bus)).items():
            labels = {"destination": dest}
            samples += [
                Sample(
                    "destination_depth",
                    stats.ready + stats.pending,
                    labels,
                    "Entries waiting or in flight",
                ),
                Sample(
                    "destination_lag_seconds",
                    stats.lag_s,
                    labels,
                    "Age of the oldest entry not yet done",
                ),
                Sample("destination_dead_letters", stats.dead, labels, "Dead letters"),
            ]
        snapshot = self.policy.snapshot()
        samples += [
            Sample(
                "held_slots",
                snapshot["in_flight"]["total"],
                {},
                "Model-call slots held by dispatched work not yet settled (0 when idle)",
            ),
            Sample(
                "held_reserved_usd",
                self.policy.reserved_usd(),
                {},
                "Budget reserved by dispatched work not yet settled (0 when idle)",
            ),
        ]
        for tier, t in snapshot["tiers"].items():
            samples.append(
                Sample("tier_in_flight", t["in_flight"], {"tier": tier}, "Model calls in flight")
            )
            for kind in ("requests", "input_tokens", "output_tokens"):
                samples.append(
                    Sample(
                        "rate_limit_headroom",
                        t[kind]["level"],
                        {"tier": tier, "kind": kind},
                        "Bucket level left this minute",
                    )
                )
        for name, usd in (await self.bus.counters(self._spend_key())).items():
            if name.startswith("tier:"):
                samples.append(
                    Sample("cost_today_usd", usd, {"tier": name[5:]}, "Model cost today by tier")
                )
        return samples

    async def _publish_status_forever(self) -> None:
        while True:
            status = await self.platform_status()
            env = Envelope.for_body(dict(status), sender=INTAKE, recipient=PLATFORM_TOPIC)
            await self.bus.publish(PLATFORM_TOPIC, self.codec.encode(env))
            await anyio.sleep(self.status_interval)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _entry_time(delivery: Delivery | None) -> float | None:
    """When the server appended ``delivery``'s entry (its id starts with that), if known."""
    if delivery is None:
        return None
    try:
        return int(delivery.entry_id.split("-", 1)[0]) / 1000.0
    except ValueError:
        return None


def _float_header(env: Envelope, name: str) -> float | None:
    raw = env.headers.get(name) if env.headers else None
    try:
        return float(raw) if raw else None
    except ValueError:
        return None
