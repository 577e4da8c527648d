"""Scheduler benchmark: the scheduling policy against a competent baseline and FIFO,
on a virtual clock, over several workloads; and the cost of one decision.

    python bench/scheduler.py                  # every workload, a table each
    python bench/scheduler.py --json           # one JSON object on stdout
    python bench/scheduler.py --workload capacity --seed 3
    python bench/scheduler.py --decisions      # microseconds per decision, 1k-100k queued

No real time passes: a run takes seconds and is reproducible from ``--seed``.
Every side runs the same commands against the same simulated model API.

**Agents and commands.** 71 agents in the real corpus's tier mix (15 haiku/low,
45 sonnet/medium, 11 opus/high; ``opus_heavy`` shifts it) with the tier
flexibility definitions have (``allowed_tiers``, ``model: inherit``).
Commands arrive in bursts (lognormal sizes, mean 50, each spread over 10 s,
exponential gaps) over the window in which the busiest tier is offered
``load`` times its capacity; each has a priority (8: 10 %, 5: 70 %, 2: 20 %),
a tenant, a deadline for some, and up to three attempts drawn in advance
(common random numbers): prompt and output tokens lognormal around the
complexity class's expectation (prompt sigma 0.35, or 1.0 with
``--heavy-tails``), a latency (time to first token + output at the class's
speed), and whether the reply fails validation (haiku 8 %, sonnet 4 %, opus 2 %).

**The simulated API.** Per tier, token buckets exactly as the real one is
described: requests, input tokens and output tokens per minute, capacity the
limit, continuous refill; a call takes one request, its prompt and its
``max_tokens`` at start, or gets a 429 with the exact ``retry-after``; the
unused output comes back when the reply ends. Every response carries the
limits and remaining levels as headers. ``--api-limits 0.5`` sets the API's
limits below the configured ones.

**The sides.**

* ``policy``: ``SchedulingPolicy`` driven as the coordinator drives it:
  ``submit`` with the prompt's size (the coordinator knows it before dispatch),
  ``decide`` after every event and at ``wake_at``, every response's headers to
  ``observe_limits`` (a 429's too), usage to ``complete``; an invalid reply goes
  one tier up where allowed (``escalate``), else again; budgets enforced.
* ``baseline``: what a competent engineer writes in an afternoon: per tier a
  semaphore at the same concurrency, request / input / output token buckets at
  the configured limits (prompt size known, unused output refunded), a strict
  priority queue (arrival order within a priority), the exact ``retry-after`` on a
  429 (the tier waits), invalid replies retried at the same tier; no budgets,
  no deadlines, no escalation.
* ``fifo``: per tier ``concurrency`` workers taking commands in arrival order,
  retrying a 429 the way the SDK does (``retry-after`` when it is at most 60 s,
  else 0.5 s doubling to 8 s with jitter), the worker held meanwhile.

**Figures per side.** ``completed``; ``cost_usd``; ``overspend_usd`` (above the
daily budget and the tenant budgets); ``rate_limit_errors``; ``makespan_s``
(first arrival to the end of the last call); ``p95_wait_s`` over *all*
submitted commands (the time spent waiting to start calls; a command that never
completed waited until it was refused, expired or the run ended) and the same
for priority 8 and priority 2; ``deadline_missed`` (commands with a deadline
not completed by it); ``refused``, ``deferred``, ``dead_lettered`` reported
apart. ``lower_bound_makespan_s`` does not depend on any schedule: every command
once, at its requested tier, with its first attempt's draws, under the API's
limits (per tier and release time s: the calls released at or after s cannot
finish before s + the slowest of the bucket drain times plus the shortest
latency, and the concurrency-limited busy time).

**Goals**, per workload, against ``baseline``: 0 rate-limit errors (when the
API's limits are as configured), 0 overspend, makespan at most 1.05 x, priority-8
p95 at most 2 x + 60 s, priority-2 p95 at most 0.7 x, deadline misses at most 0.8 x
(or none). Where the daily budget is below the demand, the baseline (no budgets)
is no yardstick for waits: the goals there are 0 overspend and spending at least
0.9 of the budget. Deadline misses leave out commands the API refuses outright
at their tier (larger than a bucket, with ``--api-limits`` below 1): no side can
run them. Workloads: ``capacity`` (1.3 x load, the budget out of the way),
``bursty`` (bursts of about 250 within 5 s), ``budget`` (the daily budget 0.8 x
the demand), ``opus_heavy``, ``deadlines`` (1.6 x overload, 40 % of commands with
deadlines), ``tenants`` (twelve tenants with budgets of their own).

**Decisions** (``--decisions``): per ``decide`` with 1k-100k queued jobs, 70
agents, deadlines on 15 %: p50 / p99 / max / mean microseconds and microseconds
per job moved, with budgets slack, under pressure (global or per tenant) and
running out; and the time per job of a whole drain.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from anywhere: make ``acp`` importable
    sys.path.insert(0, str(_ROOT))

from acp.agents.config import Budgets, RuntimeConfig, Usage, load_config  # noqa: E402
from acp.runtime.scheduling import DAY_S, Job, SchedulingPolicy  # noqa: E402

CONFIG = _ROOT / "runtime" / "acp.toml"
TTFT_S = {"low": 0.5, "medium": 1.0, "high": 2.0}
TOKENS_PER_S = {"low": 180.0, "medium": 90.0, "high": 60.0}
INVALID = {"haiku": 0.08, "sonnet": 0.04, "opus": 0.02}
MAX_ATTEMPTS = 3
BURST_MEAN = 50
BURST_SPREAD_S = 10.0
HIGH, LOW = 8, 2


# -- workloads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    load: float = 1.0
    #: (tier, complexity, agents)
    mix: tuple[tuple[str, str, int], ...] = (("haiku", "low", 15), ("sonnet", "medium", 45),
                                             ("opus", "high", 11))  # fmt: skip
    priorities: tuple[tuple[int, float], ...] = ((HIGH, 0.1), (5, 0.7), (LOW, 0.2))
    tenants: tuple[tuple[str, float], ...] = (("acme", 0.5), ("globex", 0.3), ("initech", 0.2))
    deadline_share: float = 0.15
    deadline_range_s: tuple[float, float] = (300.0, 2400.0)
    #: daily budget as a share of what running every command once would cost
    budget_fraction: float = 0.8
    #: each tenant's budget as a share of the daily budget (None: no tenant budgets)
    tenant_budget: float | None = None
    burst_mean: float = BURST_MEAN
    burst_spread_s: float = BURST_SPREAD_S

    @property
    def budget_binds(self) -> bool:
        """The daily budget is below the demand: the baseline (no budgets) is no
        yardstick for waits, makespan or deadlines, only spend is judged."""
        return self.budget_fraction < 1.0


WORKLOADS = {
    "capacity": Workload("capacity", load=1.3, budget_fraction=10.0),
    "bursty": Workload(
        "bursty", load=1.0, budget_fraction=10.0, burst_mean=250, burst_spread_s=5.0
    ),
    "budget": Workload("budget", load=1.0, budget_fraction=0.8),
    "opus_heavy": Workload(
        "opus_heavy",
        load=1.2,
        budget_fraction=10.0,
        mix=(("haiku", "low", 10), ("sonnet", "medium", 25), ("opus", "high", 36)),
    ),
    "deadlines": Workload(
        "deadlines",
        load=1.6,
        budget_fraction=10.0,
        deadline_share=0.4,
        deadline_range_s=(240.0, 1800.0),
    ),
    "tenants": Workload(
        "tenants",
        load=1.0,
        budget_fraction=1.2,
        tenant_budget=0.09,
        tenants=tuple((f"tenant-{i:02d}", 1 / 12) for i in range(12)),
    ),
}


@dataclass(frozen=True)
class Agent:
    name: str
    tier: str
    complexity: str
    allowed: tuple[str, ...]


@dataclass(frozen=True)
class Attempt:
    input_tokens: int
    output_tokens: int  # before capping at the call's max_tokens
    ttft_s: float
    invalid_draw: float


@dataclass(frozen=True)
class Command:
    id: str
    agent: Agent
    arrival: float
    priority: int
    deadline: float | None
    tenant: str
    attempts: tuple[Attempt, ...]


def _lognormal(rng: random.Random, mean: float, sigma: float) -> float:
    return rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)


def _pick(rng: random.Random, table: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def make_agents(workload: Workload) -> list[Agent]:
    agents: list[Agent] = []
    for tier, complexity, count in workload.mix:
        for i in range(count):
            if tier == "haiku":
                allowed: tuple[str, ...] = ("haiku", "sonnet")
            elif tier == "sonnet":
                allowed = (("haiku", "sonnet", "opus"), ("sonnet", "opus"), ())[i % 3]
            else:
                allowed = ("sonnet", "opus") if i % 2 == 0 else ()
            agents.append(Agent(f"{tier}-{complexity}-{i:02d}", tier, complexity, allowed))
    return agents


def expected_latency_s(complexity: str, output_tokens: float) -> float:
    return TTFT_S[complexity] + output_tokens / TOKENS_PER_S[complexity]


def tier_capacity_per_s(config: RuntimeConfig, tier: str, complexity: str) -> float:
    """Calls per second ``tier`` sustains for ``complexity`` work: its binding limit."""
    spec, cc = config.tiers[tier], config.complexity[complexity]
    return min(
        spec.concurrency / expected_latency_s(complexity, cc.expected_output_tokens),
        spec.requests_per_minute / 60,
        spec.input_tokens_per_minute / 60 / cc.expected_input_tokens,
        spec.output_tokens_per_minute / 60 / cc.max_tokens,  # max_tokens is held per call
    )


def make_commands(
    config: RuntimeConfig, workload: Workload, n: int, seed: int, prompt_sigma: float
) -> list[Command]:
    rng = random.Random(seed)
    agents = make_agents(workload)
    total = sum(count for *_, count in workload.mix)
    busiest = max(
        n * count / total / tier_capacity_per_s(config, tier, complexity)
        for tier, complexity, count in workload.mix
    )
    span = busiest / workload.load
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(min(max(1, round(_lognormal(rng, workload.burst_mean, 0.6))), n - sum(sizes)))
    starts = [0.0]
    for _ in sizes[1:]:
        starts.append(starts[-1] + rng.expovariate(1.0))
    scale = max(0.0, span - workload.burst_spread_s) / (starts[-1] or 1.0)
    arrivals = sorted(
        start * scale + rng.uniform(0, workload.burst_spread_s)
        for start, size in zip(starts, sizes, strict=True)
        for _ in range(size)
    )
    commands = []
    for i, arrival in enumerate(arrivals):
        agent = rng.choice(agents)
        cc = config.complexity[agent.complexity]
        attempts = tuple(
            Attempt(
                input_tokens=max(1, round(_lognormal(rng, cc.expected_input_tokens, prompt_sigma))),
                output_tokens=max(1, round(_lognormal(rng, cc.expected_output_tokens, 0.5))),
                ttft_s=_lognormal(rng, TTFT_S[agent.complexity], 0.3),
                invalid_draw=rng.random(),
            )
            for _ in range(MAX_ATTEMPTS)
        )
        has_deadline = rng.random() < workload.deadline_share
        deadline = arrival + rng.uniform(*workload.deadline_range_s) if has_deadline else None
        commands.append(
            Command(
                id=f"cmd-{i:05d}",
                agent=agent,
                arrival=arrival,
                priority=_pick(rng, workload.priorities),
                deadline=deadline,
                tenant=_pick(rng, workload.tenants),
                attempts=attempts,
            )
        )
    return commands


def call_outcome(
    cmd: Command, attempt: int, tier: str, max_tokens: int
) -> tuple[Usage, float, bool]:
    """Usage, latency and validity of ``cmd``'s attempt number ``attempt`` on ``tier``."""
    draw = cmd.attempts[attempt]
    out = min(draw.output_tokens, max_tokens)
    latency = draw.ttft_s + out / TOKENS_PER_S[cmd.agent.complexity]
    usage = Usage(input_tokens=draw.input_tokens, output_tokens=out)
    return usage, latency, draw.invalid_draw >= INVALID[tier]


def budgets_for(
    config: RuntimeConfig, workload: Workload, commands: Sequence[Command]
) -> tuple[Budgets, float]:
    demand = 0.0
    for cmd in commands:
        mt = config.complexity[cmd.agent.complexity].max_tokens
        usage, _, _ = call_outcome(cmd, 0, cmd.agent.tier, mt)
        demand += config.tiers[cmd.agent.tier].cost(usage)
    daily = round(workload.budget_fraction * demand, 2)
    tenants = (
        {name: round(workload.tenant_budget * daily, 2) for name, _ in workload.tenants}
        if workload.tenant_budget
        else {}
    )
    return Budgets(daily_usd=daily, per_tenant_daily_usd=tenants), demand


# -- the simulated API ---------------------------------------------------------------------


class SimBucket:
    def __init__(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60
        self.level = self.capacity
        self.at = 0.0

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + self.rate * (now - self.at))
        self.at = now

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)


class SimAPI:
    """One tier of the model API: a 429 with the exact retry-after when a bucket is short."""

    def __init__(self, config: RuntimeConfig, tier: str, factor: float) -> None:
        spec = config.tiers[tier]
        self.requests = SimBucket(spec.requests_per_minute * factor)
        self.input = SimBucket(spec.input_tokens_per_minute * factor)
        self.output = SimBucket(spec.output_tokens_per_minute * factor)

    def _refill(self, now: float) -> None:
        for bucket in (self.requests, self.input, self.output):
            bucket.refill(now)

    def headers(self) -> dict[str, float]:
        return {
            "requests_limit": self.requests.capacity,
            "requests_remaining": math.floor(self.requests.level),
            "input_tokens_limit": self.input.capacity,
            "input_tokens_remaining": math.floor(self.input.level),
            "output_tokens_limit": self.output.capacity,
            "output_tokens_remaining": math.floor(self.output.level),
        }

    def start(self, now: float, input_tokens: int, max_tokens: int) -> float | None:
        """None when the call starts, else the seconds to wait (its retry-after)."""
        self._refill(now)
        if input_tokens > self.input.capacity or max_tokens > self.output.capacity:
            return math.inf  # can never start: the API refuses it outright
        wait = max(
            self.requests.wait_for(1),
            self.input.wait_for(input_tokens),
            self.output.wait_for(max_tokens),
        )
        if wait > 1e-9:  # below that, float rounding: the tokens are there
            return max(wait, 0.001)  # a real retry-after is never shorter than a millisecond
        self.requests.level -= 1
        self.input.level -= input_tokens
        self.output.level -= max_tokens
        return None

    def finish(self, now: float, max_tokens: int, output_tokens: int) -> dict[str, float]:
        """End a call: the headers (before the refund), then the refund."""
        self._refill(now)
        headers = self.headers()
        self.output.level = min(
            self.output.capacity, self.output.level + max_tokens - output_tokens
        )
        return headers


# -- bookkeeping ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one command on one side."""

    waited: float = 0.0
    calls_s: float = 0.0
    finished_at: float | None = None
    left_at: float | None = None  # refused, expired, failed or deferred
    how: str = "unfinished"


@dataclass
class Tally:
    config: RuntimeConfig
    budget: Budgets
    commands: Sequence[Command]
    #: commands the API refuses outright at their tier (too large for a bucket):
    #: no side can meet their deadlines, so misses leave them out
    unrunnable: frozenset[str] = frozenset()
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    cost: float = 0.0
    spend: dict[str, float] = field(default_factory=dict)
    makespan: float = 0.0
    rate_limit_errors: int = 0
    calls: int = 0
    escalations: int = 0

    def __post_init__(self) -> None:
        self.outcomes = {c.id: Outcome() for c in self.commands}

    def called(self, cmd: Command, tier: str, usage: Usage, latency: float, end: float) -> None:
        usd = self.config.tiers[tier].cost(usage)
        self.cost += usd
        self.spend[cmd.tenant] = self.spend.get(cmd.tenant, 0.0) + usd
        self.calls += 1
        self.outcomes[cmd.id].calls_s += latency
        self.makespan = max(self.makespan, end)

    def leave(self, cmd: Command, how: str, at: float) -> None:
        outcome = self.outcomes[cmd.id]
        outcome.how, outcome.left_at = how, at
        if how == "completed":
            outcome.finished_at = at

    def overspend(self) -> float:
        over = max(0.0, self.cost - (self.budget.daily_usd or math.inf))
        for tenant, limit in self.budget.per_tenant_daily_usd.items():
            over += max(0.0, self.spend.get(tenant, 0.0) - limit)
        return over

    def wait_of(self, cmd: Command, end: float) -> float:
        """Time spent waiting to start calls; unfinished work waited until it left."""
        outcome = self.outcomes[cmd.id]
        if outcome.how == "completed":
            return outcome.waited
        left = outcome.left_at if outcome.left_at is not None else end
        return max(outcome.waited, left - cmd.arrival - outcome.calls_s)

    def summary(self, end: float) -> dict[str, Any]:
        cmds = self.commands
        waits = {c.id: self.wait_of(c, end) for c in cmds}
        by = Counter(o.how for o in self.outcomes.values())
        missed = sum(
            1
            for c in cmds
            if c.deadline is not None
            and c.id not in self.unrunnable
            and not ((f := self.outcomes[c.id].finished_at) is not None and f <= c.deadline)
        )
        return {
            "completed": by["completed"],
            "failed": by["failed"],
            "refused": by["refused"],
            "deferred": by["deferred"],
            "dead_lettered": by["dead_lettered"],
            "unfinished": by["unfinished"],
            "cost_usd": round(self.cost, 4),
            "overspend_usd": round(self.overspend(), 4),
            "rate_limit_errors": self.rate_limit_errors,
            "makespan_s": round(self.makespan, 1),
            "p95_wait_s": _p95([waits[c.id] for c in cmds]),
            "p50_wait_s": _percentile([waits[c.id] for c in cmds], 0.5),
            "p95_wait_high_s": _p95([waits[c.id] for c in cmds if c.priority == HIGH]),
            "p95_wait_low_s": _p95([waits[c.id] for c in cmds if c.priority == LOW]),
            "deadline_missed": missed,
            "calls": self.calls,
            "escalations": self.escalations,
        }


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)


def _p95(values: Sequence[float]) -> float:
    return _percentile(values, 0.95)


class Agenda:
    """A virtual clock's events, in time order (ties in insertion order)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = 0

    def push(self, at: float, kind: str, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, payload))

    def __bool__(self) -> bool:
        return bool(self._heap)

    def peek(self) -> float:
        return self._heap[0][0]

    def pop_batch(self) -> tuple[float, list[tuple[str, Any]]]:
        at = self._heap[0][0]
        batch = []
        while self._heap and self._heap[0][0] == at:
            _, _, kind, payload = heapq.heappop(self._heap)
            batch.append((kind, payload))
        return at, batch


@dataclass
class World:
    config: RuntimeConfig
    commands: Sequence[Command]
    budget: Budgets
    api_factor: float
    seed: int

    def apis(self) -> dict[str, SimAPI]:
        return {t: SimAPI(self.config, t, self.api_factor) for t in self.config.tiers}

    def max_tokens(self, cmd: Command) -> int:
        return self.config.complexity[cmd.agent.complexity].max_tokens

    def tally(self) -> Tally:
        apis = self.apis()
        unrunnable = frozenset(
            c.id
            for c in self.commands
            if math.isinf(
                apis[c.agent.tier].start(0.0, c.attempts[0].input_tokens, self.max_tokens(c)) or 0.0
            )
        )
        return Tally(self.config, self.budget, self.commands, unrunnable)


# -- FIFO, retrying like the SDK --------------------------------------------------------------


def run_fifo(world: World) -> Tally:
    rng = random.Random(world.seed + 1)
    tally = world.tally()
    apis = world.apis()
    free = {t: spec.concurrency for t, spec in world.config.tiers.items()}
    queues: dict[str, deque[tuple[Command, int, float]]] = {t: deque() for t in world.config.tiers}
    agenda = Agenda()
    for cmd in world.commands:
        agenda.push(cmd.arrival, "arrive", cmd)

    def attempt(cmd: Command, n: int, enqueued: float, retries: int, now: float) -> None:
        tier, mt = cmd.agent.tier, world.max_tokens(cmd)
        wait = apis[tier].start(now, cmd.attempts[n].input_tokens, mt)
        if wait is None:
            tally.outcomes[cmd.id].waited += now - enqueued
            _, latency, _ = call_outcome(cmd, n, tier, mt)
            agenda.push(now + latency, "done", (cmd, n))
        elif math.isinf(wait):
            tally.outcomes[cmd.id].waited += now - enqueued
            tally.leave(cmd, "refused", now)  # a 400 from the API: never fits
            free[tier] += 1
            pump(tier, now)
        else:
            tally.rate_limit_errors += 1
            # the SDK: retry-after when it is at most 60 s, else 0.5 s doubling to 8 s
            delay = wait if wait <= 60 else min(8.0, 0.5 * 2**retries) * (1 - 0.25 * rng.random())
            agenda.push(now + delay, "retry", (cmd, n, enqueued, retries + 1))

    def pump(tier: str, now: float) -> None:
        while free[tier] and queues[tier]:
            cmd, n, enqueued = queues[tier].popleft()
            free[tier] -= 1
            attempt(cmd, n, enqueued, 0, now)

    while agenda:
        now, batch = agenda.pop_batch()
        for kind, payload in batch:
            if kind == "arrive":
                queues[payload.agent.tier].append((payload, 0, now))
                pump(payload.agent.tier, now)
            elif kind == "retry":
                attempt(*payload, now)
            else:
                cmd, n = payload
                tier, mt = cmd.agent.tier, world.max_tokens(cmd)
                usage, latency, valid = call_outcome(cmd, n, tier, mt)
                apis[tier].finish(now, mt, usage.output_tokens)
                tally.called(cmd, tier, usage, latency, now)
                free[tier] += 1
                if valid:
                    tally.leave(cmd, "completed", now)
                elif n + 1 < MAX_ATTEMPTS:
                    queues[tier].append((cmd, n + 1, now))
                else:
                    tally.leave(cmd, "failed", now)
                pump(tier, now)
    return tally


# -- the competent baseline -----------------------------------------------------------------


class _Bucket:
    def __init__(self, per_minute: float) -> None:
        self.capacity, self.rate, self.level, self.at = per_minute, per_minute / 60, per_minute, 0.0

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + self.rate * (now - self.at))
        self.at = now

    def ready_at(self, amount: float, now: float) -> float:
        return now if self.level >= amount else now + (amount - self.level) / self.rate


def run_baseline(world: World) -> Tally:
    """Per-tier semaphores, token buckets (refunding unused output), a strict priority
    queue, the exact retry-after; no budgets, no deadlines, invalid replies retried."""
    tally = world.tally()
    apis = world.apis()
    cfg = world.config
    free = {t: spec.concurrency for t, spec in cfg.tiers.items()}
    buckets = {
        t: (
            _Bucket(s.requests_per_minute),
            _Bucket(s.input_tokens_per_minute),
            _Bucket(s.output_tokens_per_minute),
        )
        for t, s in cfg.tiers.items()
    }
    paused = dict.fromkeys(cfg.tiers, 0.0)
    queues: dict[str, list[tuple[int, int, Command, int, float]]] = {t: [] for t in cfg.tiers}
    seq = 0
    agenda = Agenda()
    woken: set[tuple[str, float]] = set()
    for cmd in world.commands:
        agenda.push(cmd.arrival, "arrive", cmd)

    def enqueue(cmd: Command, n: int, now: float) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queues[cmd.agent.tier], (-cmd.priority, seq, cmd, n, now))

    def pump(tier: str, now: float) -> None:
        req, inp, out = buckets[tier]
        for b in (req, inp, out):
            b.refill(now)
        while free[tier] and queues[tier] and now >= paused[tier]:
            _, _, cmd, n, enqueued = queues[tier][0]
            mt = world.max_tokens(cmd)
            need_in = cmd.attempts[n].input_tokens
            # a call larger than a whole bucket waits for a full one; the API judges it
            ready = max(
                req.ready_at(1, now),
                inp.ready_at(min(need_in, inp.capacity), now),
                out.ready_at(min(mt, out.capacity), now),
            )
            if ready > now:
                if (tier, ready) not in woken:
                    woken.add((tier, ready))
                    agenda.push(ready, "wake", tier)
                return
            heapq.heappop(queues[tier])
            wait = apis[tier].start(now, need_in, mt)
            if wait is not None and math.isinf(wait):
                tally.outcomes[cmd.id].waited += now - enqueued
                tally.leave(cmd, "refused", now)
                continue
            if wait is not None:  # a 429: wait exactly as long as asked, then again
                tally.rate_limit_errors += 1
                paused[tier] = now + wait
                enqueue(cmd, n, enqueued)
                agenda.push(paused[tier], "wake", tier)
                return
            req.level -= 1
            inp.level -= need_in
            out.level -= mt
            free[tier] -= 1
            tally.outcomes[cmd.id].waited += now - enqueued
            usage, latency, valid = call_outcome(cmd, n, tier, mt)
            agenda.push(now + latency, "done", (cmd, n, usage, latency, valid))

    while agenda:
        now, batch = agenda.pop_batch()
        touched: set[str] = set()
        for kind, payload in batch:
            if kind == "arrive":
                enqueue(payload, 0, now)
                touched.add(payload.agent.tier)
            elif kind == "wake":
                touched.add(payload)
            else:
                cmd, n, usage, latency, valid = payload
                tier, mt = cmd.agent.tier, world.max_tokens(cmd)
                apis[tier].finish(now, mt, usage.output_tokens)
                buckets[tier][2].refill(now)
                buckets[tier][2].level = min(
                    buckets[tier][2].capacity, buckets[tier][2].level + mt - usage.output_tokens
                )
                tally.called(cmd, tier, usage, latency, now)
                free[tier] += 1
                if valid:
                    tally.leave(cmd, "completed", now)
                elif n + 1 < MAX_ATTEMPTS:
                    enqueue(cmd, n + 1, now)
                else:
                    tally.leave(cmd, "failed", now)
                touched.add(tier)
        for tier in touched:
            pump(tier, now)
    return tally


# -- the policy ---------------------------------------------------------------------------------


@dataclass
class PolicyRun:
    tally: Tally
    decisions: int = 0
    decide_s: float = 0.0
    events: Counter[str] = field(default_factory=Counter)


def run_policy(world: World) -> PolicyRun:
    now = 0.0

    def clock() -> float:
        return now

    config = world.config.model_copy(update={"budgets": world.budget})
    policy = SchedulingPolicy(config, clock=clock)
    run = PolicyRun(world.tally())
    tally = run.tally
    apis = world.apis()
    by_id = {cmd.id: cmd for cmd in world.commands}
    queued_since: dict[str, float] = {}
    attempts: dict[str, int] = {}
    agenda = Agenda()
    woken: set[float] = set()
    for cmd in world.commands:
        agenda.push(cmd.arrival, "arrive", cmd)

    def submit(job: Job) -> None:
        # the coordinator knows the prompt's size before it dispatches
        cmd = by_id[job.id]
        job = replace(job, input_tokens=cmd.attempts[attempts[job.id]].input_tokens)
        policy.submit(job)
        queued_since[job.id] = now

    while agenda and agenda.peek() < DAY_S:
        now, batch = agenda.pop_batch()
        for kind, payload in batch:
            if kind == "arrive":
                cmd = payload
                attempts[cmd.id] = 0
                submit(
                    Job(
                        id=cmd.id, agent=cmd.agent.name, tier=cmd.agent.tier,
                        complexity=cmd.agent.complexity, submitted_at=cmd.arrival,
                        priority=cmd.priority, deadline=cmd.deadline, tenant=cmd.tenant,
                        allowed_tiers=cmd.agent.allowed,
                    )
                )  # fmt: skip
            elif kind == "done":
                dispatch, usage, latency, valid = payload
                cmd = by_id[dispatch.job.id]
                headers = apis[dispatch.tier].finish(now, dispatch.max_tokens, usage.output_tokens)
                policy.observe_limits(dispatch.tier, **headers)
                policy.complete(cmd.id, usage=usage, ok=valid, model=dispatch.model)
                tally.called(cmd, dispatch.tier, usage, latency, now)
                attempts[cmd.id] += 1
                if valid:
                    tally.leave(cmd, "completed", now)
                elif attempts[cmd.id] < MAX_ATTEMPTS:
                    up = policy.escalate(dispatch.job, from_tier=dispatch.tier)
                    if up is not None:
                        tally.escalations += 1
                    submit(up or dispatch.job)
                else:
                    tally.leave(cmd, "failed", now)
        started = time.perf_counter()
        decisions = policy.decide()
        run.decide_s += time.perf_counter() - started
        run.decisions += 1
        for event in decisions.events:
            run.events[event.kind] += 1
        for r in decisions.dead_letter:
            tally.leave(by_id[r.job.id], "dead_lettered", now)
        for r in decisions.refused:
            tally.leave(by_id[r.job.id], "refused", now)
        for d in decisions.dispatch:
            cmd = by_id[d.job.id]
            usage, latency, valid = call_outcome(cmd, attempts[cmd.id], d.tier, d.max_tokens)
            wait = apis[d.tier].start(now, usage.input_tokens, d.max_tokens)
            if wait is not None:  # the API's limits are below what the policy believed
                tally.rate_limit_errors += 1
                headers = apis[d.tier].headers()
                policy.observe_limits(d.tier, retry_after_s=min(wait, 60.0), **headers)
                policy.complete(cmd.id, usage=Usage(), ok=False)
                policy.submit(d.job)
                continue
            tally.outcomes[cmd.id].waited += now - queued_since[cmd.id]
            agenda.push(now + latency, "done", (d, usage, latency, valid))
        wake = decisions.wake_at
        if wake is not None and wake < DAY_S and wake not in woken:
            woken.add(wake)
            agenda.push(max(wake, now), "wake")
    deferred = policy.snapshot()["queued"]["deferred"]
    for job_id, outcome in tally.outcomes.items():
        if outcome.how == "unfinished" and deferred and job_id in policy._deferred:
            outcome.how = "deferred"
    return run


# -- the lower bound ---------------------------------------------------------------------------


def lower_bound(world: World) -> dict[str, Any]:
    """The least makespan of every command once at its requested tier (first attempt's
    draws), under the API's limits, whoever schedules it: independent of any schedule."""
    best: dict[str, Any] = {"makespan_s": 0.0}
    cfg = world.config
    for tier, spec in cfg.tiers.items():
        calls = sorted(
            (
                (c.arrival, c.attempts[0].input_tokens,
                 *call_outcome(c, 0, tier, world.max_tokens(c))[:2])
                for c in world.commands if c.agent.tier == tier
            ),
            key=lambda x: x[0],
        )  # fmt: skip
        rpm = spec.requests_per_minute * world.api_factor
        itpm = spec.input_tokens_per_minute * world.api_factor
        otpm = spec.output_tokens_per_minute * world.api_factor
        n = inp = out = busy = 0.0
        longest, shortest = 0.0, math.inf
        for i in range(len(calls) - 1, -1, -1):
            release, input_tokens, usage, latency = calls[i]
            n += 1
            inp += input_tokens
            out += usage.output_tokens
            busy += latency
            longest, shortest = max(longest, latency), min(shortest, latency)
            if i and calls[i - 1][0] == release:
                continue
            bounds = {
                "requests": max(0.0, n - rpm) / (rpm / 60) + shortest,
                "input_tokens": max(0.0, inp - itpm) / (itpm / 60) + shortest,
                "output_tokens": max(0.0, out - otpm) / (otpm / 60) + shortest,
                "concurrency": max(busy / spec.concurrency, longest),
            }
            constraint = max(bounds, key=lambda k: bounds[k])
            value = release + bounds[constraint]
            if value > best["makespan_s"]:
                best = {"makespan_s": value, "tier": tier, "constraint": constraint,
                        "from_s": round(release, 1), "calls": int(n)}  # fmt: skip
    best["makespan_s"] = round(best["makespan_s"], 1)
    return best


# -- a workload, all sides ----------------------------------------------------------------------


GOALS = (
    ("zero_rate_limit_errors", "rate_limit_errors == 0 (API limits as configured)"),
    ("zero_overspend", "overspend_usd == 0"),
    (
        "budget_used",
        "cost_usd >= 0.9 x the daily budget, or x what the baseline (no budget) spent "
        "if less (when the budget binds)",
    ),
    ("makespan", "makespan <= 1.05 x baseline"),
    ("high_priority_p95", "priority-8 p95 <= 2 x baseline + 60 s"),
    ("low_priority_p95", "priority-2 p95 <= 0.7 x baseline"),
    ("deadline_misses", "deadline misses <= 0.8 x baseline"),
)


def run_workload(
    config: RuntimeConfig,
    workload: Workload,
    *,
    commands: int,
    seed: int,
    heavy_tails: bool,
    api_limits: float,
) -> dict[str, Any]:
    cmds = make_commands(config, workload, commands, seed, 1.0 if heavy_tails else 0.35)
    budget, demand = budgets_for(config, workload, cmds)
    world = World(config, cmds, budget, api_limits, seed)
    end = DAY_S
    policy = run_policy(world)
    baseline = run_baseline(world)
    fifo = run_fifo(world)
    p = policy.tally.summary(end)
    b = baseline.tally.summary(end) if isinstance(baseline, PolicyRun) else baseline.summary(end)
    f = fifo.summary(end)
    p["decisions"] = policy.decisions
    p["decide_us"] = round(policy.decide_s / max(policy.decisions, 1) * 1e6, 1)
    p["events"] = dict(sorted(policy.events.items()))
    waits = not workload.budget_binds  # else the baseline, with no budgets, is no yardstick
    goals: dict[str, bool | None] = {
        "zero_rate_limit_errors": p["rate_limit_errors"] == 0 if api_limits >= 1.0 else None,
        "zero_overspend": p["overspend_usd"] == 0,
        "budget_used": p["cost_usd"] >= 0.9 * min(budget.daily_usd or math.inf, b["cost_usd"])
        if workload.budget_binds
        else None,
        "makespan": p["makespan_s"] <= 1.05 * b["makespan_s"] if waits else None,
        "high_priority_p95": p["p95_wait_high_s"] <= 2 * b["p95_wait_high_s"] + 60
        if waits
        else None,
        "low_priority_p95": p["p95_wait_low_s"] <= 0.7 * b["p95_wait_low_s"]
        or p["p95_wait_low_s"] <= 60
        if waits
        else None,
        "deadline_misses": p["deadline_missed"] <= 0.8 * b["deadline_missed"]
        or p["deadline_missed"] == 0
        if waits
        else None,
    }
    bound = lower_bound(world)
    return {
        "workload": workload.name,
        "seed": seed,
        "heavy_tails": heavy_tails,
        "api_limits": api_limits,
        "policy": p,
        "baseline": b,
        "fifo": f,
        "lower_bound": bound,
        "makespan_vs_bound": round(p["makespan_s"] / bound["makespan_s"], 3)
        if bound["makespan_s"]
        else None,
        "goals": goals,
        "context": {
            "commands": len(cmds),
            "by_tier": dict(sorted(Counter(c.agent.tier for c in cmds).items())),
            "span_s": round(cmds[-1].arrival, 1),
            "demand_usd": round(demand, 2),
            "daily_budget_usd": budget.daily_usd,
            "tenant_budgets": len(budget.per_tenant_daily_usd),
        },
    }


# -- decisions ------------------------------------------------------------------------------------


@dataclass
class VirtualClock:
    """The policy's clock in a simulation: time moves only when the loop says so."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def decision_costs(config: RuntimeConfig, sizes: Sequence[int], seed: int) -> list[dict[str, Any]]:
    """Microseconds per ``decide`` with ``n`` commands queued, 70 agents, deadlines on
    15 % (some within the urgent horizon), budgets slack, under pressure (global or
    per tenant: less than the pressure fraction left, work steps down) or running
    out (every job that no longer fits is deferred or refused); each step completes
    one call and decides again, as the daemon does (again at once while ``wake_at``
    is now). Then the time to drain ``n``."""
    out = []
    agents = [f"agent-{i:02d}" for i in range(70)]
    tiers = list(config.tiers)
    tenants = [f"t{i}" for i in range(20)]
    cases: dict[str, tuple[Budgets, float]] = {  # budgets, share already spent
        "slack": (Budgets(daily_usd=None), 0.0),
        "pressure_global": (Budgets(daily_usd=2000.0), 0.95),
        "pressure_tenants": (
            Budgets(daily_usd=None, per_tenant_daily_usd=dict.fromkeys(tenants, 100.0)),
            0.95,
        ),
        "running_out": (Budgets(daily_usd=4.0), 0.0),
    }
    for case, (budgets, spent) in cases.items():
        for n in sizes:
            rng = random.Random(seed)
            clock = VirtualClock(1_000.0)
            now = clock.now
            policy = SchedulingPolicy(config.model_copy(update={"budgets": budgets}), clock=clock)
            if budgets.daily_usd:
                policy.restore_spend(spent * budgets.daily_usd)
            for tenant, limit in budgets.per_tenant_daily_usd.items():
                policy.restore_spend(spent * limit, tenant=tenant)
            for i in range(n):
                deadline = now + rng.uniform(300, 7200) if rng.random() < 0.15 else None
                policy.submit(
                    Job(
                        id=f"j{i}", agent=rng.choice(agents), tier=rng.choice(tiers),
                        complexity=rng.choice(("low", "medium", "high")),
                        submitted_at=now - rng.uniform(0, 1200), priority=rng.choice((2, 5, 8)),
                        deadline=deadline, tenant=rng.choice(tenants),
                        allowed_tiers=tuple(tiers) if i % 3 == 0 else (),
                        input_tokens=rng.randint(500, 6000),
                    )
                )  # fmt: skip
            running: deque[str] = deque()
            samples: list[float] = []
            moved = Counter[str]()
            for _ in range(min(n, 3000)):
                now = clock.now = clock.now + 0.5
                if running:
                    policy.complete(running.popleft(), usage=Usage(input_tokens=1000,
                                                                   output_tokens=300), ok=True)  # fmt: skip
                while True:
                    t0 = time.perf_counter()
                    decisions = policy.decide()
                    samples.append(time.perf_counter() - t0)
                    running.extend(d.job.id for d in decisions.dispatch)
                    moved.update(e.kind for e in decisions.events if e.kind != "step_down")
                    moved["dispatched"] += len(decisions.dispatch)
                    moved["step_down"] += sum(d.stepped_down for d in decisions.dispatch)
                    if decisions.wake_at != now:
                        break
            samples.sort()
            jobs = moved["dispatched"] + moved["deferred"] + moved["refused"] + moved["dead_letter"]
            out.append(
                {
                    "case": case,
                    "queued": n,
                    "decisions": len(samples),
                    "decide_us_p50": round(samples[len(samples) // 2] * 1e6, 1),
                    "decide_us_p99": round(samples[int(len(samples) * 0.99) - 1] * 1e6, 1),
                    "decide_us_max": round(samples[-1] * 1e6, 1),
                    "decide_us_mean": round(statistics.fmean(samples) * 1e6, 1),
                    "us_per_job_moved": round(sum(samples) / max(jobs, 1) * 1e6, 1),
                    **{k: v for k, v in sorted(moved.items()) if v},
                }
            )
    # a whole drain: every job dispatched once, slots freed as fast as they fill
    for n in sizes:
        clock = VirtualClock(1_000.0)
        now = clock.now
        cfg = config.model_copy(update={"budgets": Budgets(daily_usd=None)})
        wide = {
            t: spec.model_copy(update={"requests_per_minute": 10**9,
                                       "input_tokens_per_minute": 10**12,
                                       "output_tokens_per_minute": 10**12})
            for t, spec in cfg.tiers.items()
        }  # fmt: skip
        policy = SchedulingPolicy(cfg.model_copy(update={"tiers": wide}), clock=clock)
        rng = random.Random(seed)
        for i in range(n):
            policy.submit(
                Job(id=f"j{i}", agent=rng.choice(agents), tier=rng.choice(tiers),
                    complexity="low", submitted_at=now, priority=rng.choice((2, 5, 8)),
                    deadline=now + 99_999 if rng.random() < 0.15 else None, input_tokens=1000)
            )  # fmt: skip
        started, done = time.perf_counter(), 0
        while done < n:
            decisions = policy.decide()
            for d in decisions.dispatch:
                policy.complete(d.job.id, usage=Usage(input_tokens=1000, output_tokens=100),
                                ok=True)  # fmt: skip
            done += len(decisions.dispatch)
            clock.now += 0.001
        out.append(
            {
                "case": "drain",
                "queued": n,
                "seconds": round(elapsed := time.perf_counter() - started, 3),
                "us_per_job": round(elapsed / n * 1e6, 1),
            }
        )
    return out


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--workload", choices=sorted(WORKLOADS), action="append",
        help="run only these (repeatable; default: all)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=7, help="workload seed")
    parser.add_argument("--commands", type=int, default=2000, help="commands per workload")
    parser.add_argument(
        "--heavy-tails", action="store_true", help="prompt sizes lognormal with sigma 1.0"
    )
    parser.add_argument(
        "--api-limits", type=float, default=1.0,
        help="the API's limits as a multiple of the configured ones",
    )  # fmt: skip
    parser.add_argument(
        "--decisions", action="store_true", help="measure one decision's cost instead"
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="queue sizes for --decisions")
    parser.add_argument("--config", type=Path, default=CONFIG, help="tier/complexity table")
    return parser.parse_args(argv)


def _table(result: dict[str, Any], out: Callable[[str], None]) -> None:
    keys = (
        "completed", "refused", "deferred", "dead_lettered", "failed", "cost_usd",
        "overspend_usd", "rate_limit_errors", "makespan_s", "p95_wait_s", "p95_wait_high_s",
        "p95_wait_low_s", "deadline_missed", "calls",
    )  # fmt: skip
    c = result["context"]
    out(
        f"== {result['workload']} (seed {result['seed']}, {c['commands']} commands over "
        f"{c['span_s']:.0f} s, budget ${c['daily_budget_usd']} of ${c['demand_usd']} demand"
        f"{', heavy tails' if result['heavy_tails'] else ''}"
        f"{', API limits x' + str(result['api_limits']) if result['api_limits'] != 1 else ''})"
    )
    out(f"{'':20}{'policy':>12}{'baseline':>12}{'fifo':>12}")
    for key in keys:
        row = "".join(f"{result[side][key]!s:>12}" for side in ("policy", "baseline", "fifo"))
        out(f"{key:20}{row}")
    out(
        f"lower bound {result['lower_bound']['makespan_s']} s; policy / bound "
        f"{result['makespan_vs_bound']}; decide {result['policy']['decide_us']} us"
    )
    missed = [name for name, ok in result["goals"].items() if ok is False]
    moot = [name for name, ok in result["goals"].items() if ok is None]
    out(
        ("goals: all met" if not missed else f"goals missed: {', '.join(missed)}")
        + (f" (n/a here: {', '.join(moot)})" if moot else "")
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, env={})
    if args.decisions:
        sizes = [int(s) for s in args.sizes.split(",")]
        rows = decision_costs(config, sizes, args.seed)
        if args.json:
            print(json.dumps({"decisions": rows}, separators=(",", ":")))
        else:
            for row in rows:
                print(json.dumps(row))
        return 0
    names = args.workload or list(WORKLOADS)
    results = [
        run_workload(
            config, WORKLOADS[name], commands=args.commands, seed=args.seed,
            heavy_tails=args.heavy_tails, api_limits=args.api_limits,
        )
        for name in names
    ]  # fmt: skip
    if args.json:
        summary = {
            "workloads": results,
            "all_goals_met": all(ok is not False for r in results for ok in r["goals"].values()),
            "goals": dict(GOALS),
        }
        print(json.dumps(summary, separators=(",", ":")))
    else:
        for result in results:
            _table(result, print)
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
