"""The coordinator's scheduling policy: a pure object driven by an injected clock.

The daemon owns I/O (Redis, the bus, timers); this object owns every decision.
It never sleeps, reads no wall clock and draws no random numbers, so the same
calls at the same clock readings give the same decisions (tests use a fake
clock; ``bench/scheduler.py`` a virtual one). The daemon's loop::

    policy.submit(job)                      # work arrived (or was re-read after a restart)
    decisions = policy.decide()             # after every submit/complete/observe, and at wake_at
    for d in decisions.dispatch: send d.job to a worker with model=d.model, max_tokens=d.max_tokens
    for r in decisions.dead_letter: dead-letter r.job with r.reason ("deadline")
    for r in decisions.refused: answer r.job with an error naming r.reason ("budget", "too_large")
    for e in decisions.events: log / publish e (deferrals, refusals, step-downs, limit changes)
    sleep until decisions.wake_at (None: until the next submit or completion)
    ...
    policy.observe_snapshot(snapshot)      # the reply's rate-limit headers, *before* complete()
    policy.complete(job_id, usage=reply_usage, ok=valid, model=reply_model)
    if not valid and (up := policy.escalate(job, from_tier=d.tier)): policy.submit(up)

What it enforces, per tier (``RuntimeConfig.tiers``):

* **Concurrency**: at most ``concurrency`` calls in flight.
* **Rate limits**: three :class:`~acp.runtime.scheduling.buckets.TokenBucket`
  (requests, input tokens, output tokens per minute). A dispatch takes 1
  request, the input estimate and the full ``max_tokens`` of output (the API
  reserves ``max_tokens`` at request start); completion gives back the unused
  output (the API re-credits it at the end of the request) and settles the
  input estimate against the reported input (refund or debt). When the API
  reports a combined ``tokens`` limit, a fourth bucket charges input plus
  ``max_tokens``. Reported limits are adopted as they are, up or down (the
  configuration is only where a tier starts); reported remaining levels lower
  ours, never raise them. Every charge lands in our bucket no later than in
  the API's and every refund no earlier, so the runtime never provokes a 429 by
  itself. That is exact when ``Job.input_tokens`` is given (the coordinator
  bounds it by the request's bytes); otherwise the input reserved is the
  learned mean plus ``input_sigmas`` deviations, and each reply's headers pull
  our levels down to the API's if an underestimate left ours higher.
* **Ordering**, per tier: each priority level (0-9) is a queue in arrival
  order, and the levels share the tier by weight, the weight doubling every
  ``priority_doubling`` levels (default 3): while priorities 8 and 2 both have
  work waiting, 8 gets four dispatches for each of 2's. A level whose work
  arrives slower than its share is served at its first turn, as under strict
  priority; a level that waited earns no credit for later. Low priority is thus
  never starved (its share is fixed), yet never overtakes work more important
  than it by more than its share. Work whose deadline is less than
  ``deadline_horizon_s`` away takes every other dispatch while other work
  waits, earliest deadline first. A tier whose next job does not fit its buckets
  (or its budget) waits for it: no other job overtakes, so big jobs do not
  starve either. Each decision looks only at the heads of the levels (ten) and
  of a deadline heap: O(log n) per job moved.
* **Deadlines**: a queued job whose deadline has passed is dead-lettered with
  reason ``deadline``; in-flight work is the worker's to cancel.
* **Budgets** (:mod:`~acp.runtime.scheduling.budgets`): the worst case (the
  input reserved, priced as cache writes, + ``max_tokens`` of output) is
  reserved at dispatch in the global, per-agent and per-tenant scopes and
  replaced by the actual cost on completion, so ``spent + reserved`` never
  passes a limit (as far as the input reserved covers the prompt: exactly so
  with ``Job.input_tokens``). A job that does not fit waits while in-flight reservations may
  still free enough, is deferred to the next budget day when they cannot
  (event ``deferred``), and is refused when its worst case exceeds the whole
  daily limit or its deadline comes before the reset (event ``refused``).
* **Tiers**: :meth:`SchedulingPolicy.escalate` moves failed work one tier up
  within the job's allowed tiers; under budget pressure (a scope below
  ``pressure_fraction`` of its limit, or the requested tier does not fit) a job
  whose allowed tiers include a cheaper one runs there (event ``step_down``).
  Never otherwise.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from acp.agents.config import RuntimeConfig, TierSpec, Usage
from acp.errors import ConfigError
from acp.runtime.scheduling.buckets import TokenBucket
from acp.runtime.scheduling.budgets import REQUEST_SCOPE, BudgetLedger, BudgetScope

if TYPE_CHECKING:
    from acp.agents.ratelimits import RateLimitSnapshot

__all__ = [
    "Decisions",
    "Dispatch",
    "EventKind",
    "Job",
    "PolicyEvent",
    "Rejection",
    "RejectionReason",
    "SchedulingPolicy",
]

DAY_S = 86_400.0

RejectionReason = Literal["deadline", "budget", "too_large"]
EventKind = Literal["deferred", "refused", "dead_letter", "step_down", "limits", "paused"]
_Verdict = Literal["go", "wait", "defer", "refuse"]
_State = Literal["queued", "deferred", "held", "gone"]


# -- values the daemon sees ----------------------------------------------------------------


def _per(scope: BudgetScope) -> str:
    return "request" if scope.name.startswith(REQUEST_SCOPE) else "daily"


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One unit of model work, as the coordinator queues it.

    ``tier`` is the requested tier name (a key of ``RuntimeConfig.tiers``);
    ``allowed_tiers`` lists where the coordinator may move it (empty: only
    ``tier``). ``submitted_at`` is on the policy's clock and orders a priority
    level, so a re-submitted or escalated job keeps its place. ``input_tokens`` is the
    prompt's size when the daemon knows it (``count_tokens``); otherwise the
    policy's learned estimate is reserved. ``max_tokens`` overrides the
    complexity class's.
    """

    id: str
    agent: str
    tier: str
    complexity: str
    submitted_at: float
    priority: int = 5
    deadline: float | None = None
    tenant: str | None = None
    allowed_tiers: tuple[str, ...] = ()
    attempt: int = 1
    input_tokens: int | None = None
    max_tokens: int | None = None
    #: the request tree this job belongs to (its root's id): ``per_request_usd``
    request: str | None = None
    #: the most the API's server tools (web search) may bill for this turn, USD
    server_tools_usd: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 9:
            raise ValueError(f"priority must be 0-9, got {self.priority}")
        if self.attempt < 1:
            raise ValueError(f"attempt counts from 1, got {self.attempt}")
        if self.input_tokens is not None and self.input_tokens < 0:
            raise ValueError("input_tokens must be >= 0")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if not self.server_tools_usd >= 0:
            raise ValueError("server_tools_usd must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispatch:
    """Run ``job`` now on ``tier`` with ``model`` and ``max_tokens``.

    ``input_tokens`` and ``max_tokens`` are what the rate buckets were charged;
    ``reserved_usd`` (worst case) is held against the budgets until
    :meth:`SchedulingPolicy.complete`; ``output_tokens`` and ``expected_usd``
    are the learned expectation, for display.
    """

    job: Job
    tier: str
    model: str
    max_tokens: int
    input_tokens: int
    output_tokens: int
    reserved_usd: float
    expected_usd: float
    stepped_down: bool
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """A job the policy will not run: ``reason`` is a stable code, ``detail`` says why."""

    job: Job
    reason: RejectionReason
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyEvent:
    """Something worth a log line or a status message; ``until`` is set for deferrals/pauses."""

    at: float
    kind: EventKind
    detail: str
    job_id: str | None = None
    agent: str | None = None
    tier: str | None = None
    reason: str | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Decisions:
    """What :meth:`SchedulingPolicy.decide` asks the daemon to do now.

    ``wake_at`` is the earliest time a new decision could differ without any
    other call (a bucket refilled enough, a deadline passes, the budget day
    resets, a pause ends); None means only a submit or completion can.
    """

    at: float
    dispatch: tuple[Dispatch, ...] = ()
    dead_letter: tuple[Rejection, ...] = ()
    refused: tuple[Rejection, ...] = ()
    events: tuple[PolicyEvent, ...] = ()
    wake_at: float | None = None


# -- internal state ----------------------------------------------------------------------


@dataclass(slots=True)
class _Estimate:
    """EWMA of the tokens replies report for one (tier, complexity), with mean deviation."""

    input_mean: float
    input_dev: float
    output_mean: float
    samples: int = 0

    def input_reserve(self, sigmas: float) -> int:
        return math.ceil(self.input_mean + sigmas * self.input_dev)

    def update(self, input_tokens: int, output_tokens: int, alpha: float) -> None:
        self.input_dev += alpha * (abs(input_tokens - self.input_mean) - self.input_dev)
        self.input_mean += alpha * (input_tokens - self.input_mean)
        self.output_mean += alpha * (output_tokens - self.output_mean)
        self.samples += 1


@dataclass(frozen=True, slots=True)
class _Reservation:
    tier: str
    input_tokens: int
    output_tokens: int
    max_tokens: int
    cost_usd: float
    expected_usd: float


@dataclass(frozen=True, slots=True)
class _Plan:
    verdict: _Verdict
    reservation: _Reservation | None = None
    stepped_down: bool = False
    scope: str = ""
    detail: str = ""


@dataclass(slots=True, eq=False)
class _Entry:
    job: Job
    seq: int
    #: allowed tiers cheaper than the requested one, most expensive first
    cheaper: tuple[str, ...]
    state: _State = "queued"


_Heap = list[tuple[float, int, _Entry]]


def _top(heap: _Heap) -> _Entry | None:
    """The first entry still queued (those gone are dropped as they surface)."""
    while heap:
        entry = heap[0][2]
        if entry.state == "queued":
            return entry
        heapq.heappop(heap)
    return None


LEVELS = 10  # priorities 0-9


@dataclass(slots=True)
class _Queue:
    """Queued entries of one requested tier: a heap per priority level (arrival
    order) and one by deadline. Levels share the tier by stride scheduling: each
    has a pass that grows by ``1 / weight`` per dispatch, the waiting level with
    the lowest pass goes next (the higher priority on a tie), and a level that
    starts waiting again joins at the current pass, so idle time earns no credit.
    An entry that leaves (dispatched, refused, deferred, held, expired, cancelled)
    stays in its heaps until it surfaces and is dropped there: O(log n) per entry."""

    strides: tuple[float, ...]
    levels: list[_Heap] = field(default_factory=lambda: [[] for _ in range(LEVELS)])
    waiting: list[int] = field(default_factory=lambda: [0] * LEVELS)
    passes: list[float] = field(default_factory=lambda: [0.0] * LEVELS)
    by_deadline: _Heap = field(default_factory=list)
    live: int = 0
    #: the pass of the last level served: where a level that starts waiting joins
    vtime: float = 0.0
    #: urgent work and the levels' pick alternate while both wait
    urgent_turn: bool = True
    #: whether the last head returned came from the urgent lane
    urgent_head: bool = False

    def add(self, entry: _Entry) -> None:
        job = entry.job
        level = job.priority
        if not self.waiting[level]:
            self.passes[level] = max(self.passes[level], self.vtime)
        self.waiting[level] += 1
        heapq.heappush(self.levels[level], (job.submitted_at, entry.seq, entry))
        if job.deadline is not None:
            heapq.heappush(self.by_deadline, (job.deadline, entry.seq, entry))
        self.live += 1

    def remove(self, entry: _Entry) -> None:
        """Count a queued entry out (its heap slots are dropped when they surface)."""
        self.waiting[entry.job.priority] -= 1
        self.live -= 1

    def served(self, entry: _Entry) -> None:
        self.urgent_turn = not self.urgent_head
        level = entry.job.priority
        self.vtime = max(self.vtime, self.passes[level])
        self.passes[level] += self.strides[level]

    def head(self, now: float, horizon_s: float) -> _Entry | None:
        """The entry whose turn it is (see the module docstring's ordering)."""
        if not self.live:
            return None
        best = -1
        for level in range(LEVELS - 1, -1, -1):
            if self.waiting[level] and (best < 0 or self.passes[level] < self.passes[best]):
                best = level
        pick = _top(self.levels[best]) if best >= 0 else None
        urgent = _top(self.by_deadline)
        deadline = urgent.job.deadline if urgent is not None else None
        self.urgent_head = (
            deadline is not None
            and deadline - now <= horizon_s
            and (self.urgent_turn or pick is None or pick is urgent)
        )
        return urgent if self.urgent_head else pick

    def next_change(self, now: float, horizon_s: float) -> float | None:
        """When the head may change without any call: queued work becomes urgent."""
        urgent = _top(self.by_deadline) if self.live else None
        deadline = urgent.job.deadline if urgent is not None else None
        if deadline is not None and deadline - now > horizon_s:
            return deadline - horizon_s
        return None


@dataclass(slots=True, eq=False)
class _Tier:
    name: str
    spec: TierSpec
    requests: TokenBucket
    input: TokenBucket
    output: TokenBucket
    #: input + output tokens per minute, once the API reports such a limit
    tokens: TokenBucket | None = None
    in_flight: int = 0
    paused_until: float = -math.inf

    def buckets(self) -> list[tuple[TokenBucket, Callable[[_Reservation], int]]]:
        """Each bucket with what a dispatch takes from it."""
        out: list[tuple[TokenBucket, Callable[[_Reservation], int]]] = [
            (self.requests, _ONE),
            (self.input, _INPUT),
            (self.output, _OUTPUT),
        ]
        if self.tokens is not None:
            out.append((self.tokens, _COMBINED))
        return out

    def refill(self, now: float) -> None:
        for bucket, _ in self.buckets():
            bucket.refill(now)

    def fits(self, res: _Reservation) -> bool:
        return all(bucket.can_take(need(res)) for bucket, need in self.buckets())

    def take(self, res: _Reservation) -> None:
        for bucket, need in self.buckets():
            bucket.take(need(res))

    def ready_at(self, res: _Reservation, now: float) -> float:
        return max(bucket.ready_at(need(res), now) for bucket, need in self.buckets())

    def oversized(self, res: _Reservation) -> str | None:
        if res.input_tokens > self.input.capacity:
            return f"{res.input_tokens} input tokens > {self.name}'s {self.input.capacity:.0f}/min"
        if res.max_tokens > self.output.capacity:
            return f"max_tokens {res.max_tokens} > {self.name}'s {self.output.capacity:.0f} output tokens/min"
        if self.tokens is not None and _COMBINED(res) > self.tokens.capacity:
            return (
                f"{_COMBINED(res)} input + max output tokens > {self.name}'s "
                f"{self.tokens.capacity:.0f} tokens/min"
            )
        return None


def _ONE(res: _Reservation) -> int:  # noqa: N802 - a constant's name
    return 1


def _INPUT(res: _Reservation) -> int:  # noqa: N802
    return res.input_tokens


def _OUTPUT(res: _Reservation) -> int:  # noqa: N802
    return res.max_tokens


def _COMBINED(res: _Reservation) -> int:  # noqa: N802
    return res.input_tokens + res.max_tokens


@dataclass(frozen=True, slots=True)
class _Flight:
    job: Job
    reservation: _Reservation
    scopes: tuple[BudgetScope, ...]


# -- the policy ---------------------------------------------------------------------------


class SchedulingPolicy:
    """Decide what runs where and when; see the module docstring for the rules.

    :param config: tiers (limits, prices), complexity classes, budgets.
    :param clock: seconds on any monotonic scale shared with ``Job.submitted_at``,
        ``Job.deadline`` and ``day_start`` (``time.time`` in production).
    :param priority_doubling: a priority level's share of its tier doubles every
        this many levels (3: priority 8 gets four times the dispatches of priority 2
        while both have work waiting).
    :param day_start: a time at which a budget day starts; days are 24 h long.
    :param pressure_fraction: below this share of a budget left, flexible jobs
        step down to a cheaper allowed tier.
    :param deadline_horizon_s: how long before its deadline a job goes first.
    :param input_sigmas: input reserved = learned mean + this many mean deviations.
    :param estimate_alpha: EWMA weight of each reply's reported usage.
    :param refund_output: give unused ``max_tokens`` back at completion (the API does).
    :param cache_ttl: the prompt-cache TTL the workers use, for pricing cache writes.
    :param max_moves: most jobs one decision holds, defers, refuses or dead-letters.
    """

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        clock: Callable[[], float],
        priority_doubling: float = 3.0,
        day_start: float = 0.0,
        pressure_fraction: float = 0.1,
        deadline_horizon_s: float = 600.0,
        input_sigmas: float = 2.0,
        estimate_alpha: float = 0.1,
        refund_output: bool = True,
        cache_ttl: Literal["5m", "1h"] = "5m",
        max_moves: int = 256,
    ) -> None:
        if (
            priority_doubling <= 0
            or deadline_horizon_s <= 0
            or not 0 < estimate_alpha <= 1
            or not 0 <= pressure_fraction <= 1
            or max_moves < 1
        ):
            raise ValueError(
                "need priority_doubling > 0, deadline_horizon_s > 0, 0 < estimate_alpha <= 1, "
                "0 <= pressure_fraction <= 1 and max_moves >= 1"
            )
        self._config = config
        self._clock = clock
        self._strides = tuple(2 ** (-p / priority_doubling) for p in range(LEVELS))
        self._day_start = day_start
        self._pressure = pressure_fraction
        self._horizon = deadline_horizon_s
        self._sigmas = input_sigmas
        self._alpha = estimate_alpha
        self._refund_output = refund_output
        self._cache_ttl = cache_ttl
        self._max_moves = max_moves
        self._order = config.tier_order()
        self._rank = {name: i for i, name in enumerate(self._order)}
        self._by_model = {spec.model: name for name, spec in config.tiers.items()}
        self._now = clock()
        self._day = self._day_of(self._now)
        self._tiers = {
            name: _Tier(
                name,
                spec,
                TokenBucket(spec.requests_per_minute, now=self._now),
                TokenBucket(spec.input_tokens_per_minute, now=self._now),
                TokenBucket(spec.output_tokens_per_minute, now=self._now),
            )
            for name, spec in config.tiers.items()
        }
        self._estimates = {
            (tier, name): _Estimate(
                input_mean=float(cc.expected_input_tokens),
                input_dev=0.25 * cc.expected_input_tokens,
                output_mean=float(cc.expected_output_tokens),
            )
            for tier in config.tiers
            for name, cc in config.complexity.items()
        }
        self._ledger = BudgetLedger(config.budgets)
        self._queues = {name: _Queue(self._strides) for name in config.tiers}
        self._entries: dict[str, _Entry] = {}
        self._deferred: dict[str, _Entry] = {}
        #: entries waiting aside for a budget scope (by its name) to have room
        self._held: dict[str, _Heap] = {}
        self._deadlines: list[tuple[float, int, _Entry]] = []
        self._in_flight: dict[str, _Flight] = {}
        self._events: list[PolicyEvent] = []
        self._seq = 0
        self._totals: Counter[str] = Counter()

    # -- time ----------------------------------------------------------------------------

    def _day_of(self, now: float) -> int:
        return math.floor((now - self._day_start) / DAY_S)

    def _tick(self) -> float:
        """Read the clock (never backwards) and start a new budget day when one began."""
        now = max(self._clock(), self._now)
        self._now = now
        day = self._day_of(now)
        if day != self._day:
            self._day = day
            self._ledger.new_day()
            self._release(list(self._held), everything=True)
            for entry in list(self._deferred.values()):
                self._reactivate(entry)
        return now

    @property
    def budget_resets_at(self) -> float:
        """When the current budget day ends."""
        return self._day_start + (self._day + 1) * DAY_S

    # -- submitting ----------------------------------------------------------------------

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False (and nothing changes) if its id is already queued or running.

        Raises :class:`~acp.errors.ConfigError` for a tier or complexity the
        configuration does not know.
        """
        self._tick()
        if job.id in self._entries or job.id in self._in_flight:
            return False
        self._config.tier(job.tier)
        self._config.complexity_class(job.complexity)
        for tier in job.allowed_tiers:
            self._config.tier(tier)
        allowed = {*job.allowed_tiers, job.tier}
        cheaper = tuple(t for t in reversed(self._order[: self._rank[job.tier]]) if t in allowed)
        self._enqueue(job, cheaper)
        self._totals["submitted"] += 1
        return True

    def _enqueue(self, job: Job, cheaper: tuple[str, ...]) -> None:
        self._seq += 1
        entry = _Entry(job, self._seq, cheaper)
        self._queues[job.tier].add(entry)
        self._entries[job.id] = entry
        if job.deadline is not None:
            heapq.heappush(self._deadlines, (job.deadline, self._seq, entry))

    def _unqueue(self, entry: _Entry, state: _State) -> None:
        """Take a queued entry out of its queue, into ``state`` (deferred or gone)."""
        self._queues[entry.job.tier].remove(entry)
        entry.state = state
        if state == "gone":
            del self._entries[entry.job.id]
        else:
            self._deferred[entry.job.id] = entry

    def _reactivate(self, entry: _Entry) -> None:
        del self._deferred[entry.job.id]
        entry.state = "gone"  # the heaps may still hold this object: a fresh one goes in
        self._enqueue(entry.job, entry.cheaper)

    def cancel(self, job_id: str) -> bool:
        """Forget a queued or deferred job; False if it is unknown or already dispatched."""
        self._tick()
        entry = self._entries.get(job_id)
        if entry is None:
            return False
        self._forget(entry)
        return True

    def _forget(self, entry: _Entry) -> None:
        """Take a queued, held or deferred entry out for good."""
        if entry.state == "queued":
            self._unqueue(entry, "gone")
            return
        if entry.state == "deferred":
            del self._deferred[entry.job.id]
        del self._entries[entry.job.id]
        entry.state = "gone"  # a held entry is dropped from its list when released

    # -- deciding ------------------------------------------------------------------------

    def _reserve(self, job: Job, tier: str) -> _Reservation:
        spec = self._config.tiers[tier]
        cc = self._config.complexity[job.complexity]
        est = self._estimates[(tier, job.complexity)]
        max_tokens = job.max_tokens or cc.max_tokens
        if job.input_tokens is None:
            reserve_in, expect_in = est.input_reserve(self._sigmas), est.input_mean
        else:
            reserve_in, expect_in = job.input_tokens, float(job.input_tokens)
        expect_out = min(max_tokens, round(est.output_mean))
        price = spec.price
        write = price.cache_write_1h if self._cache_ttl == "1h" else price.cache_write_5m
        # worst case: every input token a cache write, every max_tokens token generated,
        # every server tool use the turn may make
        worst = (reserve_in * max(price.input, write) + max_tokens * price.output) / 1e6
        worst += job.server_tools_usd
        expected = (expect_in * price.input + expect_out * price.output) / 1e6
        return _Reservation(tier, reserve_in, expect_out, max_tokens, worst, expected)

    def _plan(self, entry: _Entry) -> _Plan:
        """Where ``entry`` would run given the budgets (rate limits are checked after)."""
        job = entry.job
        scopes = self._ledger.scopes_for(job.agent, job.tenant, job.request)
        requested = self._reserve(job, job.tier)
        if not scopes:
            return _Plan("go", requested)
        fits = all(s.fits(requested.cost_usd) for s in scopes)
        pressured = any(s.pressured(self._pressure) for s in scopes)
        if fits and not (pressured and entry.cheaper):
            return _Plan("go", requested)
        for tier in entry.cheaper:
            res = self._reserve(job, tier)
            if all(s.fits(res.cost_usd) for s in scopes):
                return _Plan("go", res, stepped_down=True)
        if fits:
            return _Plan("go", requested)
        floor = self._reserve(job, entry.cheaper[-1]) if entry.cheaper else requested
        for s in scopes:
            if floor.cost_usd > s.limit:
                return _Plan(
                    "refuse",
                    scope=s.name,
                    detail=f"worst-case cost ${floor.cost_usd:.4f} on {floor.tier} exceeds "
                    f"the whole {s.name} {_per(s)} budget of ${s.limit:.2f}",
                )
        for s in scopes:
            if s.name.startswith(REQUEST_SCOPE) and not s.fits_when_settled(floor.cost_usd):
                # a request's budget does not come back tomorrow: no use waiting
                return _Plan(
                    "refuse",
                    scope=s.name,
                    detail=f"request budget: ${s.limit - s.spent:.4f} of ${s.limit:.2f} left "
                    f"for this request, worst-case cost ${floor.cost_usd:.4f} on {floor.tier}",
                )
        for s in scopes:
            if not s.fits_when_settled(floor.cost_usd):
                return _Plan(
                    "defer",
                    scope=s.name,
                    detail=f"{s.name} budget: ${s.limit - s.spent:.4f} left today, worst-case "
                    f"cost ${floor.cost_usd:.4f} on {floor.tier}",
                )
        # in-flight work may settle below its reservation: wait for the scopes short now
        short = ",".join(s.name for s in scopes if not s.fits(requested.cost_usd))
        return _Plan("wait", scope=short)

    def decide(self) -> Decisions:
        """Everything to do now: dispatches, dead letters, refusals, events, next wake-up.

        Each tier's queue is served from its head until the tier is full, paused,
        short of tokens or budget for that head, or empty: a job is looked at only
        when its turn comes, so a decision costs O(log n) per job it moves. At most
        ``max_moves`` jobs are held, deferred, refused or dead-lettered per decision
        (``wake_at`` is then now): a day's budget running out under 100k queued
        jobs is settled over many short decisions, never one long stall."""
        now = self._tick()
        events, self._events = self._events, []
        dead: list[Rejection] = []
        refused: list[Rejection] = []
        dispatches: list[Dispatch] = []
        moves = self._sweep_deadlines(now, dead, events, self._max_moves)
        for tier in self._tiers.values():
            tier.refill(now)
        ready: dict[str, float] = {}
        for name, queue in self._queues.items():
            while queue.live:
                if not self._open(self._tiers[name], now) or moves >= self._max_moves:
                    break
                entry = queue.head(now, self._horizon)
                if entry is None:
                    break
                plan = self._plan(entry)
                if plan.verdict == "wait":
                    if "global" in plan.scope.split(","):
                        break  # the whole day's budget: everything waits, nothing overtakes
                    # an agent's or a tenant's budget: its work waits aside, others go on
                    self._hold(entry, plan.scope)
                    moves += 1
                    continue
                if plan.verdict != "go":
                    self._hold_back(entry, plan, now, refused, events)
                    moves += 1
                    continue
                res = plan.reservation
                assert res is not None
                target = self._tiers[res.tier]
                if not self._open(target, now):
                    break  # stepped down to a tier that is full: the head waits
                too_large = target.oversized(res)
                if too_large is not None:
                    self._refuse(entry, "too_large", too_large, now, refused, events)
                    moves += 1
                    continue
                if not target.fits(res):
                    ready[name] = target.ready_at(res, now)
                    break  # the head waits for its tokens: nothing smaller overtakes
                queue.served(entry)
                dispatches.append(self._dispatch(entry, plan, res, target, now, events))
        return Decisions(
            at=now,
            dispatch=tuple(dispatches),
            dead_letter=tuple(dead),
            refused=tuple(refused),
            events=tuple(events),
            wake_at=now if moves >= self._max_moves else self._wake_at(now, ready),
        )

    def _hold(self, entry: _Entry, scopes: str) -> None:
        """Set ``entry`` aside until one of ``scopes`` has room for it."""
        self._queues[entry.job.tier].remove(entry)
        entry.state = "held"
        for name in scopes.split(","):
            heapq.heappush(self._held.setdefault(name, []), (-entry.job.priority, entry.seq, entry))

    def _release(self, scopes: Iterable[str], *, everything: bool = False) -> None:
        """Put back in line (in their old places) the entries waiting for ``scopes``, as
        long as the scope has room for the next one at its cheapest allowed tier, or
        nothing more will settle there (then the line defers or refuses it): an entry
        that still would not fit stays aside instead of being held again."""
        by_name = {s.name: s for s in self._ledger.all_scopes()}
        for name in scopes:
            held = self._held.get(name)
            scope = by_name.get(name)
            while held:
                entry = held[0][2]
                if entry.state != "held":
                    heapq.heappop(held)
                    continue
                floor = entry.cheaper[-1] if entry.cheaper else entry.job.tier
                if (
                    not everything
                    and scope is not None
                    and scope.in_flight > 0  # more may settle: keep waiting aside
                    and not scope.fits(self._reserve(entry.job, floor).cost_usd)
                ):
                    break
                heapq.heappop(held)
                entry.state = "queued"
                self._queues[entry.job.tier].add(entry)
            if not held:
                self._held.pop(name, None)

    @staticmethod
    def _open(tier: _Tier, now: float) -> bool:
        return tier.in_flight < tier.spec.concurrency and now >= tier.paused_until

    def _dispatch(
        self,
        entry: _Entry,
        plan: _Plan,
        res: _Reservation,
        tier: _Tier,
        now: float,
        events: list[PolicyEvent],
    ) -> Dispatch:
        job = entry.job
        tier.take(res)
        tier.in_flight += 1
        scopes = self._ledger.scopes_for(job.agent, job.tenant, job.request)
        for scope in scopes:
            scope.reserve(res.cost_usd)
        self._unqueue(entry, "gone")
        self._in_flight[job.id] = _Flight(job, res, scopes)
        self._totals["dispatched"] += 1
        if plan.stepped_down:
            self._totals["stepped_down"] += 1
            pressed = ", ".join(
                f"{s.name} ${s.remaining:.2f} left of ${s.limit:.2f}" for s in scopes
            )
            events.append(
                PolicyEvent(
                    at=now,
                    kind="step_down",
                    job_id=job.id,
                    agent=job.agent,
                    tier=res.tier,
                    reason="budget",
                    detail=f"budget pressure: {job.tier} -> {res.tier} ({pressed})",
                )
            )
        return Dispatch(
            job=job,
            tier=res.tier,
            model=tier.spec.model,
            max_tokens=res.max_tokens,
            input_tokens=res.input_tokens,
            output_tokens=res.output_tokens,
            reserved_usd=res.cost_usd,
            expected_usd=res.expected_usd,
            stepped_down=plan.stepped_down,
            at=now,
        )

    def _hold_back(
        self,
        entry: _Entry,
        plan: _Plan,
        now: float,
        refused: list[Rejection],
        events: list[PolicyEvent],
    ) -> None:
        job = entry.job
        reset = self.budget_resets_at
        if plan.verdict == "refuse":
            self._refuse(entry, "budget", plan.detail, now, refused, events)
        elif job.deadline is not None and job.deadline < reset:
            detail = f"{plan.detail}; the budget resets after the deadline"
            self._refuse(entry, "budget", detail, now, refused, events)
        else:
            self._unqueue(entry, "deferred")
            self._totals["deferred"] += 1
            events.append(
                PolicyEvent(
                    at=now,
                    kind="deferred",
                    job_id=job.id,
                    agent=job.agent,
                    tier=job.tier,
                    reason="budget",
                    detail=f"{plan.detail}; deferred to the budget reset",
                    until=reset,
                )
            )

    def _refuse(
        self,
        entry: _Entry,
        reason: RejectionReason,
        detail: str,
        now: float,
        refused: list[Rejection],
        events: list[PolicyEvent],
    ) -> None:
        self._unqueue(entry, "gone")
        self._totals["refused"] += 1
        refused.append(Rejection(job=entry.job, reason=reason, detail=detail))
        events.append(
            PolicyEvent(
                at=now,
                kind="refused",
                job_id=entry.job.id,
                agent=entry.job.agent,
                tier=entry.job.tier,
                reason=reason,
                detail=detail,
            )
        )

    def _sweep_deadlines(
        self, now: float, dead: list[Rejection], events: list[PolicyEvent], most: int
    ) -> int:
        """Dead-letter up to ``most`` queued jobs past their deadline; how many."""
        while self._deadlines and self._deadlines[0][0] <= now and len(dead) < most:
            deadline, _, entry = heapq.heappop(self._deadlines)
            if entry.state == "gone":
                continue
            self._forget(entry)
            late = now - deadline
            detail = f"deadline passed {late:.1f}s ago before the job could be dispatched"
            self._totals["dead_lettered"] += 1
            dead.append(Rejection(job=entry.job, reason="deadline", detail=detail))
            events.append(
                PolicyEvent(
                    at=now,
                    kind="dead_letter",
                    job_id=entry.job.id,
                    agent=entry.job.agent,
                    tier=entry.job.tier,
                    reason="deadline",
                    detail=detail,
                )
            )
        return len(dead)

    def _wake_at(self, now: float, ready: Mapping[str, float]) -> float | None:
        times = list(ready.values())
        while self._deadlines and self._deadlines[0][2].state == "gone":
            heapq.heappop(self._deadlines)
        if self._deadlines:
            times.append(self._deadlines[0][0])
        if self._deferred:
            times.append(self.budget_resets_at)
        if any(q.live for q in self._queues.values()):
            times.extend(t.paused_until for t in self._tiers.values() if t.paused_until > now)
        for name, queue in self._queues.items():
            if not self._open(self._tiers[name], now):
                continue  # a full tier decides again when a call completes
            change = queue.next_change(now, self._horizon)
            if change is not None:
                times.append(change)
        return min(times) if times else None

    # -- completing ----------------------------------------------------------------------

    def restore_flight(
        self,
        job: Job,
        *,
        tier: str,
        input_tokens: int,
        max_tokens: int,
        cost_usd: float,
    ) -> bool:
        """Count work another leader dispatched and that is still running: its slot,
        its tokens (taken from the buckets now) and its budget reservation, so a new
        leader neither runs past a cap nor forgets what will be charged. False (and
        nothing changes) when the job is already known."""
        now = self._tick()
        if job.id in self._in_flight or job.id in self._entries:
            return False
        state = self._tiers.get(tier)
        if state is None:
            raise ConfigError(f"unknown tier {tier!r}; configured: {', '.join(self._tiers)}")
        state.refill(now)
        res = _Reservation(tier, input_tokens, 0, max_tokens, cost_usd, cost_usd)
        state.take(res)
        state.in_flight += 1
        scopes = self._ledger.scopes_for(job.agent, job.tenant, job.request)
        for scope in scopes:
            scope.reserve(cost_usd)
        self._in_flight[job.id] = _Flight(job, res, scopes)
        self._totals["restored"] += 1
        return True

    def reserved_usd(self) -> float:
        """The worst-case cost held for work in flight (0 when nothing is)."""
        return round(sum(f.reservation.cost_usd for f in self._in_flight.values()), 9)

    def holds(self, job_id: str) -> bool:
        """Whether ``job_id`` is dispatched and not yet settled."""
        return job_id in self._in_flight

    def complete(
        self, job_id: str, *, usage: Usage | None, ok: bool, model: str | None = None
    ) -> float:
        """Settle a dispatched job; returns the USD charged to its budgets.

        Frees its concurrency slot. With ``usage``: the input bucket gets back
        (or owes) reserved minus reported input tokens (cache reads and writes
        included: counting them is the conservative side), the output bucket
        gets back ``max_tokens`` minus the reported output, the budgets swap
        the reservation for the actual cost (priced by ``model``'s tier when it
        names one, else the dispatched tier), and the (tier, complexity)
        estimates move towards the report. ``usage=None`` means unknown: the
        buckets keep everything and the whole reservation is charged, since it
        bounds what the call could have cost; pass ``Usage()`` for a call known
        to have cost nothing. ``ok`` only feeds the counters: re-queueing is
        the daemon's call (see :meth:`escalate`). KeyError for an unknown id.
        """
        now = self._tick()
        flight = self._in_flight.pop(job_id, None)
        if flight is None:
            raise KeyError(f"job {job_id!r} is not in flight")
        res = flight.reservation
        tier = self._tiers[res.tier]
        tier.refill(now)
        tier.in_flight -= 1
        if usage is None:
            actual = res.cost_usd
        else:
            used_in = (
                usage.input_tokens
                + usage.cache_creation_input_tokens
                + usage.cache_read_input_tokens
            )
            tier.input.give(res.input_tokens - used_in)
            if self._refund_output:
                tier.output.give(res.max_tokens - usage.output_tokens)
            if tier.tokens is not None:
                unused_out = res.max_tokens - usage.output_tokens if self._refund_output else 0
                tier.tokens.give(res.input_tokens - used_in + unused_out)
            priced = self._by_model.get(model or "", res.tier)
            actual = self._config.price(priced, usage, cache_ttl=self._cache_ttl)
            self._estimates[(res.tier, flight.job.complexity)].update(
                used_in, usage.output_tokens, self._alpha
            )
        for scope in flight.scopes:
            scope.settle(res.cost_usd, actual)
        self._release(scope.name for scope in flight.scopes)
        self._totals["completed" if ok else "failed"] += 1
        self._totals["cost_usd_micros"] += round(actual * 1e6)
        return actual

    def escalate(self, job: Job, *, from_tier: str | None = None) -> Job | None:
        """The same job one tier up from ``from_tier`` (default ``job.tier``), or None.

        Only tiers in ``job.allowed_tiers`` count (empty: none). The new job
        keeps its id, age and deadline, counts one more attempt, and may no
        longer step down below the new tier (it just failed there).
        """
        start = from_tier or job.tier
        self._config.tier(start)
        allowed = set(job.allowed_tiers)
        above = [t for t in self._order[self._rank[start] + 1 :] if t in allowed]
        if not above:
            return None
        up = above[0]
        keep = tuple(t for t in job.allowed_tiers if self._rank.get(t, -1) >= self._rank[up])
        return replace(job, tier=up, allowed_tiers=keep, attempt=job.attempt + 1)

    def restore_spend(
        self, usd: float, *, agent: str | None = None, tenant: str | None = None
    ) -> None:
        """Count spend the policy did not see today (a restart, work run elsewhere).

        Charged to the global budget and, when given, to the agent's and tenant's.
        """
        self._tick()
        for scope in self._ledger.scopes_for(agent, tenant):
            scope.spent += usd

    # -- rate-limit feedback -------------------------------------------------------------

    def observe_limits(
        self,
        tier: str,
        *,
        requests_limit: float | None = None,
        requests_remaining: float | None = None,
        requests_reset_s: float | None = None,
        input_tokens_limit: float | None = None,
        input_tokens_remaining: float | None = None,
        input_tokens_reset_s: float | None = None,
        output_tokens_limit: float | None = None,
        output_tokens_remaining: float | None = None,
        output_tokens_reset_s: float | None = None,
        tokens_limit: float | None = None,
        tokens_remaining: float | None = None,
        tokens_reset_s: float | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        """Adopt what a response's ``anthropic-ratelimit-*`` headers said about ``tier``.

        A reported limit becomes the bucket's capacity and refill rate, up or down:
        the API's limits move (a tier upgrade, a temporary reduction) and the
        configuration is only where a tier starts. A reported combined ``tokens``
        limit adds a bucket for input plus output. A reported remaining lowers the
        level when it is below ours (never raises it: the report is older than our
        latest charges). A reset time (seconds until the bucket is full) stands in
        for a missing remaining. ``retry_after_s`` pauses the tier. Call it before
        :meth:`complete` for the same reply, so the refund lands after the clamp.
        """
        now = self._tick()
        name = tier
        state = self._tiers.get(name)
        if state is None:
            raise ConfigError(f"unknown tier {tier!r}; configured: {', '.join(self._tiers)}")
        if tokens_limit is not None and state.tokens is None:
            state.tokens = TokenBucket(tokens_limit, now=now)
        state.refill(now)
        rows: list[tuple[str, TokenBucket, float | None, float | None, float | None]] = [
            ("requests", state.requests, requests_limit, requests_remaining, requests_reset_s),
            ("input tokens", state.input, input_tokens_limit, input_tokens_remaining,
             input_tokens_reset_s),
            ("output tokens", state.output, output_tokens_limit, output_tokens_remaining,
             output_tokens_reset_s),
        ]  # fmt: skip
        if state.tokens is not None:
            rows.append(("tokens", state.tokens, tokens_limit, tokens_remaining, tokens_reset_s))
        for label, bucket, limit, remaining, reset_s in rows:
            if limit is not None and limit > 0 and float(limit) != bucket.capacity:
                before = bucket.capacity
                bucket.set_limit(float(limit))
                self._events.append(
                    PolicyEvent(
                        at=now,
                        kind="limits",
                        tier=name,
                        reason=label.replace(" ", "_"),
                        detail=f"{name} {label} per minute {before:.0f} -> {limit:.0f} "
                        f"(as the API reports)",
                    )
                )
            if remaining is None and reset_s is not None:
                remaining = bucket.capacity - bucket.rate * max(reset_s, 0.0)
            if remaining is not None:
                bucket.clamp(remaining)
        if retry_after_s is not None and retry_after_s > 0:
            state.paused_until = max(state.paused_until, now + retry_after_s)
            self._events.append(
                PolicyEvent(
                    at=now,
                    kind="paused",
                    tier=name,
                    reason="retry_after",
                    detail=f"{name} paused {retry_after_s:.1f}s: the API asked us to retry later",
                    until=state.paused_until,
                )
            )

    def observe_snapshot(self, snapshot: RateLimitSnapshot) -> None:
        """:meth:`observe_limits` from the snapshot a Claude worker publishes."""
        kwargs: dict[str, float] = {}
        for kind in ("requests", "input_tokens", "output_tokens", "tokens"):
            window = getattr(snapshot, kind)
            if window is None:
                continue
            if window.limit is not None:
                kwargs[f"{kind}_limit"] = window.limit
            if window.remaining is not None:
                kwargs[f"{kind}_remaining"] = window.remaining
            if window.reset is not None:
                kwargs[f"{kind}_reset_s"] = (window.reset - snapshot.observed_at).total_seconds()
        if snapshot.retry_after is not None:
            kwargs["retry_after_s"] = snapshot.retry_after
        self.observe_limits(snapshot.tier, **kwargs)

    # -- status --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Queue depths, in-flight work, bucket levels, budgets and estimates, for ``acp status``."""
        now = self._tick()
        queued = [e for e in self._entries.values() if e.state == "queued"]
        tiers: dict[str, Any] = {}
        for name, tier in self._tiers.items():
            tier.refill(now)
            tiers[name] = {
                "model": tier.spec.model,
                "concurrency": tier.spec.concurrency,
                "in_flight": tier.in_flight,
                "paused_until": tier.paused_until if tier.paused_until > now else None,
                **{
                    label: {"level": round(b.level, 1), "limit_per_min": b.capacity}
                    for label, b in (
                        ("requests", tier.requests),
                        ("input_tokens", tier.input),
                        ("output_tokens", tier.output),
                    )
                },
            }
        totals = dict(self._totals)
        spent_micros = totals.pop("cost_usd_micros", 0)
        return {
            "at": now,
            "queued": {
                "total": len(queued),
                "by_tier": dict(Counter(e.job.tier for e in queued)),
                "by_agent": dict(Counter(e.job.agent for e in queued)),
                "deferred": len(self._deferred),
            },
            "in_flight": {
                "total": len(self._in_flight),
                "by_tier": dict(Counter(f.reservation.tier for f in self._in_flight.values())),
            },
            "tiers": tiers,
            "budgets": {**self._ledger.snapshot(), "resets_at": self.budget_resets_at},
            "estimates": {
                f"{tier}/{complexity}": {
                    "input_tokens": round(est.input_mean),
                    "input_reserved": est.input_reserve(self._sigmas),
                    "output_tokens": round(est.output_mean),
                    "samples": est.samples,
                }
                for (tier, complexity), est in self._estimates.items()
            },
            "totals": {**totals, "cost_usd": spent_micros / 1e6},
        }
