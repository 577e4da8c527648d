"""Where workflow state lives between messages and across coordinator restarts.

The runner keeps no state of its own worth losing: a workflow is its original
message, the first-send time of each step, each step's result and, once
finished, its report. Everything else (what to send next, whether it is done)
is recomputed from those facts, so the store only needs a few primitives, each
safe to repeat:

* ``create`` stores the workflow once (a second start changes nothing);
* ``mark_sent`` keeps the *first* send time of a step (re-sends keep it);
* ``record`` keeps the *first* result of a step (a duplicate reply, or a reply
  racing a timeout, changes nothing);
* ``finish`` keeps the first report and retires the workflow from the active set.

``RedisWorkflowStore`` keeps each workflow in one hash, ``acp:{workflow:<id>}``
(one hash tag, so every multi-field step is one slot and one ``MULTI``), the
active ids in ``acp:workflows:active`` and a step-id index in
``acp:workflows:steps`` (replies carry only the step's message id).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis

from acp.logs import get_logger
from acp.runtime.bus.retry import retrying
from acp.runtime.keys import WORKFLOW_STEPS, WORKFLOWS_ACTIVE, workflow_key

__all__ = [
    "WORKFLOWS_ACTIVE",
    "WORKFLOW_STEPS",
    "MemoryWorkflowStore",
    "RedisWorkflowStore",
    "StoredWorkflow",
    "WorkflowStore",
    "workflow_key",
]

log = get_logger("acp.workflows.store")
T = TypeVar("T")

#: keep a step's first result, and only for a workflow that exists (not one expired)
_RECORD = """
if redis.call('HEXISTS', KEYS[1], 'record') == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
"""


@dataclass(slots=True)
class StoredWorkflow:
    """Everything known about one workflow, as stored."""

    id: str
    #: the workflow message and its settings, as the runner wrote them at start
    record: dict[str, Any]
    #: step path -> time the step was first sent
    sent: dict[str, float] = field(default_factory=dict)
    #: step path -> the step's result (first one wins)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the final report, once finished
    report: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.report is not None


class WorkflowStore(Protocol):
    """The primitives the runner needs; every one is idempotent."""

    async def create(self, workflow_id: str, record: Mapping[str, Any]) -> bool:
        """Store a new workflow and mark it active; False (and no change) if it exists.
        An existing unfinished workflow is (re)marked active."""

    async def load(self, workflow_id: str) -> StoredWorkflow | None: ...

    async def mark_sent(self, workflow_id: str, path: str, step_id: str, at: float) -> float:
        """Index ``step_id`` and keep the first send time of ``path``; returns that time."""

    async def locate(self, step_id: str) -> tuple[str, str] | None:
        """The (workflow id, step path) a step message id belongs to."""

    async def record(self, workflow_id: str, path: str, result: Mapping[str, Any]) -> bool:
        """Keep ``result`` unless the step already has one; True if this one was kept."""

    async def finish(
        self, workflow_id: str, report: Mapping[str, Any], step_ids: Sequence[str]
    ) -> bool:
        """Keep the first report, retire the workflow and its step index entries."""

    async def active(self) -> list[str]: ...

    async def deactivate(self, workflow_id: str) -> None:
        """Drop an id from the active set (a finished or vanished workflow)."""


class MemoryWorkflowStore:
    """In-process store for tests and embedded use; same semantics as the Redis one."""

    def __init__(self) -> None:
        self._workflows: dict[str, StoredWorkflow] = {}
        self._active: dict[str, None] = {}
        self._steps: dict[str, tuple[str, str]] = {}

    async def create(self, workflow_id: str, record: Mapping[str, Any]) -> bool:
        existing = self._workflows.get(workflow_id)
        if existing is None:
            self._workflows[workflow_id] = StoredWorkflow(workflow_id, _copy(record))
        if existing is None or not existing.finished:
            self._active.setdefault(workflow_id)
        return existing is None

    async def load(self, workflow_id: str) -> StoredWorkflow | None:
        wf = self._workflows.get(workflow_id)
        if wf is None:
            return None
        # a copy, as from Redis: callers cannot change the store by accident
        return StoredWorkflow(
            wf.id,
            _copy(wf.record),
            dict(wf.sent),
            {p: _copy(r) for p, r in wf.results.items()},
            _copy(wf.report) if wf.report is not None else None,
        )

    async def mark_sent(self, workflow_id: str, path: str, step_id: str, at: float) -> float:
        self._steps[step_id] = (workflow_id, path)
        return self._workflows[workflow_id].sent.setdefault(path, at)

    async def locate(self, step_id: str) -> tuple[str, str] | None:
        return self._steps.get(step_id)

    async def record(self, workflow_id: str, path: str, result: Mapping[str, Any]) -> bool:
        wf = self._workflows.get(workflow_id)
        if wf is None or path in wf.results:
            return False
        wf.results[path] = _copy(result)
        return True

    async def finish(
        self, workflow_id: str, report: Mapping[str, Any], step_ids: Sequence[str]
    ) -> bool:
        wf = self._workflows.get(workflow_id)
        first = wf is not None and wf.report is None
        if wf is not None and first:
            wf.report = _copy(report)
        self._active.pop(workflow_id, None)
        for step_id in step_ids:
            self._steps.pop(step_id, None)
        return first

    async def active(self) -> list[str]:
        return list(self._active)

    async def deactivate(self, workflow_id: str) -> None:
        self._active.pop(workflow_id, None)


def _copy(value: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy through JSON: what the Redis store would give back."""
    copied: dict[str, Any] = json.loads(json.dumps(value))
    return copied


class RedisWorkflowStore:
    """Workflow state in Redis; ``bus.workflow_store()`` makes one on the bus's pool.

    Finished workflows expire after ``retention`` seconds. Lost connections are
    retried for ``reconnect_timeout`` seconds, then ``ConnectionLost`` is raised.
    """

    def __init__(
        self,
        redis: aioredis.Redis | aioredis.RedisCluster,
        *,
        retention: float = 7 * 24 * 3600.0,
        reconnect_timeout: float = 30.0,
    ) -> None:
        self.redis = redis
        self.retention = retention
        self.reconnect_timeout = reconnect_timeout

    async def _retrying(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Every operation is idempotent, so a lost connection is simply retried."""
        return await retrying(fn, where="the workflow store", timeout=self.reconnect_timeout)

    async def create(self, workflow_id: str, record: Mapping[str, Any]) -> bool:
        key = workflow_key(workflow_id)

        async def run() -> bool:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hsetnx(key, "record", json.dumps(record))
            pipe.hexists(key, "report")
            created, finished = await pipe.execute()
            if not finished:
                # after the hash: a crash in between leaves a workflow the next
                # start (a redelivered workflow message) marks active again
                await self.redis.sadd(WORKFLOWS_ACTIVE, workflow_id)
            return bool(created)

        return await self._retrying(run)

    async def load(self, workflow_id: str) -> StoredWorkflow | None:
        key = workflow_key(workflow_id)
        raw: Any = await self._retrying(lambda: self.redis.hgetall(key))
        if b"record" not in raw:
            return None
        wf = StoredWorkflow(workflow_id, json.loads(raw[b"record"]))
        for name, value in raw.items():
            kind, _, path = name.decode().partition(":")
            if kind == "sent":
                wf.sent[path] = float(value)
            elif kind == "result":
                wf.results[path] = json.loads(value)
            elif kind == "report":
                wf.report = json.loads(value)
        return wf

    async def mark_sent(self, workflow_id: str, path: str, step_id: str, at: float) -> float:
        key = workflow_key(workflow_id)

        async def run() -> float:
            # the index first: a reply can only come after the send that follows
            await self.redis.hset(WORKFLOW_STEPS, step_id, f"{workflow_id} {path}")
            pipe = self.redis.pipeline(transaction=True)
            pipe.hsetnx(key, f"sent:{path}", repr(at))
            pipe.hget(key, f"sent:{path}")
            _, first = await pipe.execute()
            return float(first)

        return await self._retrying(run)

    async def locate(self, step_id: str) -> tuple[str, str] | None:
        raw: Any = await self._retrying(lambda: self.redis.hget(WORKFLOW_STEPS, step_id))
        if raw is None:
            return None
        workflow_id, _, path = raw.decode().partition(" ")
        return workflow_id, path

    async def record(self, workflow_id: str, path: str, result: Mapping[str, Any]) -> bool:
        key = workflow_key(workflow_id)
        payload = json.dumps(result)
        kept: Any = await self._retrying(
            lambda: self.redis.eval(_RECORD, 1, key, f"result:{path}", payload)
        )
        return bool(kept)

    async def finish(
        self, workflow_id: str, report: Mapping[str, Any], step_ids: Sequence[str]
    ) -> bool:
        key = workflow_key(workflow_id)

        async def run() -> bool:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hsetnx(key, "report", json.dumps(report))
            pipe.expire(key, max(1, int(self.retention)))
            first, _ = await pipe.execute()
            # other slots, so not in the MULTI; repeating them is harmless
            await self.redis.srem(WORKFLOWS_ACTIVE, workflow_id)
            if step_ids:
                await self.redis.hdel(WORKFLOW_STEPS, *step_ids)
            return bool(first)

        return await self._retrying(run)

    async def active(self) -> list[str]:
        members: Any = await self._retrying(lambda: self.redis.smembers(WORKFLOWS_ACTIVE))
        return sorted(m.decode() for m in members)

    async def deactivate(self, workflow_id: str) -> None:
        await self._retrying(lambda: self.redis.srem(WORKFLOWS_ACTIVE, workflow_id))
