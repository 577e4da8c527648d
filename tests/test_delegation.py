"""Claude-backed agents that delegate (issue 15): the agent loop through the real
``anthropic`` SDK (a scripted ``httpx2.MockTransport`` answering ``tool_use`` turns),
a worker and a coordinator on both buses."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from acp.agents.claude import ClaudeAgent
from acp.agents.config import Delegation, RuntimeConfig
from acp.agents.definition import AgentDefinition
from acp.agents.delegation import plan_child, reachable
from acp.errors import Continue, Suspend
from acp.protocol import Envelope
from acp.protocol.headers import H_CONV, H_STEP
from acp.runtime import Client, Coordinator, RedisBus, Worker
from acp.runtime.keys import COORDINATORS
from acp.runtime.trace import read_trace
from acp.testing import TestContext
from tests.test_claude_agent import CONFIG, FakeAPI, message

pytestmark = pytest.mark.anyio

ORCHESTRATOR = AgentDefinition(
    name="orchestrator",
    description="Plans releases and delegates every piece of work to a specialist.",
    model="opus",
    computational_complexity="medium",
    system_prompt="You are the orchestrator. Ask the data-engineer; never do the work.",
    delegates_to=["data-engineer"],
)
ENGINEER = AgentDefinition(
    name="data-engineer",
    description="Checks data pipelines and answers with their status.",
    model="sonnet",
    computational_complexity="medium",
    system_prompt="You are the data engineer. Reply in compact JSON.",
)
CATALOGUE = {d.name: d for d in (ORCHESTRATOR, ENGINEER)}
ROOT = Path(__file__).resolve().parents[1]


def tool_use(*calls: tuple[str, dict[str, Any]], model: str = "claude-opus-5-5") -> dict[str, Any]:
    body = message("", model=model, stop_reason="tool_use")
    body["content"] = [
        {"type": "text", "text": "Asking the specialists."},
        *(
            {"type": "tool_use", "id": f"toolu_{n:02d}", "name": name, "input": args}
            for n, (name, args) in enumerate(calls)
        ),
    ]
    return body


class Script:
    """The fake API's answers: the orchestrator delegates on its first turn and sums
    up on its second; the data engineer answers at once. Counts paid turns."""

    def __init__(self, first_turn: dict[str, Any]) -> None:
        self.first_turn = first_turn
        self.turns: Counter[tuple[str, int]] = Counter()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        system = " ".join(block["text"] for block in body["system"])
        messages = body["messages"]
        who = "orchestrator" if "orchestrator" in system else "data-engineer"
        self.turns[who, len(messages)] += 1
        if who == "data-engineer":
            asked = json.loads(messages[0]["content"])
            reply = {"component_id": asked.get("component_id"), "healthy": True}
            return httpx2.Response(200, json=message(json.dumps(reply), model="claude-sonnet-5-5"))
        if len(messages) == 1:
            return httpx2.Response(200, json=self.first_turn)
        results = [b for b in messages[-1]["content"] if b["type"] == "tool_result"]
        summary = {"release": "go", "checked": [json.loads(r["content"]) for r in results]}
        return httpx2.Response(200, json=message(json.dumps(summary), model="claude-opus-5-5"))


async def coordinator_seen(bus: Any) -> None:
    """Start workers once the coordinator's presence shows: a worker that starts
    before it sends its commands straight to their agents until its next heartbeat."""
    with anyio.fail_after(10):
        while not await bus.members(COORDINATORS):
            await anyio.sleep(0.02)


@asynccontextmanager
async def running(
    bus_backend: Any,
    agents: list[Any],
    catalogue: dict[str, AgentDefinition],
    config: RuntimeConfig = CONFIG,
    **worker_options: Any,
) -> AsyncIterator[tuple[Any, Client]]:
    """A coordinator and a worker for ``agents`` on the bus; yields the worker's bus
    and a client sending through the coordinator."""
    async with (
        bus_backend() as worker_bus,
        bus_backend() as coordinator_bus,
        bus_backend() as client_bus,
        anyio.create_task_group() as tg,
    ):
        coordinator = Coordinator(coordinator_bus, config, definitions=catalogue)
        await tg.start(coordinator.run)
        await coordinator_seen(worker_bus)
        worker = Worker(worker_bus, agents, heartbeat=0.5, **worker_options)
        await tg.start(worker.run)
        yield worker_bus, Client(client_bus, sender="tester", via="coordinator")
        worker.stop()
        coordinator.stop()


async def run_tree(
    bus_backend: Any,
    script: Script,
    body: dict[str, Any],
    *,
    roots: int = 1,
    config: RuntimeConfig = CONFIG,
    concurrency: int = 16,
    delegation: Delegation | None = None,
) -> dict[str, Any]:
    api = FakeAPI(script)
    agents = [
        ClaudeAgent(d, client=api.client(), config=config, catalogue=CATALOGUE)
        for d in CATALOGUE.values()
    ]
    replies: list[Envelope] = []
    async with running(
        bus_backend, agents, CATALOGUE, config, concurrency=concurrency, delegation=delegation
    ) as (worker_bus, client):

        async def one() -> None:
            replies.append(await client.request("orchestrator", body, timeout=60))

        with anyio.fail_after(90):
            async with anyio.create_task_group() as requests:
                for _ in range(roots):
                    requests.start_soon(one)
        reply = replies[0]
        record = await worker_bus.read_record(reply.correlation_id or "")
        tree = await read_trace(worker_bus, reply.correlation_id or "", agent="orchestrator")
    return {
        "reply": reply.body,
        "replies": [r.body for r in replies],
        "record": [json.loads(t) for t in record],
        "tree": tree,
    }


async def test_a_delegating_turn_suspends_and_the_answers_resume_it(bus_backend: Any) -> None:
    """Two delegations in one turn run in parallel as ordinary commands; the
    orchestrator's next turn gets both answers as tool results; every model turn is
    paid for once; the conversation is recorded turn by turn."""
    first = tool_use(
        ("delegate", {"to": "data-engineer", "body": {"cmd": "PIPELINE_STATUS", "component_id": "etl", "respond_format": "STRUCTURED_JSON"}}),
        ("delegate", {"to": "data-engineer", "body": {"cmd": "PIPELINE_STATUS", "component_id": "ml", "respond_format": "STRUCTURED_JSON"}}),
    )  # fmt: skip
    script = Script(first)
    done = await run_tree(
        bus_backend,
        script,
        {"cmd": "PLAN_RELEASE", "version": "2.1", "respond_format": "STRUCTURED_JSON"},
    )
    assert done["reply"].get("release") == "go", (done, script.turns)
    assert sorted(c["component_id"] for c in done["reply"]["checked"]) == ["etl", "ml"]
    assert script.turns == {
        ("orchestrator", 1): 1,
        ("data-engineer", 1): 2,
        ("orchestrator", 3): 1,
    }, "each model turn paid for once"
    roles = [t["role"] for t in done["record"]]
    assert roles == ["assistant", "user", "assistant"]
    tree = done["tree"].as_dict()  # what acp trace prints
    assert tree["turns"] == 2
    assert [c["agent"] for c in tree["children"]] == ["data-engineer", "data-engineer"]
    assert all(c["outcome"] == "answered" and c["tier"] == "sonnet" for c in tree["children"])
    assert all(c["cost_usd"] > 0 for c in tree["children"])
    assert [b["type"] for b in done["record"][1]["content"]] == ["tool_result", "tool_result"]


async def test_refused_delegations_come_back_to_the_model_as_tool_errors(
    bus_backend: Any,
) -> None:
    first = tool_use(
        ("delegate", {"to": "orchestrator", "body": {"cmd": "LOOP"}}),
        ("delegate", {"to": "nobody", "body": {"cmd": "X"}}),
        ("publish_status", {"status": {"release": "planning"}}),
    )
    script = Script(first)
    done = await run_tree(
        bus_backend, script, {"cmd": "PLAN_RELEASE", "respond_format": "STRUCTURED_JSON"}
    )
    results = done["record"][1]["content"]
    assert [r["is_error"] for r in results] == [True, True, False]
    assert "itself" in results[0]["content"]
    assert "not an agent you can reach" in results[1]["content"]
    assert script.turns["data-engineer", 1] == 0
    assert done["reply"]["release"] == "go"


def test_who_an_agent_reaches() -> None:
    limits = Delegation()
    assert reachable(ORCHESTRATOR, CATALOGUE, limits) == ["data-engineer"]
    named = ORCHESTRATOR.model_copy(update={"delegates_to": None})
    assert reachable(named, CATALOGUE, limits) == ["data-engineer"]  # its body names it
    everyone = ORCHESTRATOR.model_copy(update={"delegates_to": ["*"]})
    assert reachable(everyone, CATALOGUE, limits) == ["data-engineer"]  # never itself
    narrowed = Delegation(reach={"orchestrator": []})
    assert reachable(ORCHESTRATOR, CATALOGUE, narrowed) == []


def test_cycles_depth_and_counts_are_refused() -> None:
    limits = Delegation(max_depth=2, max_children_per_turn=1)
    call = {"to": "data-engineer", "body": {"cmd": "X"}}
    reach = ["data-engineer", "orchestrator"]
    assert plan_child(call, me="orchestrator", above=[], reach=reach, limits=limits,
                      already=0).refused is None  # fmt: skip
    cycle = plan_child(call, me="orchestrator", above=["data-engineer"], reach=reach,
                       limits=limits, already=0)  # fmt: skip
    assert cycle.refused is not None
    assert "cycle" in cycle.refused
    deep = plan_child(call, me="orchestrator", above=["a", "b"], reach=reach, limits=limits,
                      already=0)  # fmt: skip
    assert deep.refused is not None
    assert "depth" in deep.refused
    assign = {"body": {"cmd": "ASSIGN", "to": "data-engineer", "task": "check etl"}}
    routed = plan_child(assign, me="orchestrator", above=[], reach=reach, limits=limits,
                        already=0)  # fmt: skip
    assert routed.to == "data-engineer"
    assert routed.refused is None
    many = plan_child(call, me="orchestrator", above=[], reach=reach, limits=limits, already=1)
    assert many.refused is not None
    assert "per turn" in many.refused


def _fan_out(n: int) -> dict[str, Any]:
    return tool_use(
        *(
            ("delegate", {"to": "data-engineer", "body": {"cmd": "PIPELINE_STATUS",
             "component_id": f"c{i}", "respond_format": "STRUCTURED_JSON"}})
            for i in range(n)
        )
    )  # fmt: skip


async def test_a_parent_waiting_for_children_holds_no_slot(bus_backend: Any) -> None:
    """Parent and child on one tier whose cap is 1, and 50 parents fanning out to 3
    children each on a worker running 2 at a time: a parent that waits holds neither
    the tier's slot nor the worker's, so every tree finishes."""
    data = CONFIG.model_dump()
    for tier in data["tiers"].values():
        # one call at a time; token buckets wide enough not to be what binds here
        tier.update(concurrency=1, input_tokens_per_minute=10**8,
                    output_tokens_per_minute=10**8, requests_per_minute=10**6)  # fmt: skip
    one_slot = RuntimeConfig.model_validate(data)
    script = Script(_fan_out(3))
    body = {"cmd": "PLAN_RELEASE", "respond_format": "STRUCTURED_JSON"}
    done = await run_tree(bus_backend, script, body, roots=50, config=one_slot, concurrency=2)
    assert len(done["replies"]) == 50
    assert all(r.get("release") == "go" and len(r["checked"]) == 3 for r in done["replies"])
    assert script.turns["data-engineer", 1] == 150


async def test_a_step_run_again_pays_for_nothing_and_sends_the_same_children() -> None:
    """A worker that dies after recording a turn but before its commit: the step is
    delivered again, finds its turn recorded, makes no second call and suspends with
    the same children (same ids: the bus drops the copies)."""
    api = FakeAPI(lambda request: httpx2.Response(200, json=_fan_out(2)))
    agent = ClaudeAgent(ORCHESTRATOR, client=api.client(), config=CONFIG, catalogue=CATALOGUE)
    env = Envelope.for_body(
        {"cmd": "PLAN_RELEASE"}, sender="tester", recipient="orchestrator", reply_to="inbox.t"
    )
    records: dict[str, list[dict[str, Any]]] = {}
    runs = []
    for _ in range(2):
        with pytest.raises(Suspend) as suspended:
            await agent.handle(env, TestContext(env, records=records))
        runs.append(suspended.value)
    assert len(api.requests) == 1, "the recorded turn is not paid for again"
    first, again = ([c.id for c in run.children] for run in runs)
    assert first == again
    assert runs[0].join == runs[1].join
    assert len(records[env.id]) == 1


async def test_local_tools_continue_as_new_work_and_the_last_turn_may_use_none() -> None:
    """A turn that only publishes a status continues as a new step (admitted like any
    paid call); at max_turns the model may use no tool (``tool_choice: none``), so it
    answers, and the tools are still listed so the cached prefix stays whole."""
    status = tool_use(("publish_status", {"status": {"data_platform": {"etl": "ok"}}}))
    api = FakeAPI(lambda request: httpx2.Response(200, json=status))
    agent = ClaudeAgent(ORCHESTRATOR, client=api.client(), config=CONFIG, catalogue=CATALOGUE)
    env = Envelope.for_body({"cmd": "PLAN_RELEASE"}, sender="t", recipient="orchestrator")
    records: dict[str, list[dict[str, Any]]] = {}
    ctx = TestContext(env, records=records)
    with pytest.raises(Continue) as step:
        await agent.handle(env, ctx)
    assert not isinstance(step.value, Suspend)
    assert step.value.state[H_STEP] == "turn"
    assert ctx.published == [{"data_platform": {"etl": "ok"}}]
    assert [t["role"] for t in records[env.id]] == ["assistant", "user"]
    # the steps that follow (each as the runtime sends it), up to the last allowed turn
    max_turns = CONFIG.complexity_class("medium").max_turns
    state = step.value.state
    while sum(t["role"] == "assistant" for t in records[env.id]) < max_turns - 1:
        nxt = env.evolve(headers=state)
        with pytest.raises(Continue) as step:
            await agent.handle(nxt, TestContext(nxt, records=records))
        state = step.value.state
    api.steps = [httpx2.Response(200, json=message('{"release": "go"}'))]
    last = env.evolve(headers=state)
    body = await agent.handle(last, TestContext(last, records=records))
    assert body is not None
    last_request = json.loads(api.requests[-1].content)
    assert last_request["tool_choice"] == {"type": "none"}, "the last turn answers"
    assert last_request["tools"] == json.loads(api.requests[0].content)["tools"]


async def test_a_loops_invalid_answer_is_repaired_with_what_it_was_based_on() -> None:
    """The repair of a final answer sees the conversation: the delegated answers it
    was built on, then the invalid answer and the request to fix it."""
    api = FakeAPI(lambda request: httpx2.Response(200, json=message("not json")))
    agent = ClaudeAgent(ORCHESTRATOR, client=api.client(), config=CONFIG, catalogue=CATALOGUE)
    env = Envelope.for_body(
        {"cmd": "PLAN_RELEASE", "respond_format": "STRUCTURED_JSON"},
        sender="t", recipient="orchestrator",
    )  # fmt: skip
    records: dict[str, list[dict[str, Any]]] = {}
    with pytest.raises(Continue) as repair:
        await agent.handle(env, TestContext(env, records=records))
    assert repair.value.step == "repair"
    assert repair.value.state[H_CONV] == env.id
    nxt = env.evolve(headers=repair.value.state)
    api.steps = [httpx2.Response(200, json=message('{"release": "go"}'))]
    body = await agent.handle(nxt, TestContext(nxt, records=records))
    assert body is not None
    assert body["release"] == "go"
    sent = json.loads(api.requests[-1].content)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert "invalid" in sent[-1]["content"]
    # the repair names the loop's tools (its history may hold tool calls), none to use
    repaired = json.loads(api.requests[-1].content)
    assert repaired["tools"] == json.loads(api.requests[0].content)["tools"]
    assert repaired["tool_choice"] == {"type": "none"}


async def test_cancelling_a_root_cancels_its_tree(bus_backend: Any) -> None:
    """A CANCEL for the root stops its running children and every later step of
    the tree: the root is answered 'cancelled' and no further model turn is paid."""
    from acp.agents import Agent

    slow_def = AgentDefinition(
        name="slow-checker", description="Takes its time.", model="haiku",
        computational_complexity="low", entrypoint="tests.test_delegation:slow",
    )  # fmt: skip
    catalogue = {"orchestrator": ORCHESTRATOR.model_copy(update={"delegates_to": ["*"]}),
                 "slow-checker": slow_def}  # fmt: skip
    slow = Agent("slow-checker", tier="haiku", complexity="low")
    started = anyio.Event()

    @slow.command("CHECK")
    async def check(body: dict[str, Any], ctx: Any) -> dict[str, Any]:
        started.set()
        await anyio.sleep(60)
        return {"done": True}

    first = tool_use(("delegate", {"to": "slow-checker", "body": {"cmd": "CHECK"}}))
    script = Script(first)
    api = FakeAPI(script)
    lead = ClaudeAgent(catalogue["orchestrator"], client=api.client(), config=CONFIG,
                       catalogue=catalogue)  # fmt: skip
    async with running(bus_backend, [lead, slow], catalogue) as (_, client):
        root = client.command("orchestrator", {"cmd": "PLAN_RELEASE"}, reply=True)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as waiting:
                answer: list[Envelope] = []

                async def wait_for_root() -> None:
                    answer.append(await client.request_envelope(root, timeout=30))

                waiting.start_soon(wait_for_root)
                await started.wait()
                await Client(client.bus, sender="tester").cancel("orchestrator", root.id)
    assert answer[0].body.get("cancelled") is True
    assert script.turns["orchestrator", 3] == 0, "no turn after the cancel"


async def test_acp_trace_prints_the_tree(redis_url: str) -> None:
    first = tool_use(
        ("delegate", {"to": "data-engineer", "body": {"cmd": "PIPELINE_STATUS", "component_id": "etl"}}),
    )  # fmt: skip
    done = await run_tree(
        lambda *a, **kw: RedisBus.from_url(redis_url, *a, **kw), Script(first),
        {"cmd": "PLAN_RELEASE", "respond_format": "STRUCTURED_JSON"},
    )  # fmt: skip
    root = done["tree"].msg_id
    run = [sys.executable, "-m", "acp", "trace", root, "--redis", redis_url]
    cwd = ROOT
    shown = await anyio.run_process([*run, "--json"], cwd=cwd, check=True)
    tree = json.loads(shown.stdout)
    assert [c["agent"] for c in tree["children"]] == ["data-engineer"]
    text = (await anyio.run_process(run, cwd=cwd, check=True)).stdout.decode()
    assert "└─ data-engineer  sonnet" in text, text
    assert "tree cost $" in text


async def test_python_and_claude_agents_delegate_to_each_other(bus_backend: Any) -> None:
    """A Python agent asks a Claude agent and a Python agent with ``ctx.delegate``: it
    is suspended (no slot held), run again once both answered, and its call returns
    the answers; a Claude agent's delegation reaches it the same way."""
    from acp.agents import Agent

    python_defs = {
        name: AgentDefinition(name=name, description=f"The {name}.", model="haiku",
                              computational_complexity="low", entrypoint="tests.agents:x")
        for name in ("release-planner", "checker")
    }  # fmt: skip
    catalogue = {**CATALOGUE, **python_defs}
    planner = Agent("release-planner", tier="haiku", complexity="low")
    checker = Agent("checker", tier="haiku", complexity="low")
    runs: list[str] = []

    @planner.command("PLAN_RELEASE")
    async def plan(body: dict[str, Any], ctx: Any) -> dict[str, Any]:
        runs.append(body["version"])
        answers = await ctx.delegate([
            ("data-engineer", {"cmd": "PIPELINE_STATUS", "component_id": "etl",
                               "respond_format": "STRUCTURED_JSON"}),
            ("checker", {"cmd": "CHECK", "component_id": "ml"}),
            ("release-planner", {"cmd": "PLAN_RELEASE"}),  # itself: refused
        ])  # fmt: skip
        return {"version": body["version"], "answers": answers}

    @checker.command("CHECK")
    async def check(body: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"component_id": body["component_id"], "healthy": True}

    api = FakeAPI(Script(tool_use()))
    engineer = ClaudeAgent(ENGINEER, client=api.client(), config=CONFIG, catalogue=catalogue)
    agents = [planner, checker, engineer]
    async with running(bus_backend, agents, catalogue, concurrency=1) as (_, client):
        with anyio.fail_after(30):
            replies = []
            async with anyio.create_task_group() as requests:

                async def one(version: str) -> None:
                    body = {"cmd": "PLAN_RELEASE", "version": version}
                    replies.append(await client.request("release-planner", body, timeout=30))

                for n in range(5):
                    requests.start_soon(one, f"2.{n}")
    assert len(replies) == 5
    for reply in replies:
        engineer_answer, checker_answer, refused = reply.body["answers"]
        assert engineer_answer["healthy"] is True
        assert checker_answer == {"component_id": "ml", "healthy": True}
        assert "itself" in refused["error"]
    assert sorted(runs) == sorted([f"2.{n}" for n in range(5)] * 2), "run, then run again"


async def test_a_tree_makes_at_most_max_children_per_root_delegations(bus_backend: Any) -> None:
    """Past the tree's limit a delegation is refused as a tool error; when every one
    of a turn's delegations is refused, the next turn goes at once."""
    script = Script(_fan_out(3))
    body = {"cmd": "PLAN_RELEASE", "respond_format": "STRUCTURED_JSON"}
    done = await run_tree(bus_backend, script, body, delegation=Delegation(max_children_per_root=2))
    results = done["record"][1]["content"]
    assert [r["is_error"] for r in results] == [False, False, True]
    assert "at most 2 delegations per request" in results[2]["content"]
    assert script.turns["data-engineer", 1] == 2


class TwoRounds(Script):
    """Delegates twice on the first turn and once more on the second."""

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        messages = json.loads(request.content)["messages"]
        system = " ".join(b["text"] for b in json.loads(request.content)["system"])
        if "orchestrator" in system and len(messages) == 3:
            self.turns["orchestrator", 3] += 1
            return httpx2.Response(200, json=_fan_out(1))
        return super().__call__(request)


async def test_a_turn_whose_delegations_are_all_refused_goes_on_at_once(
    bus_backend: Any,
) -> None:
    script = TwoRounds(_fan_out(2))
    body = {"cmd": "PLAN_RELEASE", "respond_format": "STRUCTURED_JSON"}
    done = await run_tree(bus_backend, script, body, delegation=Delegation(max_children_per_root=2))
    assert script.turns["data-engineer", 1] == 2
    assert [t["role"] for t in done["record"]] == ["assistant", "user"] * 2 + ["assistant"]
    assert done["record"][3]["content"][0]["is_error"] is True
    assert done["reply"]["release"] == "go"


async def test_a_child_the_budget_refuses_comes_back_as_a_tool_error(bus_backend: Any) -> None:
    """A delegation the coordinator refuses on a budget (the data engineer's daily
    limit is below one call's worst case) reaches the model as a tool error naming
    the budget; the parent goes on and answers."""
    data = CONFIG.model_dump()
    data["budgets"] = {"per_agent_daily_usd": {"data-engineer": 0.01}}
    tight = RuntimeConfig.model_validate(data)
    first = tool_use(
        ("delegate", {"to": "data-engineer", "body": {"cmd": "PIPELINE_STATUS", "component_id": "etl"}}),
    )  # fmt: skip
    script = Script(first)
    body = {"cmd": "PLAN_RELEASE", "respond_format": "STRUCTURED_JSON"}
    done = await run_tree(bus_backend, script, body, config=tight)
    (result,) = done["record"][1]["content"]
    assert result["is_error"] is True
    assert "budget" in result["content"]
    assert script.turns["data-engineer", 1] == 0, "refused before any paid call"
    assert done["reply"]["release"] == "go"


async def test_a_paused_turn_goes_on_from_where_it_paused() -> None:
    """``pause_turn``: the next step sends the conversation with the paused turn last,
    and the API carries on from it; nothing is asked twice."""
    paused = message("Searching...", model="claude-opus-5-5", stop_reason="pause_turn")
    api = FakeAPI(httpx2.Response(200, json=paused))
    agent = ClaudeAgent(ORCHESTRATOR, client=api.client(), config=CONFIG, catalogue=CATALOGUE)
    env = Envelope.for_body({"cmd": "PLAN_RELEASE"}, sender="t", recipient="orchestrator")
    records: dict[str, list[dict[str, Any]]] = {}
    with pytest.raises(Continue) as step:
        await agent.handle(env, TestContext(env, records=records))
    api.steps = [httpx2.Response(200, json=message("ship it"))]
    nxt = env.evolve(headers=step.value.state)
    body = await agent.handle(nxt, TestContext(nxt, records=records))
    assert body is not None
    assert body["text"] == "ship it"
    sent = json.loads(api.requests[-1].content)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant"]
    assert sent[-1]["content"][0]["text"] == "Searching..."
    assert len(api.requests) == 2
    # the continuation delivered again after a crash: its recorded turn is reused
    again = await agent.handle(nxt, TestContext(nxt, records=records))
    assert again is not None
    assert again["text"] == "ship it"
    assert len(api.requests) == 2


async def test_a_request_budget_covers_the_whole_tree(bus_backend: Any) -> None:
    """``per_request_usd``: the root's turns and every delegation below it draw on one
    budget; a delegation whose worst case does not fit what the tree has left is
    refused at once (not deferred to tomorrow) and the model reads it as a tool
    error, while the root's own cheap next turn still runs."""
    data = CONFIG.model_dump()
    data["budgets"] = {"per_request_usd": 0.02}
    tight = RuntimeConfig.model_validate(data)
    cheap_lead = ORCHESTRATOR.model_copy(update={"model": "haiku"})
    first = tool_use(
        ("delegate", {"to": "data-engineer", "body": {"cmd": "PIPELINE_STATUS", "component_id": "etl"}}),
        model="claude-haiku-5-5",
    )  # fmt: skip
    script = Script(first)
    api = FakeAPI(script)
    catalogue = {"orchestrator": cheap_lead, "data-engineer": ENGINEER}
    agents = [ClaudeAgent(d, client=api.client(), config=tight, catalogue=catalogue)
              for d in catalogue.values()]  # fmt: skip
    async with running(bus_backend, agents, catalogue, tight) as (worker_bus, client):
        body = {"cmd": "PLAN_RELEASE", "respond_format": "STRUCTURED_JSON"}
        reply = await client.request("orchestrator", body, timeout=30)
        record = [json.loads(t) for t in await worker_bus.read_record(reply.correlation_id or "")]
    assert len(record) == 3, json.dumps(reply.body)  # the root ran both its turns
    (result,) = record[1]["content"]
    assert result["is_error"] is True
    assert "request" in result["content"]
    assert script.turns["data-engineer", 1] == 0
    assert script.turns["orchestrator", 3] == 1
    assert reply.body["release"] == "go"
