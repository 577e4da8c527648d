"""ClaudeAgent through the real anthropic SDK, with ``httpx2.MockTransport`` as the API.

No network and no key: a scripted handler answers ``/v1/messages`` with
realistic message JSON and headers, and records every request so the tests
can check what the agent sent, how often, and after which delays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx2
import pytest
from pydantic import BaseModel, Field

from acp.agents.claude import PREAMBLE, ClaudeAgent, claude_client
from acp.agents.config import RuntimeConfig, Usage
from acp.agents.definition import AgentDefinition
from acp.agents.ratelimits import RateLimitSnapshot, RateLimitWindow
from acp.agents.sdk import Context
from acp.errors import Continue, MissingAPIKey, Rejected, SpendLimitReached
from acp.protocol import Envelope, body_to_text
from acp.protocol.headers import H_NOT_BEFORE, H_STEP
from acp.runtime.worker import Worker
from acp.testing import CapturedLog, TestContext

pytestmark = pytest.mark.anyio

PROMPT = "You are the data engineer. Reply to ACP commands in compact JSON."
HAIKU, SONNET, OPUS = "claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5"


def _tier(model: str, *prices: float) -> dict[str, Any]:
    """A tier at the prices in FACTS.md: input, cache write 5m, cache write 1h, cache read, output."""
    names = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
    return {
        "model": model,
        "price": dict(zip(names, prices, strict=True)),
        "concurrency": 4,
        "requests_per_minute": 1000,
        "input_tokens_per_minute": 100_000,
        "output_tokens_per_minute": 20_000,
    }


def _complexity(max_tokens: int, timeout_s: float, effort: str) -> dict[str, Any]:
    return {
        "expected_input_tokens": 1000,
        "expected_output_tokens": 500,
        "max_tokens": max_tokens,
        "timeout_s": timeout_s,
        "weight": 1,
        "effort": effort,
    }


#: built here rather than loaded so that edits to runtime/acp.toml cannot move the numbers
CONFIG = RuntimeConfig.model_validate(
    {
        "tiers": {
            "haiku": _tier(HAIKU, 0.10, 0.125, 0.20, 0.01, 0.50),
            "sonnet": _tier(SONNET, 2.0, 2.5, 4.0, 0.10, 10.0),
            "opus": _tier(OPUS, 4.0, 5.0, 8.0, 0.20, 20.0),
        },
        "complexity": {
            "low": _complexity(1024, 60, "low"),
            "medium": _complexity(4096, 180, "medium"),
            "high": _complexity(64000, 600, "high"),
        },
    }
)

USAGE = {
    "input_tokens": 1000,
    "output_tokens": 500,
    "cache_creation_input_tokens": 2000,
    "cache_read_input_tokens": 3000,
}
#: USAGE at haiku prices, 5m cache writes: (1000*0.10 + 2000*0.125 + 3000*0.01 + 500*0.50) / 1e6
HAIKU_COST = 0.00063
#: USAGE at sonnet prices, 5m cache writes: (1000*2 + 2000*2.5 + 3000*0.1 + 500*10) / 1e6
SONNET_COST = 0.0123


class PipelineReport(BaseModel):
    component_id: str
    healthy: bool
    quality_score: float = Field(ge=0, le=1)
    notes: list[str] = Field(default_factory=list)


GOOD_REPORT = {"component_id": "etl-7", "healthy": True, "quality_score": 0.97}


# -- the fake API ---------------------------------------------------------------------


def message(
    text: str,
    *,
    model: str = HAIKU,
    stop_reason: str = "end_turn",
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A response body shaped like the real Messages API's."""
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {**USAGE, **(usage or {})},
    }


def api_error(status: int, kind: str, text: str, *, code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": text}
    if code is not None:
        error["details"] = {"error_code": code}
    return {"type": "error", "error": error, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


Step = httpx2.Response | Exception | Callable[[httpx2.Request], httpx2.Response]


class FakeAPI:
    """Answers ``/v1/messages`` from a script (the last step repeats) and records requests."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path != "/v1/messages":
            return httpx2.Response(404, json=api_error(404, "not_found_error", "no such route"))
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx2.Response):
            return step
        return step(request)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]

    def client(self, *, max_retries: int = 0) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key="sk-ant-test",
            base_url="http://anthropic.test",
            max_retries=max_retries,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self)),
        )


def ok(text: str, **kw: Any) -> httpx2.Response:
    headers = kw.pop("headers", {})
    return httpx2.Response(200, json=message(text, **kw), headers=headers)


# -- a minimal Context ----------------------------------------------------------------


class FakeContext(TestContext):
    """A context that fails on anything an agent with no one to delegate to and no
    tools must not touch (it sends nothing, keeps no record, runs no tool)."""

    def __init__(
        self,
        env: Envelope,
        *,
        deadline: float | None = None,
        cancelled: bool = False,
        log: CapturedLog | None = None,
    ) -> None:
        super().__init__(env, cancelled=cancelled, log=log)
        self._deadline = deadline  # only the one a test gives, not the envelope's

    async def send(
        self,
        recipient: str,
        body: Any,
        *,
        wait: bool = False,
        timeout: float = 60.0,
        tier: str | None = None,
    ) -> dict[str, Any] | None:
        raise AssertionError("a Claude agent does not send on its own")

    async def publish(self, body: Any) -> None:
        raise AssertionError("not used")

    async def progress(self, fraction: float, note: str = "") -> None:
        raise AssertionError("not used")

    async def turns(self, conversation: str) -> list[dict[str, Any]]:
        raise AssertionError("an agent with no one to delegate to keeps no record")

    async def add_turn(self, conversation: str, index: int, turn: Any) -> None:
        raise AssertionError("an agent with no one to delegate to keeps no record")

    async def answers(self, join: str) -> dict[str, bytes]:
        raise AssertionError("not used")

    async def keep(self, join: str, part: str, value: bytes) -> None:
        raise AssertionError("not used")

    async def tool_used(self, event: Any) -> None:
        raise AssertionError("not used")

    async def delegate(self, calls: Any) -> list[dict[str, Any]]:
        raise AssertionError("a Claude agent delegates through its tool loop")


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def definition(model: str = "haiku", **fields: Any) -> AgentDefinition:
    return AgentDefinition(
        name="data-engineer",
        description="Builds and watches data pipelines.",
        model=model,
        computational_complexity=fields.pop("computational_complexity", "low"),
        system_prompt=PROMPT,
        **fields,
    )


def command(structured: bool = True, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "cmd": "PIPELINE_STATUS",
        "component_id": "etl-7",
        "data_flow": {"ingestion_rate": "12k/s", "quality_score": 0.97},
    }
    if structured:
        body["respond_format"] = "STRUCTURED_JSON"
    body["hash"] = "data_eng_2024"
    return {**body, **fields}


def envelope(body: dict[str, Any] | None = None, **fields: Any) -> Envelope:
    return Envelope.for_body(
        command() if body is None else body,
        sender="orchestrator",
        recipient="data-engineer",
        **fields,
    )


def make_agent(
    api: FakeAPI, defn: AgentDefinition | None = None, **kw: Any
) -> tuple[ClaudeAgent, FakeSleep]:
    sleep = FakeSleep()
    kw.setdefault("rng", lambda: 0.5)
    agent = ClaudeAgent(defn or definition(), client=api.client(), config=CONFIG, sleep=sleep, **kw)
    return agent, sleep


async def run(
    agent: ClaudeAgent, env: Envelope, *, follow: bool = True, **ctx_kw: Any
) -> tuple[dict[str, Any], FakeContext]:
    """The reply to ``env``, following its continuations (repairs, escalations) as a
    worker sends them on: each step a message of its own, built by the worker's code."""
    ctx = FakeContext(env, **ctx_kw)
    assert isinstance(ctx, Context)
    while True:
        try:
            reply = await agent.handle(env, ctx)
        except Continue as step:
            if not follow:
                raise
            env = Worker._continuation(env, step)
            ctx = FakeContext(env, log=ctx.log, **ctx_kw)
            continue
        assert reply is not None
        return reply, ctx


# -- the request ----------------------------------------------------------------------


async def test_request_shape_for_a_plain_text_reply() -> None:
    api = FakeAPI(ok("All green."))
    agent, _ = make_agent(api)
    body = command(structured=False)
    reply, _ = await run(agent, envelope(body, tenant="acme-corp"))

    assert reply["text"] == "All green."
    (sent,) = api.bodies
    assert sent["model"] == HAIKU
    assert sent["max_tokens"] == 1024  # complexity "low"
    assert sent["system"] == [
        {"type": "text", "text": PREAMBLE},
        {"type": "text", "text": PROMPT, "cache_control": {"type": "ephemeral", "ttl": "5m"}},
    ]
    assert sent["messages"] == [{"role": "user", "content": body_to_text(body)}]
    # an opaque id, nothing readable (no tenant name, no agent name)
    user_id = sent["metadata"]["user_id"]
    assert len(user_id) == 32
    assert "acme" not in user_id
    assert set(sent["metadata"]) == {"user_id"}
    # haiku is not in effort_tiers and nothing is structured: no output_config at all
    assert "output_config" not in sent
    assert "stream" not in sent
    # the SDK was told not to retry, and got the complexity class's timeout
    request = api.requests[0]
    assert request.headers["x-stainless-retry-count"] == "0"
    assert request.extensions["timeout"]["read"] == 60


async def test_one_hour_cache_ttl_is_sent_and_priced() -> None:
    api = FakeAPI(ok("ok"))
    agent, _ = make_agent(api, cache_ttl="1h")
    reply, _ = await run(agent, envelope(command(structured=False)))
    assert api.bodies[0]["system"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    # 2000 cache-write tokens at the 1h price (0.20) instead of 0.125
    assert reply["_acp"]["cost_usd"] == pytest.approx((100 + 2000 * 0.20 + 30 + 250) / 1e6)


@pytest.mark.parametrize(
    ("model", "override", "expected_model", "expected_tier"),
    [
        ("haiku", None, HAIKU, "haiku"),
        ("inherit", None, SONNET, "sonnet"),
        ("inherit", "opus", OPUS, "opus"),
        ("haiku", "opus", OPUS, "opus"),
        ("sonnet", "claude-sonnet-4-6", "claude-sonnet-4-6", "sonnet"),
        # an explicit model id in the definition wins over the message's override
        ("claude-opus-4-8", "haiku", "claude-opus-4-8", "opus"),
    ],
)
async def test_model_per_tier_and_overrides(
    model: str, override: str | None, expected_model: str, expected_tier: str
) -> None:
    api = FakeAPI(lambda req: ok("ok", model=json.loads(req.content)["model"]))
    agent, _ = make_agent(api, definition(model))
    reply, ctx = await run(agent, envelope(command(structured=False), tier=override))
    assert api.bodies[0]["model"] == expected_model
    assert reply["_acp"]["tier"] == expected_tier
    assert reply["_acp"]["model"] == expected_model
    assert ctx.log.named("model_mismatch") == []


async def test_unknown_tier_override_is_an_error_reply_without_a_call() -> None:
    api = FakeAPI(ok("unused"))
    agent, _ = make_agent(api)
    reply, _ = await run(agent, envelope(tier="mythos"))
    assert reply["error"] == "unknown_tier"
    assert "mythos" in reply["detail"]
    assert api.requests == []


async def test_complexity_sets_max_tokens_timeout_and_effort() -> None:
    api = FakeAPI(ok("ok", model=SONNET))
    agent, _ = make_agent(api, definition("sonnet", computational_complexity="high"))
    await run(agent, envelope(command(structured=False)))
    (sent,) = api.bodies
    # 64k output tokens without streaming: the explicit timeout avoids the SDK's ValueError
    assert sent["max_tokens"] == 64000
    assert sent["output_config"] == {"effort": "high"}
    assert api.requests[0].extensions["timeout"]["read"] == 600


async def test_deadline_caps_the_request_timeout() -> None:
    api = FakeAPI(ok("ok"))
    agent, _ = make_agent(api, now=lambda: 1_000.0)
    await run(agent, envelope(command(structured=False)), deadline=1_012.5)
    assert api.requests[0].extensions["timeout"]["read"] == 12.5


async def test_deadline_already_passed_makes_no_call_and_dead_letters_the_message() -> None:
    api = FakeAPI(ok("ok"))
    agent, _ = make_agent(api, now=lambda: 1_000.0)
    with pytest.raises(Rejected) as refused:
        await run(agent, envelope(), deadline=999.0)
    assert refused.value.reason == "deadline"
    assert "1.0s ago" in str(refused.value)
    assert api.requests == []


async def test_cancelled_message_makes_no_call() -> None:
    api = FakeAPI(ok("ok"))
    agent, _ = make_agent(api)
    reply, _ = await run(agent, envelope(), cancelled=True)
    assert reply["error"] == "cancelled"
    assert reply["_acp"]["attempts"] == 0
    assert api.requests == []


async def test_status_updates_are_not_sent_to_the_model() -> None:
    api = FakeAPI(ok("ok"))
    agent, _ = make_agent(api)
    status = envelope({"pipeline_status": {"lag": "2s"}, "hash": "x"})
    assert await agent.handle(status, FakeContext(status)) is None
    assert api.requests == []


# -- structured replies ---------------------------------------------------------------


async def test_structured_json_uses_the_registered_reply_model_schema() -> None:
    api = FakeAPI(ok(json.dumps(GOOD_REPORT)))
    agent, _ = make_agent(api, reply_models={"PIPELINE_STATUS": PipelineReport})
    reply, _ = await run(agent, envelope())

    schema = api.bodies[0]["output_config"]["format"]
    assert schema == {"type": "json_schema", "schema": anthropic.transform_schema(PipelineReport)}
    assert schema["schema"]["additionalProperties"] is False
    assert set(schema["schema"]["properties"]) == set(PipelineReport.model_fields)
    assert {k: v for k, v in reply.items() if k != "_acp"} == GOOD_REPORT


async def test_structured_json_without_a_model_sends_no_schema_and_accepts_fences() -> None:
    """The API wants ``additionalProperties: false`` on every object, so an open
    object cannot be a schema; the reply is still parsed and checked."""
    reply_text = "```json\n" + json.dumps({"status": "ok", "extra": [1, 2]}) + "\n```"
    api = FakeAPI(ok(reply_text))
    agent, _ = make_agent(api)
    reply, _ = await run(agent, envelope())
    assert "output_config" not in api.bodies[0]
    assert reply["status"] == "ok"
    assert reply["extra"] == [1, 2]


async def test_invalid_reply_is_repaired_on_the_second_call() -> None:
    bad = '{"component_id": "etl-7", "healthy": "very", "quality_score": 3}'
    api = FakeAPI(ok(bad), ok(json.dumps(GOOD_REPORT)))
    agent, _ = make_agent(api, reply_models={"PIPELINE_STATUS": PipelineReport})
    reply, ctx = await run(agent, envelope())

    assert reply["component_id"] == "etl-7"
    assert reply["_acp"]["attempts"] == 2
    first, second = api.bodies
    assert second["model"] == HAIKU
    assert second["messages"][:2] == [
        first["messages"][0],
        {"role": "assistant", "content": bad},
    ]
    repair = second["messages"][2]
    assert repair["role"] == "user"
    assert "healthy" in repair["content"]
    assert "quality_score" in repair["content"]
    assert "PipelineReport" in repair["content"]
    # both calls are paid for
    assert reply["_acp"]["usage"]["input_tokens"] == 2000
    assert reply["_acp"]["cost_usd"] == pytest.approx(2 * HAIKU_COST)
    assert ctx.log.named("invalid_reply")[0]["next"] == "repair"


async def test_still_invalid_escalates_one_tier_up() -> None:
    api = FakeAPI(ok("not json"), ok("[1, 2]"), ok(json.dumps(GOOD_REPORT), model=SONNET))
    defn = definition("haiku", allowed_tiers=["haiku", "sonnet"])
    agent, _ = make_agent(api, defn, reply_models={"PIPELINE_STATUS": PipelineReport})
    reply, _ = await run(agent, envelope())

    assert [b["model"] for b in api.bodies] == [HAIKU, HAIKU, SONNET]
    # the higher tier starts from the command alone, with the same schema
    assert api.bodies[2]["messages"] == api.bodies[0]["messages"]
    assert api.bodies[2]["output_config"]["format"] == api.bodies[0]["output_config"]["format"]
    assert api.bodies[2]["output_config"]["effort"] == "low"
    meta = reply["_acp"]
    assert (meta["tier"], meta["model"], meta["attempts"]) == ("sonnet", SONNET, 3)
    assert meta["cost_usd"] == pytest.approx(2 * HAIKU_COST + SONNET_COST)
    assert agent.totals["haiku"]["calls"] == 2
    assert agent.totals["sonnet"]["calls"] == 1
    assert agent.totals["sonnet"]["cost_usd"] == pytest.approx(SONNET_COST)


async def test_inherit_may_escalate_but_a_fixed_tier_may_not() -> None:
    api = FakeAPI(ok("nope", model=SONNET))
    agent, _ = make_agent(api, definition("inherit"))
    reply, _ = await run(agent, envelope())
    assert [b["model"] for b in api.bodies] == [SONNET, SONNET, OPUS]
    assert reply["error"] == "invalid_reply"

    api = FakeAPI(ok("nope"))
    agent, _ = make_agent(api, definition("haiku"))
    reply, _ = await run(agent, envelope())
    assert [b["model"] for b in api.bodies] == [HAIKU, HAIKU]
    assert reply["error"] == "invalid_reply"
    assert reply["raw"] == "nope"
    assert "not valid JSON" in reply["detail"]
    assert reply["_acp"]["attempts"] == 2


async def test_refusal_is_final() -> None:
    api = FakeAPI(ok("", stop_reason="refusal"))
    agent, _ = make_agent(api, definition("inherit"))
    reply, _ = await run(agent, envelope())
    assert reply["error"] == "refusal"
    assert len(api.requests) == 1


# -- usage, cost, model ----------------------------------------------------------------


async def test_usage_and_cost_in_every_reply_and_running_totals() -> None:
    api = FakeAPI(ok(json.dumps(GOOD_REPORT)))
    agent, _ = make_agent(api)
    reply, _ = await run(agent, envelope())
    await run(agent, envelope())

    assert reply["_acp"] == {
        "model": HAIKU,
        "tier": "haiku",
        "usage": USAGE,
        "cost_usd": pytest.approx(HAIKU_COST),
        "attempts": 1,
        "retries": 0,
        "stop_reason": "end_turn",
        "effort": "low",
        "cache_ttl": "5m",
        "elapsed_s": reply["_acp"]["elapsed_s"],
        "call": {
            "model": HAIKU,
            "tier": "haiku",
            "usage": USAGE,
            "cost_usd": pytest.approx(HAIKU_COST),
        },
    }
    totals = agent.totals["haiku"]
    assert totals["calls"] == 2
    assert totals["usage"] == Usage(**USAGE) + Usage(**USAGE)
    assert totals["cost_usd"] == pytest.approx(2 * HAIKU_COST)


async def test_missing_cache_fields_count_as_zero() -> None:
    body = message("ok")
    del body["usage"]["cache_creation_input_tokens"]
    body["usage"]["cache_read_input_tokens"] = None
    api = FakeAPI(httpx2.Response(200, json=body))
    agent, _ = make_agent(api)
    reply, _ = await run(agent, envelope(command(structured=False)))
    assert reply["_acp"]["cost_usd"] == pytest.approx((100 + 250) / 1e6)


@pytest.mark.parametrize(
    ("reported", "warned"),
    [("claude-haiku-4-5", True), ("claude-haiku-5-5-20261001", False), (HAIKU, False)],
)
async def test_model_mismatch_is_logged(reported: str, warned: bool) -> None:
    api = FakeAPI(ok("ok", model=reported))
    agent, _ = make_agent(api)
    reply, ctx = await run(agent, envelope(command(structured=False)))
    expected = [{"requested": HAIKU, "reported": reported, "tier": "haiku"}] if warned else []
    assert ctx.log.named("model_mismatch") == expected
    assert reply["_acp"]["model"] == reported


# -- rate limits ----------------------------------------------------------------------

LIMIT_HEADERS = {
    "anthropic-ratelimit-requests-limit": "4000",
    "anthropic-ratelimit-requests-remaining": "3999",
    "anthropic-ratelimit-requests-reset": "2026-10-01T12:00:01Z",
    "anthropic-ratelimit-input-tokens-limit": "400000",
    "anthropic-ratelimit-input-tokens-remaining": "396000",
    "anthropic-ratelimit-input-tokens-reset": "2026-10-01T12:00:00.5Z",
    "anthropic-ratelimit-output-tokens-limit": "80000",
    "anthropic-ratelimit-output-tokens-remaining": "79000",
    "anthropic-ratelimit-output-tokens-reset": "2026-10-01T12:00:00Z",
    "anthropic-ratelimit-tokens-limit": "480000",
    "anthropic-ratelimit-tokens-remaining": "475000",
    "anthropic-ratelimit-tokens-reset": "2026-10-01T12:00:00Z",
}


async def test_rate_limit_headers_are_captured_and_published() -> None:
    seen: list[tuple[str, RateLimitSnapshot]] = []

    async def publish(tier: str, snapshot: RateLimitSnapshot) -> None:
        seen.append((tier, snapshot))

    api = FakeAPI(ok("ok", headers=LIMIT_HEADERS))
    agent, _ = make_agent(api, on_rate_limits=publish)
    await run(agent, envelope(command(structured=False)))

    ((tier, snap),) = seen
    assert tier == "haiku"
    assert (snap.model, snap.status_code, snap.retry_after) == (HAIKU, 200, None)
    noon = datetime(2026, 10, 1, 12, 0, 0, tzinfo=UTC)
    assert snap.requests == RateLimitWindow(
        limit=4000, remaining=3999, reset=noon.replace(second=1)
    )
    assert snap.input_tokens == RateLimitWindow(
        limit=400000, remaining=396000, reset=noon.replace(microsecond=500000)
    )
    assert snap.output_tokens == RateLimitWindow(limit=80000, remaining=79000, reset=noon)
    assert snap.tokens == RateLimitWindow(limit=480000, remaining=475000, reset=noon)
    assert agent.rate_limits["haiku"] == snap


async def test_responses_without_limit_headers_publish_nothing() -> None:
    seen: list[str] = []
    api = FakeAPI(ok("ok"))
    agent, _ = make_agent(api, on_rate_limits=lambda tier, snap: seen.append(tier))
    await run(agent, envelope(command(structured=False)))
    assert seen == []


async def test_a_failing_rate_limit_observer_does_not_fail_the_call() -> None:
    def broken(tier: str, snapshot: RateLimitSnapshot) -> None:
        raise RuntimeError("coordinator unreachable")

    api = FakeAPI(ok("fine", headers=LIMIT_HEADERS))
    agent, _ = make_agent(api, on_rate_limits=broken)
    reply, ctx = await run(agent, envelope(command(structured=False)))
    assert reply["text"] == "fine"
    assert "coordinator unreachable" in ctx.log.named("rate_limit_callback_failed")[0]["error"]


# -- retries ----------------------------------------------------------------------------


def too_many(retry_after: str | None = None, **headers: str) -> httpx2.Response:
    if retry_after is not None:
        headers["retry-after"] = retry_after
    error = api_error(429, "rate_limit_error", "Number of request tokens has exceeded your limit.")
    return httpx2.Response(
        429,
        json=error,
        headers={**LIMIT_HEADERS, "anthropic-ratelimit-requests-remaining": "0", **headers},
    )


def overloaded() -> httpx2.Response:
    return httpx2.Response(529, json=api_error(529, "overloaded_error", "Overloaded"))


async def test_429_is_retried_honouring_retry_after() -> None:
    seen: list[RateLimitSnapshot] = []
    api = FakeAPI(
        too_many("7"), too_many(**{"retry-after-ms": "1500"}), ok("done", headers=LIMIT_HEADERS)
    )
    agent, sleep = make_agent(api, on_rate_limits=lambda tier, snap: seen.append(snap))
    reply, ctx = await run(agent, envelope(command(structured=False)))

    assert reply["text"] == "done"
    assert sleep.delays == [7.0, 1.5]
    assert len(api.requests) == 3
    assert reply["_acp"]["retries"] == 2
    assert reply["_acp"]["attempts"] == 1
    # the 429s' headers reach the coordinator too
    assert [(s.status_code, s.retry_after) for s in seen] == [(429, 7.0), (429, 1.5), (200, None)]
    assert seen[0].requests == RateLimitWindow(
        limit=4000, remaining=0, reset=datetime(2026, 10, 1, 12, 0, 1, tzinfo=UTC)
    )
    assert [e["attempt"] for e in ctx.log.named("model_retry")] == [1, 2]


async def test_529_is_retried_with_exponential_backoff() -> None:
    api = FakeAPI(overloaded(), overloaded(), ok("done"))
    agent, sleep = make_agent(api, rng=lambda: 0.5)
    reply, _ = await run(agent, envelope(command(structured=False)))
    assert reply["text"] == "done"
    # 1 s then 2 s, each scaled by the jitter factor 0.5 + 0.5 * rng()
    assert sleep.delays == [0.75, 1.5]


async def test_connection_errors_and_timeouts_are_retried() -> None:
    api = FakeAPI(
        httpx2.ConnectError("connection refused"),
        httpx2.ReadTimeout("read timed out"),
        ok("done"),
    )
    agent, sleep = make_agent(api)
    reply, _ = await run(agent, envelope(command(structured=False)))
    assert reply["text"] == "done"
    assert len(sleep.delays) == 2


async def test_exhausted_retries_end_the_dispatch_and_continue_as_new_work() -> None:
    api = FakeAPI(httpx2.Response(500, json=api_error(500, "api_error", "Internal server error")))
    agent, sleep = make_agent(api, max_attempts=3, now=lambda: 1_000.0)
    with pytest.raises(Continue) as caught:
        await run(agent, envelope(), follow=False)
    assert len(api.requests) == 3
    assert len(sleep.delays) == 2
    step = caught.value
    assert step.step == "retry"
    assert step.state[H_STEP] == "retry"
    assert float(step.state[H_NOT_BEFORE]) == pytest.approx(1_000.0 + step.delay)
    assert json.loads(step.state["acp-spent"])["requeues"] == 1


async def test_a_message_requeued_too_often_is_dead_lettered() -> None:
    api = FakeAPI(httpx2.Response(500, json=api_error(500, "api_error", "Internal server error")))
    agent, _ = make_agent(api, max_attempts=1, max_requeues=2)
    with pytest.raises(Rejected) as caught:
        await run(agent, envelope())
    assert caught.value.reason == "unavailable"
    assert len(api.requests) == 3  # the first dispatch and two continuations


async def test_a_long_retry_after_is_not_slept_through() -> None:
    api = FakeAPI(too_many("120"), ok("unused"))
    agent, sleep = make_agent(api)
    with pytest.raises(Continue) as caught:
        await run(agent, envelope(), follow=False)
    assert caught.value.delay == 120
    assert sleep.delays == []
    assert len(api.requests) == 1


async def test_no_retry_that_would_end_after_the_deadline() -> None:
    api = FakeAPI(too_many("30"), ok("unused"))
    agent, sleep = make_agent(api, now=lambda: 1_000.0)
    with pytest.raises(Rejected, match="deadline") as caught:
        await run(agent, envelope(), deadline=1_010.0)
    assert caught.value.reason == "deadline"
    assert sleep.delays == []


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "enforced_spend_limit_reached"),
        (429, "contract_spend_limit_reached"),
        (402, "linked_organization_spend_limit_reached"),
    ],
)
async def test_spend_limit_is_not_retried(status: int, code: str) -> None:
    error = api_error(status, "rate_limit_error", "Monthly spend limit reached.", code=code)
    api = FakeAPI(httpx2.Response(status, json=error))
    agent, sleep = make_agent(api, definition("sonnet"))
    with pytest.raises(SpendLimitReached) as caught:
        await run(agent, envelope())
    assert (caught.value.tier, caught.value.model, caught.value.error_code) == (
        "sonnet",
        SONNET,
        code,
    )
    # a Rejected: the processor dead-letters it with this reason instead of retrying
    assert isinstance(caught.value, Rejected)
    assert caught.value.reason == "spend_limit"
    assert len(api.requests) == 1
    assert sleep.delays == []


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
    ],
)
async def test_client_errors_become_error_replies_without_retry(status: int, kind: str) -> None:
    api = FakeAPI(httpx2.Response(status, json=api_error(status, kind, "messages: field required")))
    agent, sleep = make_agent(api)
    reply, _ = await run(agent, envelope())
    assert reply["error"] == kind
    assert reply["status"] == status
    assert reply["detail"] == "messages: field required"
    assert reply["_acp"]["attempts"] == 0
    assert len(api.requests) == 1
    assert sleep.delays == []


async def test_x_should_retry_false_is_obeyed() -> None:
    response = overloaded()
    response.headers["x-should-retry"] = "false"
    api = FakeAPI(response)
    agent, sleep = make_agent(api)
    reply, _ = await run(agent, envelope())
    assert (reply["error"], reply["status"]) == ("overloaded_error", 529)
    assert sleep.delays == []


# -- the client -------------------------------------------------------------------------


def test_missing_api_key_names_the_variable() -> None:
    with pytest.raises(MissingAPIKey, match="ANTHROPIC_API_KEY") as caught:
        claude_client(env={})
    assert caught.value.variable == "ANTHROPIC_API_KEY"


def test_client_reads_the_environment_and_never_retries() -> None:
    client = claude_client(
        env={"ANTHROPIC_API_KEY": "sk-ant-env", "ANTHROPIC_BASE_URL": "http://proxy.test"}
    )
    assert client.api_key == "sk-ant-env"
    assert str(client.base_url).startswith("http://proxy.test")
    assert client.max_retries == 0
    assert claude_client(api_key="sk-ant-arg", env={}).api_key == "sk-ant-arg"


async def test_a_client_that_retries_is_given_no_retries() -> None:
    api = FakeAPI(overloaded())
    agent = ClaudeAgent(
        definition(), client=api.client(max_retries=5), config=CONFIG, max_attempts=1
    )
    assert agent.client.max_retries == 0
    with pytest.raises(Continue):
        await agent.handle(envelope(), FakeContext(envelope()))
    assert len(api.requests) == 1


# -- structure from the definition ------------------------------------------------------

SYNTHESIST = """
## Agent Coordination Protocol (ACP)

```json
{"cmd": "SYNTHESIZE", "input_report_id": "r1", "respond_format": "IDEATION_REPORT_v1"}
```

Response format:
```json
{"status": "complete", "frames_generated": 3, "coverage_achieved": 1.0,
 "validation": {"schema_valid": true}, "dominant_axis": "cost", "hash": "syn_1"}
```
"""


def synthesist(**extra: Any) -> AgentDefinition:
    from acp.agents.loader import load_definition

    return load_definition(_write_definition(SYNTHESIST, **extra))


def _write_definition(body: str, **extra: Any) -> Any:
    import tempfile
    from pathlib import Path

    import yaml

    front = {
        "name": "synthesist",
        "description": "Synthesizes ideas into frames.",
        "model": "sonnet",
        "computational_complexity": "medium",
        **extra,
    }
    path = Path(tempfile.mkdtemp()) / "synthesist.md"
    path.write_text(f"---\n{yaml.safe_dump(front)}---\n\nYou synthesize.\n{body}")
    return path


async def test_a_named_structured_format_gets_the_declared_schema_and_a_parsed_reply() -> None:
    answer = {
        "status": "complete", "frames_generated": 3, "coverage_achieved": 1.0,
        "validation": {"schema_valid": True}, "dominant_axis": "cost",
    }  # fmt: skip
    api = FakeAPI(ok(json.dumps(answer)))
    agent, _ = make_agent(api, synthesist())
    body = {"cmd": "SYNTHESIZE", "input_report_id": "r9", "respond_format": "IDEATION_REPORT_v1"}
    reply, _ = await run(agent, envelope(body))
    assert {k: v for k, v in reply.items() if k != "_acp"} == answer  # parsed, not {"text": ...}
    schema = api.bodies[0]["output_config"]["format"]["schema"]
    assert api.bodies[0]["output_config"]["format"]["type"] == "json_schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["properties"]["frames_generated"] == {"type": "integer"}
    assert schema["properties"]["validation"]["properties"]["schema_valid"] == {"type": "boolean"}
    assert "hash" not in schema["properties"]  # the runtime's tag, not the model's
    assert set(schema["required"]) == set(answer)


async def test_an_output_contract_adds_required_fields_and_a_missing_one_is_repaired() -> None:
    defn = synthesist(
        output_contract={"type": "IDEATION_REPORT", "required_fields": [
            "frames (3-5 items)", "synthesis_rationale", "cross_frame_synergies (optional)"]},
    )  # fmt: skip
    partial = {"status": "complete", "frames_generated": 3, "coverage_achieved": 1.0,
               "validation": {"schema_valid": True}, "dominant_axis": "cost"}  # fmt: skip
    whole = {**partial, "frames": "a, b, c", "synthesis_rationale": "by cost"}
    api = FakeAPI(ok(json.dumps(partial)), ok(json.dumps(whole)))
    agent, _ = make_agent(api, defn)
    body = {"cmd": "SYNTHESIZE", "respond_format": "IDEATION_REPORT_v1"}
    reply, _ = await run(agent, envelope(body))
    assert reply["synthesis_rationale"] == "by cost"
    schema = api.bodies[0]["output_config"]["format"]["schema"]
    assert {"frames", "synthesis_rationale"} <= set(schema["required"])
    assert "cross_frame_synergies" in schema["properties"]
    assert "cross_frame_synergies" not in schema["required"]
    repair = api.bodies[1]["messages"][-1]["content"]
    assert "missing required field(s): frames, synthesis_rationale" in repair


async def test_plain_formats_and_no_format_get_text() -> None:
    api = FakeAPI(ok("Three frames."), ok("Still three."))
    agent, _ = make_agent(api, synthesist())
    for body in (
        {"cmd": "SYNTHESIZE", "respond_format": "MARKDOWN"},
        {"cmd": "SYNTHESIZE"},
    ):
        reply, _ = await run(agent, envelope(body))
        assert reply["text"] in ("Three frames.", "Still three.")
    assert all("output_config" not in sent or "format" not in sent["output_config"]
               for sent in api.bodies)  # fmt: skip


def test_reply_examples_follow_the_command_they_answer() -> None:
    from acp.agents import load_catalogue
    from acp.agents.replies import reply_examples, reply_schema
    from acp.catalogue import shipped_agents

    catalogue = load_catalogue(shipped_agents())
    triage = catalogue.get("triage-clerk")
    (example,) = reply_examples(triage)["TRIAGE"]
    assert "route_to" in example
    schema = reply_schema(triage, "TRIAGE")
    assert schema is not None
    assert {"category", "urgency", "route_to"} <= set(schema["required"])
    # status updates and workflows are not replies
    assert reply_schema(catalogue.get("pipeline-monitor"), "PIPELINE_STATUS") is None
