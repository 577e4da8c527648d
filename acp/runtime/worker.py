"""Drive agents on a bus: one processor per agent, a context per message, heartbeats.

The worker is where agents meet the bus. It gives each message a
:class:`WorkerContext` (reply, handoff, status, progress, logger, deadline,
cancellation), turns what the agent returns into effects committed with the
message, answers protocol errors (unknown command, bad fields) with an error
reply, announces itself in the ``workers`` presence group while it lives, and
cancels in-flight work on ``{"cmd": "CANCEL", "msg_id": ...}``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from acp import __version__
from acp.agents.config import Delegation
from acp.agents.delegation import (
    ancestry,
    answer_bytes,
    child_command,
    plan_child,
    read_answer,
)
from acp.agents.ratelimits import RateLimitSnapshot
from acp.agents.sdk import AgentBase
from acp.errors import Continue, SchemaError, SpendLimitReached, Suspend, UnknownCommand
from acp.logs import get_logger
from acp.protocol.body import MessageKind
from acp.protocol.codec import WireCodec
from acp.protocol.envelope import Envelope
from acp.protocol.headers import H_CONV, H_JOIN, H_PART, H_RESERVATION, H_ROOT, H_STEP
from acp.runtime.bus.base import Bus, derived_id
from acp.runtime.keys import (
    CANCELLED_ROOTS,
    COMPLETIONS_TOPIC,
    CONTROL_TOPIC,
    COORDINATORS,
    INBOX_PREFIX,
    INTAKE,
    PROGRESS_TOPIC,
    RATE_LIMIT_TOPIC,
    RESULTS,
    STATUS_TOPIC,
    TOOLS_TOPIC,
    WORKERS,
    intake_queue,
)
from acp.runtime.metrics import Metrics, Sample
from acp.runtime.processor import DeadLettered, Processor, ProcessorStats, to_outgoing
from acp.runtime.records import Completion, WorkerPresence, announced_partitions
from acp.runtime.results import ResultState, is_tracked, result_record
from acp.runtime.tracing import hop, outgoing_trace, record_reply, record_tool, tracing

__all__ = [
    "COMPLETIONS_TOPIC",
    "CONTROL_TOPIC",
    "PROGRESS_TOPIC",
    "RATE_LIMIT_TOPIC",
    "STATUS_TOPIC",
    "Service",
    "Worker",
    "WorkerContext",
    "serve_until_signalled",
]

log = get_logger("acp.worker")


def _trace_id(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 else None


#: kinds that answer a command
_ANSWERS = frozenset({MessageKind.REPLY, MessageKind.ERROR})


@dataclass
class WorkerContext:
    """The runtime side of :class:`acp.agents.Context` for one message."""

    worker: Worker
    agent: AgentBase
    env: Envelope
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    effects: list[Envelope] = field(default_factory=list)
    _cancelled: bool = False
    _handoffs: int = 0
    #: delegate calls made so far by this run of the handler (each names a rendezvous)
    _delegations: int = 0
    #: the trace context messages sent from this hop carry (the hop's span)
    trace: tuple[str | None, str | None] | None = None
    reply_body: dict[str, Any] | None = None

    @property
    def envelope(self) -> Envelope:
        return self.env

    @cached_property
    def log(self) -> Any:
        """Bound when first used: most messages log nothing."""
        return log.bind(
            agent=self.agent.name, msg_id=self.env.id, trace_id=_trace_id(self.env.traceparent)
        )

    @property
    def deadline(self) -> float | None:
        return self.env.deadline

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True
        self.scope.cancel()

    def now(self) -> float:
        return self.worker.bus.now()

    def _message(self, recipient: str, body: Mapping[str, Any], **fields: Any) -> Envelope:
        traceparent, tracestate = self.trace or (self.env.traceparent, self.env.tracestate)
        return Envelope.for_body(
            dict(body),
            sender=self.agent.name,
            recipient=recipient,
            traceparent=traceparent,
            tracestate=tracestate,
            tenant=self.env.tenant,
            created_at=self.worker.bus.now(),
            **fields,
        )

    async def send(
        self,
        recipient: str,
        body: Mapping[str, Any],
        *,
        wait: bool = False,
        timeout: float = 60.0,  # noqa: ASYNC109 - the Context protocol's signature
        tier: str | None = None,
    ) -> dict[str, Any] | None:
        if not wait:
            self.effects.append(self._message(recipient, body, tier=tier))
            return None
        # Sent now, under an id derived from this message's, so a re-run of the
        # handler (after a crash) is deduplicated instead of asking twice.
        self._handoffs += 1
        msg_id = derived_id(self.env.id, str(self._handoffs))
        request = self._message(
            recipient, body, id=msg_id, tier=tier, reply_to=self.worker.bus.inbox
        )
        codec = self.worker.codec
        reply = await self.worker.bus.request(
            to_outgoing(request, codec.encode(request)), timeout=timeout
        )
        return codec.decode(reply.frame).body

    async def publish(self, body: Mapping[str, Any]) -> None:
        status = self._message(STATUS_TOPIC, body)  # an event is addressed to its topic
        await self.worker.bus.publish(
            STATUS_TOPIC, self.worker.codec.encode(status), {"agent": self.agent.name}
        )

    async def turns(self, conversation: str) -> list[dict[str, Any]]:
        return [json.loads(t) for t in await self.worker.bus.read_record(conversation)]

    async def add_turn(self, conversation: str, index: int, turn: Mapping[str, Any]) -> None:
        item = json.dumps(turn, separators=(",", ":"), ensure_ascii=False).encode()
        ttl = self.worker.bus.options.ledger_ttl
        if not await self.worker.bus.append_record(conversation, index, item, ttl=ttl):
            raise RuntimeError(f"conversation {conversation}: turn {index} would leave a gap")

    async def answers(self, join: str) -> dict[str, bytes]:
        return await self.worker.bus.join_parts(join)

    async def keep(self, join: str, part: str, value: bytes) -> None:
        await self.worker.bus.arrive(join, part, value)

    async def delegate(
        self, calls: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[dict[str, Any]]:
        conversation = self.env.headers.get(H_CONV) or self.env.id
        join = f"{conversation}.{self._delegations}"
        self._delegations += 1
        parts = [str(n) for n in range(len(calls))]
        answers = await self.worker.bus.join_parts(join)
        if not all(p in answers for p in parts):
            done: dict[str, bytes] = {}
            children: list[Envelope] = []
            for part, (to, body) in zip(parts, calls, strict=True):
                child = plan_child({"to": to, "body": dict(body)}, me=self.agent.name,
                                   above=ancestry(self.env.headers), reach=[to],
                                   limits=self.worker.delegation, already=len(children))  # fmt: skip
                if child.refused:
                    done[part] = answer_bytes(MessageKind.ERROR, {"error": child.refused})
                else:
                    children.append(
                        child_command(self.env, self.agent.name, to, child.body, join, part)
                    )
            if children:
                state = {H_CONV: conversation, H_STEP: "resume"}
                raise Suspend("resume", join=join, children=children, done=done, state=state)
            answers = done
        return [read_answer(answers[p])[1] for p in parts]

    async def platform(self) -> dict[str, Any]:
        from acp.runtime.status import read_status  # status reads worker presence: import late

        return await read_status(self.worker.bus)

    async def tool_used(self, event: Mapping[str, Any]) -> None:
        self.log.info("tool_call", **{k: v for k, v in event.items() if k != "agent"})
        record_tool(event)
        metrics = self.worker.metrics
        if metrics is not None:
            labels = {"agent": self.agent.name, "tool": str(event.get("tool"))}
            metrics.inc("acp_tool_calls_total", {**labels, "outcome": str(event.get("outcome"))},
                        help="Tool calls made in agent loops, by outcome.")  # fmt: skip
            metrics.observe("acp_tool_call_seconds", float(event.get("duration_ms", 0)) / 1000,
                            labels, help="Time tool calls took.")  # fmt: skip
        body = {"tool_call": dict(event), "msg_id": self.env.id}
        event_env = self._message(TOOLS_TOPIC, body, correlation_id=self.env.id)
        await self.worker.bus.publish(
            TOOLS_TOPIC, self.worker.codec.encode(event_env), {"agent": self.agent.name}
        )

    async def progress(self, fraction: float, note: str = "") -> None:
        body = {
            "progress": {
                "msg_id": self.env.id,
                "fraction": max(0.0, min(1.0, fraction)),
                "note": note,
            }
        }
        event = self._message(PROGRESS_TOPIC, body, correlation_id=self.env.id)
        await self.worker.bus.publish(
            PROGRESS_TOPIC, self.worker.codec.encode(event), {"agent": self.agent.name}
        )


class Worker:
    """Run ``agents`` on ``bus`` until :meth:`stop` (or cancellation)."""

    def __init__(
        self,
        bus: Bus,
        agents: Sequence[AgentBase],
        *,
        codec: WireCodec | None = None,
        concurrency: int = 16,
        heartbeat: float = 5.0,
        grace: float = 30.0,
        worker_id: str | None = None,
        spend_limit_pause: float = 900.0,
        metrics: Metrics | None = None,
        delegation: Delegation | None = None,
    ) -> None:
        """``delegation`` limits the trees the agents here grow (the runtime config's
        ``[delegation]``): Python agents' per-turn count and depth, and every tree's
        count of delegations per root."""
        if not agents:
            raise ValueError("a worker needs at least one agent")
        self.bus = bus
        self.agents = list(agents)
        self.codec = codec or WireCodec()
        self.delegation = delegation or Delegation()
        self.concurrency = concurrency
        self.heartbeat = heartbeat
        self.host = socket.gethostname()
        self.worker_id = worker_id or f"{self.host}-{os.getpid()}"
        self.started_at = time.time()
        self.processors = {
            agent.name: Processor(
                bus,
                agent.name,
                self._handler(agent),
                codec=self.codec,
                consumer=self.worker_id,
                concurrency=concurrency,
                grace=grace,
                route=self.route,
                on_start=self._started,
                on_dead=partial(self._dead, agent),
                check_ledger=agent.once_per_message,
            )
            for agent in self.agents
        }
        self._running: dict[str, WorkerContext] = {}
        #: completion records not yet published, and the signal that some are waiting
        self._finished: list[Completion] = []
        #: (ok, seconds) of finished work that held no model capacity
        self._outcomes: list[tuple[int, float]] = []
        self._finished_ready = anyio.Event()
        self._via_coordinator = False
        #: the intake partitions the coordinators announce
        self._partitions = 1
        self._stopping = anyio.Event()
        self.spend_limit_pause = spend_limit_pause
        self.metrics = metrics
        if metrics is not None:
            metrics.collector(self._collect)
        for agent in self.agents:
            # model-backed agents report rate-limit headers; the coordinator follows them
            agent.watch_rate_limits(self._publish_rate_limits)

    def stop(self) -> None:
        """Stop reading; in-flight work finishes within the grace period."""
        for processor in self.processors.values():
            processor.stop()
        self._stopping.set()

    def stats(self) -> dict[str, ProcessorStats]:
        return {name: p.stats for name, p in self.processors.items()}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as background:
            await self._announce()
            background.start_soon(self._heartbeats)
            background.start_soon(self._follow_control)
            background.start_soon(self._publish_completions)
            try:
                async with AsyncExitStack() as lifespans:
                    for agent in self.agents:  # what agents hold open (MCP connections)
                        await lifespans.enter_async_context(agent.lifespan())
                    async with anyio.create_task_group() as tg:
                        for processor in self.processors.values():
                            await tg.start(processor.run)
                        task_status.started()
                        log.info(
                            "worker_started",
                            worker=self.worker_id,
                            agents=[a.name for a in self.agents],
                        )
            finally:
                background.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await self._flush_completions()
                    for agent in self.agents:
                        await self.bus.withdraw(WORKERS, f"{self.worker_id}/{agent.name}")
        log.info("worker_stopped", worker=self.worker_id)

    def route(self, env: Envelope) -> str:
        """Commands for agents go through the coordinator while one is alive (it
        schedules them); replies and events go straight to their recipient."""
        if (
            self._via_coordinator
            and env.kind is MessageKind.COMMAND
            and not env.recipient.startswith(INBOX_PREFIX)
        ):
            return intake_queue(env.recipient, self._partitions)
        return env.recipient

    def pause_tier(self, tier: str, seconds: float) -> None:
        """Take no new work for agents of ``tier`` (a spend limit was hit)."""
        for agent in self.agents:
            if agent.tier == tier:
                self.processors[agent.name].pause(seconds)

    async def _started(self, env: Envelope) -> None:
        """A tracked message is running here now (``acp result`` says so)."""
        if env.headers and is_tracked(env):
            record = result_record(
                env.id, ResultState.RUNNING, agent=env.recipient, command=env.command,
                detail=f"on worker {self.worker_id}, attempt {env.attempt}",
            )  # fmt: skip
            await self.bus.send(record)

    async def _dead(self, agent: AgentBase, letter: DeadLettered) -> None:
        """A message refused before its handler ran (past its deadline, delivered too
        often) ends as surely as a reply: the coordinator hears of it like of any other
        completion, so the capacity it held comes back. A handler that ran has said so."""
        if letter.env is not None and not letter.ran:
            # refused at its first delivery, it never reached the model: it cost nothing;
            # after more, an earlier delivery may have paid for a call (charged its hold)
            first = letter.delivery.deliveries <= 1
            self._completed(agent, letter.env, None, dead=letter.reason, unpaid=first)

    def _completed(
        self,
        agent: AgentBase,
        env: Envelope,
        body: dict[str, Any] | None,
        *,
        dead: str | None = None,
        continued: str | None = None,
        unpaid: bool = False,
    ) -> None:
        """Tell the coordinator this message no longer holds capacity, and what it cost.

        Records leave in batches (one event holds every record finished since the
        last one left): one event per message would cost a round trip each. Work
        that holds no model capacity (a Python agent's) is only counted: its
        outcome and latency, for the platform status."""
        finished = time.time()
        ok = body is not None and "error" not in body
        if agent.kind == "python" and not dead:
            self._outcomes.append((int(ok), round(finished - env.created_at, 6)))
            if self.metrics is not None:
                done = {"ok": ok, "created_at": env.created_at, "finished_at": finished}
                self._measure(agent.name, done)
            self._finished_ready.set()
            return
        meta = body.get("_acp") if isinstance(body, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        own = meta.get("call")
        call: dict[str, Any] = own if isinstance(own, dict) else meta  # this call's own
        record: Completion = {
            "msg_id": env.id,
            "agent": agent.name,
            "tier": call.get("tier") or env.tier or agent.tier,
            "model": call.get("model"),
            "ok": ok or continued is not None,
            "usage": {"input_tokens": 0, "output_tokens": 0} if unpaid else call.get("usage"),
            "cost_usd": call.get("cost_usd", 0.0),
            "tenant": env.tenant,
            "created_at": env.created_at,
            "finished_at": finished,
            "attempt": env.attempt,
        }
        if dead:
            record["dead"] = dead
        if continued:
            record["continued"] = continued
        if self.metrics is not None:
            self._measure(agent.name, record)
        self._finished.append(record)
        self._finished_ready.set()

    async def _publish_completions(self) -> None:
        while True:
            await self._finished_ready.wait()
            self._finished_ready = anyio.Event()
            await anyio.lowlevel.checkpoint()  # what finishes in this turn leaves with it
            await self._flush_completions()

    async def _flush_completions(self) -> None:
        batch, self._finished = self._finished, []
        if batch:
            event = Envelope.for_body({"completed": batch}, sender=self.worker_id, recipient=INTAKE)
            await self.bus.publish(COMPLETIONS_TOPIC, self.codec.encode(event))

    def _measure(self, agent: str, done: Mapping[str, Any]) -> None:
        assert self.metrics is not None
        m = self.metrics
        outcome = "ok" if done["ok"] else "failed"
        m.inc(
            "messages_handled_total",
            {"agent": agent, "outcome": outcome},
            help="Messages handled by agent",
        )
        m.observe(
            "message_latency_seconds", done["finished_at"] - done["created_at"], {"agent": agent},
            help="From a message's creation to the end of its handling",
        )  # fmt: skip
        tier = str(done.get("tier") or "none")
        for kind, tokens in (done.get("usage") or {}).items():
            m.inc(
                "tokens_total",
                {"tier": tier, "kind": kind},
                float(tokens),
                help="Model tokens by tier and kind",
            )
        if done.get("cost_usd"):
            m.inc(
                "cost_usd_total",
                {"tier": tier},
                float(done["cost_usd"]),
                help="Model cost in USD by tier",
            )

    async def _collect(self) -> list[Sample]:
        samples = [
            Sample(
                "dead_letters_trimmed",
                count,
                {"agent": dest},
                "Oldest dead letters dropped to keep the dead-letter stream within dead_max",
            )
            for dest, count in self.bus.dead_trimmed.items()
        ]
        for name, processor in self.processors.items():
            stats, labels = processor.stats, {"agent": name}
            samples += [
                Sample(
                    "messages_retried", stats.retried, labels, "Messages handed back for a retry"
                ),
                Sample(
                    "messages_dead_lettered",
                    stats.dead_lettered,
                    labels,
                    "Messages sent to the dead letters",
                ),
                Sample(
                    "messages_in_flight",
                    len(processor._in_flight),
                    labels,
                    "Messages being handled now",
                ),
            ]
            queue = await self.bus.stats(name)
            samples += [
                Sample(
                    "queue_depth",
                    queue.ready + queue.pending,
                    labels,
                    "Entries waiting or in flight",
                ),
                Sample(
                    "queue_lag_seconds", queue.lag_s, labels, "Age of the oldest entry not yet done"
                ),
            ]
        return samples

    async def _publish_rate_limits(self, tier: str, snapshot: RateLimitSnapshot) -> None:
        await self.bus.publish(
            RATE_LIMIT_TOPIC, snapshot.model_dump_json().encode(), {"tier": tier}
        )

    # -- presence ---------------------------------------------------------------------

    async def _announce(self) -> None:
        await self._find_coordinators()
        for agent in self.agents:
            stats = self.processors[agent.name].stats
            info: WorkerPresence = {
                "worker": self.worker_id,
                "agent": agent.name,
                "tier": agent.tier,
                "complexity": agent.complexity,
                # only Claude calls use model capacity; the coordinator schedules those
                "kind": agent.kind,
                "capacity": self.concurrency,
                "in_flight": stats.in_flight,
                "handled": stats.handled,
                "version": f"{__version__}/{agent.version}",
                "host": self.host,
                "pid": os.getpid(),
                "started_at": self.started_at,
                "server_tools_usd": agent.server_tools_usd,
            }
            await self.bus.announce(
                WORKERS,
                f"{self.worker_id}/{agent.name}",
                json.dumps(info).encode(),
                ttl=self.heartbeat * 3,
            )

    async def _find_coordinators(self) -> None:
        coordinators = await self.bus.members(COORDINATORS)
        self._via_coordinator = bool(coordinators)
        self._partitions = announced_partitions(coordinators)

    async def _heartbeats(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat)
            await self._announce()

    # -- control: cancels, coordinators ------------------------------------------------

    async def _follow_control(self) -> None:
        """Cancels, and coordinators that start: commands sent from here go through a
        new one at once, not from this worker's next heartbeat."""
        async for event in self.bus.subscribe(CONTROL_TOPIC):
            if target := event.headers.get("cancel"):
                self._cancel_local(target)
            elif event.headers.get("coordinator"):
                await self._find_coordinators()

    def _cancel_local(self, msg_id: str) -> bool:
        """Cancel ``msg_id`` if it runs here, and every step of its tree that does."""
        found = False
        for ctx in list(self._running.values()):
            if msg_id in (ctx.env.id, ctx.env.headers.get(H_ROOT)):
                ctx.cancel()
                ctx.log.info("cancelled", target=msg_id)
                found = True
        return found

    async def _cancelled_tree(self, env: Envelope) -> bool:
        """A step or delegated command of a tree whose root was cancelled: it does not
        run (asked only of messages in a chain or a tree, which carry their root)."""
        root = env.headers.get(H_ROOT)
        if not root:
            return False
        return bool(await self.bus.marked(CANCELLED_ROOTS, [root]))

    async def _cancel(self, env: Envelope) -> dict[str, Any]:
        target = env.body.get("msg_id")
        if not isinstance(target, str) or not target:
            return {"error": "bad_request", "detail": "CANCEL needs a 'msg_id' string"}
        here = self._cancel_local(target)
        # Steps and delegations of its tree not yet running learn it when they start;
        # other workers of this agent may hold it running: tell them all.
        await self.bus.mark(CANCELLED_ROOTS, [target], ttl=self.bus.options.ledger_ttl)
        await self.bus.publish(CONTROL_TOPIC, b"", {"cancel": target})
        return {"cancel": target, "found_here": here}

    # -- handling ---------------------------------------------------------------------

    def _handler(self, agent: AgentBase) -> Any:
        async def handle(env: Envelope) -> list[Envelope]:
            if env.kind in _ANSWERS and H_JOIN in env.headers:
                return await self._arrive(env)
            if env.command == "CANCEL":
                return self._reply(env, await self._cancel(env))
            if H_ROOT in env.headers and await self._cancelled_tree(env):
                body = {"cancelled": True, "msg_id": env.id, "root": env.headers[H_ROOT]}
                return self._reply(env, body)
            ctx = WorkerContext(self, agent, env)
            if not tracing():
                return await run(ctx)
            attributes = {
                "acp.agent": agent.name,
                "acp.command": env.command,
                "acp.tier": env.tier or agent.tier,
            }
            with hop(f"{agent.name} {env.command or env.kind}", env, attributes) as span:
                ctx.trace = outgoing_trace(env)
                effects = await run(ctx)
                record_reply(span, ctx.reply_body)
                return effects

        async def run(ctx: WorkerContext) -> list[Envelope]:
            env = ctx.env
            self._running[env.id] = ctx
            body: dict[str, Any] | None = None
            step: Continue | None = None
            try:
                with ctx.scope:
                    body = await agent.handle(env, ctx)
            except Suspend as exc:
                # the step waits for other agents: its next step is sent by whoever
                # brings the last answer; nothing is held here meanwhile
                step = exc
                then = self._continuation(env, exc)
                children = [c for c in exc.children if isinstance(c, Envelope)]
                if ctx.trace is not None:  # the children's spans nest under this hop's
                    traceparent, tracestate = ctx.trace
                    children = [
                        c.evolve(traceparent=traceparent, tracestate=tracestate) for c in children
                    ]
                children = await self._within_tree_limit(then, exc, children)
                expect = len(children) + len(exc.done)
                await self.bus.open_join(
                    exc.join, expect, self.codec.encode(then), exc.done,
                    ttl=self.bus.options.ledger_ttl,
                )  # fmt: skip
                # nothing left to wait for (all refused): the next step goes now
                return [*ctx.effects, *(children or [then])]
            except Continue as exc:
                # this message's call is settled; the next step is new work, committed
                # with this message and scheduled like any other
                step = exc
                return [*ctx.effects, self._continuation(env, exc)]
            except SpendLimitReached as exc:
                # dead-lettered with reason "spend_limit" (a Rejected); stop spending on that tier
                ctx.log.error("spend_limit", tier=exc.tier)
                self.pause_tier(exc.tier, self.spend_limit_pause)
                raise
            except (UnknownCommand, SchemaError) as exc:
                # the sender's mistake: tell it precisely, do not retry
                ctx.log.warning("bad_command", error=str(exc))
                fields = [{"path": p, "message": m} for p, m in getattr(exc, "errors", [])]
                body = {
                    "error": exc.code,
                    "detail": str(exc),
                    **({"fields": fields} if fields else {}),
                }
                ctx.reply_body = body
                return ctx.effects + self._reply(env, body, kind=MessageKind.ERROR, trace=ctx.trace)
            finally:
                self._running.pop(env.id, None)
                if step is not None:
                    self._completed(agent, env, {"_acp": step.meta}, continued=step.step)
                else:
                    self._completed(agent, env, body)
            if ctx.scope.cancelled_caught:
                body = {"cancelled": True, "msg_id": env.id}
            ctx.reply_body = body
            return ctx.effects + self._reply(env, body, trace=ctx.trace)

        return handle

    async def _within_tree_limit(
        self, then: Envelope, step: Suspend, children: list[Envelope]
    ) -> list[Envelope]:
        """The children a tree still has room for (``max_children_per_root``); the
        rest are answered here, as refusals the model or the handler reads."""
        limit = self.delegation.max_children_per_root
        tree = f"tree.{then.headers.get(H_ROOT) or then.id}"
        used = int((await self.bus.counters(tree)).get("children", 0))
        room = max(0, limit - used)
        for child in children[room:]:
            refusal = {"error": f"refused: at most {limit} delegations per request"}
            step.done[child.headers[H_PART]] = answer_bytes(MessageKind.ERROR, refusal)
        sent = children[:room]
        # counted once per rendezvous: a re-run of this step changes nothing
        ttl = self.bus.options.ledger_ttl
        await self.bus.add_to_counters(tree, {"children": len(sent)}, ttl=ttl, once=step.join)
        return sent

    async def _arrive(self, env: Envelope) -> list[Envelope]:
        """An answer to a delegated command: brought to its rendezvous; the last one
        in sends the waiting step on (to be scheduled like any work)."""
        part = env.headers.get(H_PART) or env.correlation_id or env.id
        then = await self.bus.arrive(env.headers[H_JOIN], part, answer_bytes(env.kind, env.body))
        return [] if then is None else [self.codec.decode(then)]

    @staticmethod
    def _continuation(env: Envelope, step: Continue) -> Envelope:
        """The next step of ``env`` as a message of its own: the same command, under an
        id derived from this one (a re-run sends the same step, which the bus then
        drops), answering to the same sender and correlating to the chain's root."""
        root = env.headers.get(H_ROOT) or env.id
        headers = {**env.headers, **step.state, H_ROOT: root}
        headers.pop(H_RESERVATION, None)  # the next dispatch makes its own
        return env.evolve(
            id=derived_id(env.id, step.step),
            tier=step.tier or env.tier,
            correlation_id=env.correlation_id or env.id,
            headers=headers,
        )

    @staticmethod
    def _reply(
        env: Envelope,
        body: dict[str, Any] | None,
        *,
        kind: MessageKind = MessageKind.REPLY,
        trace: tuple[str | None, str | None] | None = None,
    ) -> list[Envelope]:
        """Replies go where the sender asked (``reply_to``); a tracked message without
        one has its reply kept as its result; otherwise there is none."""
        if body is None:
            return []
        tracked = bool(env.headers) and is_tracked(env)
        if not env.reply_to and not tracked:
            return []
        if kind is MessageKind.REPLY and "error" in body:
            kind = MessageKind.ERROR
        if trace is None:
            reply = env.reply(body, kind=kind)
        else:
            reply = env.reply(body, kind=kind, traceparent=trace[0], tracestate=trace[1])
        if not env.reply_to:
            reply = reply.evolve(recipient=RESULTS)
        return [reply]


class Service(Protocol):
    """Anything the CLI runs until a signal: a worker, a coordinator."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None: ...

    def stop(self) -> None: ...


async def serve_until_signalled(*services: Service) -> None:
    """Run ``services`` until SIGINT or SIGTERM, then stop them gracefully: workers
    stop reading, finish in-flight work within their grace period and leave the
    rest pending for another worker."""
    async with anyio.create_task_group() as tg:
        for service in services:
            await tg.start(service.run)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("stopping", signal=signal.Signals(signum).name)
                for service in services:
                    service.stop()
                break
