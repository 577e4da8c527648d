"""A Claude-backed agent: an agent definition plus the anthropic SDK gives ACP replies.

::

    client = claude_client()  # ANTHROPIC_API_KEY, max_retries=0
    agent = ClaudeAgent(definition, client=client, config=load_config(),
                        reply_models={"PIPELINE_STATUS": PipelineReport})

The system prompt is a short runtime preamble (what ACP messages are, how to
answer them) followed by the definition's body, cached together with
``cache_control``; the ACP command goes in as compact JSON. A ``respond_format``
that names a structured format (``STRUCTURED_JSON``, ``IDEATION_REPORT_v1``, any
but the plain-text ones) asks for a JSON object, constrained by a schema when
one is known: a registered reply model or schema, else what the definition
declares (``acp.agents.replies``). Structured replies are checked before
anything acts on them: one repair round trip, then one tier up (where the
definition allows it), then an ``invalid_reply`` error body rather than an
exception, because a bad answer is an answer the sender should see.

The runtime owns retries, so the SDK client never retries (``max_retries=0``):
429, 529, other 5xx and connection errors are retried here with backoff that
honours ``retry-after``, and handed back to the bus as ``RetryableError`` when
they persist; a spend limit raises ``SpendLimitReached`` (retrying cannot help);
other 4xx become error reply bodies. Every reply body carries ``_acp`` with the
model, tier, token usage and cost, so budgets can be enforced downstream.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast, get_args

import anthropic
import anyio
from anthropic.types import (
    Message,
    MessageParam,
    MetadataParam,
    OutputConfigParam,
    TextBlock,
    TextBlockParam,
    ToolChoiceParam,
    ToolUnionParam,
)
from pydantic import BaseModel, ValidationError

from acp.agents.config import ComplexityClass, RuntimeConfig, TierSpec, Usage
from acp.agents.definition import MODEL_ALIASES, AgentDefinition, tier_of
from acp.agents.delegation import (
    DELEGATE,
    PUBLISH_STATUS,
    ancestry,
    answer_bytes,
    child_command,
    delegate_tool,
    plan_child,
    reachable,
    read_answer,
    status_tool,
)
from acp.agents.prompt import PREAMBLE
from acp.agents.ratelimits import RateLimitCallback, RateLimitSnapshot
from acp.agents.ratelimits import retry_after as read_retry_after
from acp.agents.replies import is_structured, reply_schema
from acp.agents.sdk import AgentBase, Context
from acp.agents.toolbox import Toolbox
from acp.agents.tools import FunctionTool, Tool
from acp.errors import (
    ConfigError,
    Continue,
    MissingAPIKey,
    Rejected,
    SpendLimitReached,
    Suspend,
    ToolError,
)
from acp.protocol.body import MessageKind
from acp.protocol.envelope import Envelope
from acp.protocol.headers import (
    H_CONV,
    H_NOT_BEFORE,
    H_SPENT,
    H_STEP,
    H_TURN,
    H_TURNS,
)
from acp.protocol.text import body_to_text

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "STRUCTURED_JSON",
    "CacheTTL",
    "ClaudeAgent",
    "TierTotals",
    "claude_client",
]

CacheTTL = Literal["5m", "1h"]
#: the ``respond_format`` that asks for a JSON object reply
STRUCTURED_JSON = "STRUCTURED_JSON"
#: the SDK's own default (10 min): the per-call timeout comes from the complexity class
DEFAULT_CLIENT_TIMEOUT = 600.0

_Effort = Literal["low", "medium", "high", "xhigh", "max"]
_EFFORTS: frozenset[str] = frozenset(get_args(_Effort))
#: bodies worth a paid model call; status updates and events to a Claude agent are not
_MODEL_KINDS = frozenset({MessageKind.COMMAND, MessageKind.WORKFLOW})
_LIMIT_KINDS = ("requests", "input_tokens", "output_tokens", "tokens")
#: the SDK raises these for spend limits: retrying cannot help (``anthropic/_error_classes.py``)
_SPEND_LIMIT_ERRORS: tuple[type[anthropic.APIStatusError], ...] = (
    anthropic.EnforcedSpendLimitReachedError,
    anthropic.ContractSpendLimitReachedError,
    anthropic.PaymentRequiredError,  # includes LinkedOrganizationSpendLimitReachedError
)
_RETRYABLE_STATUS = frozenset({408, 409, 429})


# -- the client -----------------------------------------------------------------------


def claude_client(
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = DEFAULT_CLIENT_TIMEOUT,
    *,
    env: Mapping[str, str] | None = None,
    http_client: httpx2.AsyncClient | None = None,
) -> anthropic.AsyncAnthropic:
    """An async client that never retries by itself: the runtime owns retries.

    The key comes from ``api_key`` or ``ANTHROPIC_API_KEY``, the URL from
    ``base_url`` or ``ANTHROPIC_BASE_URL``. Without a key this raises
    ``MissingAPIKey`` at start-up instead of a 401 on the first message.
    """
    env = os.environ if env is None else env
    key = api_key or env.get("ANTHROPIC_API_KEY")
    if not key:
        raise MissingAPIKey(
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_API_KEY is not set: export it (or pass api_key=) to run Claude-backed agents",
        )
    return anthropic.AsyncAnthropic(
        api_key=key,
        base_url=base_url or env.get("ANTHROPIC_BASE_URL") or None,
        timeout=timeout,
        max_retries=0,
        http_client=http_client,
    )


# -- bookkeeping ----------------------------------------------------------------------


class TierTotals(TypedDict):
    """Running totals for one tier on one agent."""

    usage: Usage
    cost_usd: float
    calls: int


@dataclass(frozen=True)
class _Plan:
    """Where one model call goes and how big it may be."""

    tier: str
    model: str
    spec: TierSpec
    complexity: ComplexityClass
    structured: bool
    reply_model: type[BaseModel] | None
    #: top-level fields a structured reply must have (from a schema without a model)
    required: tuple[str, ...]
    #: the reply model's schema as the API accepts it (``anthropic.transform_schema``)
    schema: dict[str, Any] | None


@dataclass(frozen=True)
class _Answer:
    """One answered model call."""

    plan: _Plan
    text: str
    reported_model: str
    stop_reason: str | None
    usage: Usage
    cost_usd: float
    #: the response's content blocks, as the API takes them back in a later turn
    content: tuple[dict[str, Any], ...] = ()


@dataclass
class _Ledger:
    """What one ``handle`` spent (at most one answered call) and what the chain of
    continuations before it spent, for the reply's ``_acp`` block."""

    plan: _Plan | None = None
    answers: list[_Answer] = field(default_factory=list)
    retries: int = 0
    started: float = 0.0
    #: the earlier calls of this chain, from the message's ``acp-spent`` header
    prior: dict[str, Any] = field(default_factory=dict)

    def call(self) -> dict[str, Any]:
        """This message's own call: what its dispatch settles against."""
        last = self.answers[-1] if self.answers else None
        plan = last.plan if last else self.plan
        usage = sum((a.usage for a in self.answers), Usage())
        return {
            "model": last.reported_model if last else (plan.model if plan else None),
            "tier": plan.tier if plan else None,
            "usage": usage.model_dump(),
            "cost_usd": round(sum(a.cost_usd for a in self.answers), 9),
        }

    def spent(self) -> dict[str, Any]:
        """The chain so far, this call included: the next continuation's ``acp-spent``."""
        call = self.call()
        prior_usage = Usage(**self.prior.get("usage", {}))
        return {
            "usage": (prior_usage + Usage(**call["usage"])).model_dump(),
            "cost_usd": round(float(self.prior.get("cost_usd", 0.0)) + call["cost_usd"], 9),
            "calls": int(self.prior.get("calls", 0)) + len(self.answers),
            "retries": int(self.prior.get("retries", 0)) + self.retries,
            "requeues": int(self.prior.get("requeues", 0)),
        }

    def meta(self, *, cache_ttl: str, elapsed: float) -> dict[str, Any]:
        last = self.answers[-1] if self.answers else None
        plan = last.plan if last else self.plan
        chain = self.spent()
        return {
            "model": last.reported_model if last else (plan.model if plan else None),
            "tier": plan.tier if plan else None,
            "usage": chain["usage"],
            "cost_usd": chain["cost_usd"],
            "attempts": chain["calls"],
            "retries": chain["retries"],
            "stop_reason": last.stop_reason if last else None,
            "effort": plan.complexity.effort if plan else None,
            "cache_ttl": cache_ttl,
            "elapsed_s": round(elapsed, 3),
            "call": self.call(),
        }


class _Stop(Exception):
    """Ends a ``handle`` early with an error reply body (no exception escapes)."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("error"))
        self.body = body


# -- the agent ------------------------------------------------------------------------


class ClaudeAgent(AgentBase):
    """An agent whose handler is a Claude model prompted by its definition."""

    def __init__(
        self,
        definition: AgentDefinition,
        *,
        client: anthropic.AsyncAnthropic,
        config: RuntimeConfig,
        cache_ttl: CacheTTL = "5m",
        reply_models: Mapping[str, type[BaseModel]] | None = None,
        reply_schemas: Mapping[str, Mapping[str, Any]] | None = None,
        derive_schemas: bool = True,
        max_attempts: int = 4,
        max_requeues: int = 5,
        on_rate_limits: RateLimitCallback | None = None,
        default_tier: str = "sonnet",
        effort_tiers: Collection[str] = ("sonnet", "opus"),
        max_retry_after: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], float] | None = None,
        rng: Callable[[], float] = random.random,
        catalogue: Mapping[str, AgentDefinition] | None = None,
        tools: Sequence[FunctionTool] = (),
        toolbox: Toolbox | None = None,
    ) -> None:
        """``reply_models`` (pydantic) or ``reply_schemas`` (JSON schema) per command
        shape structured replies; without one, ``derive_schemas`` reads the shape the
        definition declares. ``default_tier`` is what ``model: inherit`` runs on; ``effort_tiers`` are the
        tiers whose models accept ``output_config.effort`` (sending it to one that
        does not is a 400). ``now`` is wall time (deadlines are epoch seconds);
        ``clock`` times calls; ``sleep`` and ``rng`` are there for tests. ``now`` is the
        clock deadlines are judged by, by default the context's (the server's).
        ``catalogue`` (the definitions by name) is who this agent may delegate to,
        narrowed by its ``delegates_to`` and the config's ``[delegation]``: with
        someone to reach, it runs an agent loop with a ``delegate`` and a
        ``publish_status`` tool; ``tools`` (Python functions, :func:`acp.agents.tool`)
        are offered in the same loop, always, and so is what the ``toolbox`` (the
        deployment's ``[tools]``, one per worker) gives the definition's ``tools:``."""
        if cache_ttl not in get_args(CacheTTL):
            raise ConfigError(f"cache_ttl must be '5m' or '1h'; got {cache_ttl!r}")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1; got {max_attempts}")
        self.definition = definition
        self.name = definition.name
        self.complexity = definition.computational_complexity
        self.config = config
        # one retry policy: a client built elsewhere may retry on its own
        self.client = client if client.max_retries == 0 else client.with_options(max_retries=0)
        self.cache_ttl: CacheTTL = cache_ttl
        self.reply_models: dict[str, type[BaseModel]] = dict(reply_models or {})
        self.max_attempts = max_attempts
        self.max_requeues = max_requeues
        self.on_rate_limits = on_rate_limits
        self.default_tier = default_tier
        self.effort_tiers = frozenset(effort_tiers)
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._rng = rng
        #: running usage and cost per tier, across every message this agent handled
        self.totals: dict[str, TierTotals] = {}
        #: the latest limits the API reported, per tier
        self.rate_limits: dict[str, RateLimitSnapshot] = {}
        # fail at start-up, not on the first message: tiers, complexity, schemas
        self.tier, _ = self._resolve(None)
        config.complexity_class(self.complexity)
        #: reply schemas the caller registered, as the API accepts them
        self._schemas: dict[str, dict[str, Any]] = {
            cmd: anthropic.transform_schema(m) for cmd, m in self.reply_models.items()
        }
        for cmd, schema in (reply_schemas or {}).items():
            self._schemas.setdefault(cmd, anthropic.transform_schema(dict(schema)))
        self.derive_schemas = derive_schemas
        #: the schemas the definition declares, by command, read when first needed
        self._declared: dict[str, dict[str, Any] | None] = {}
        self._system = self._system_blocks()
        #: the agents this one may delegate to, and the tools that offers
        self.reach = reachable(definition, catalogue or {}, config.delegation)
        self.toolbox = toolbox if toolbox is not None else Toolbox(config.tools)
        self.toolbox.redactor.add([self.client.api_key])
        #: what the definition gets of the toolbox (MCP tools listed on first use)
        self.tool_plan = self.toolbox.plan(definition)
        self.server_tools_usd = self.toolbox.config.server_tools_usd(
            definition.tools, definition.disallowed_tools
        )
        self._functions = {t.name: t for t in tools}
        taken = {*self._functions, *self.tool_plan.names()} & {DELEGATE, PUBLISH_STATUS}
        if taken or len(self._functions) < len(tools):
            raise ConfigError(f"tool names must be unique and not {DELEGATE} or {PUBLISH_STATUS}")
        self._builtin: list[ToolUnionParam] = (
            [delegate_tool([catalogue[n] for n in self.reach]), status_tool()]
            if catalogue and self.reach
            else []
        )
        #: runs the agent loop (rather than one call) when it has any tool at all
        self._looping = bool(
            self._builtin or self._functions or self.tool_plan.local
            or self.tool_plan.server or self.tool_plan.mcp
        )  # fmt: skip
        self._offer: tuple[list[ToolUnionParam], dict[str, Tool]] | None = None

    kind = "claude"
    once_per_message = True

    def __repr__(self) -> str:
        return f"ClaudeAgent({self.name!r}, tier={self.tier!r}, model={self.definition.model!r})"

    def lifespan(self) -> AbstractAsyncContextManager[Any]:
        return self.toolbox.lifespan()

    def watch_rate_limits(self, callback: RateLimitCallback) -> None:
        if self.on_rate_limits is None:  # one set by the caller wins
            self.on_rate_limits = callback

    async def handle(self, env: Envelope, ctx: Context) -> dict[str, Any] | None:
        if env.kind not in _MODEL_KINDS:
            return None
        ledger = _Ledger(started=self._clock(), prior=_json_header(env, H_SPENT, {}))
        try:
            body = await self._answer(env, ctx, ledger)
        except _Stop as stop:
            body = stop.body
        except Continue as step:
            step.meta = ledger.meta(
                cache_ttl=self.cache_ttl, elapsed=self._clock() - ledger.started
            )
            step.state[H_SPENT] = json.dumps(ledger.spent(), separators=(",", ":"))
            raise
        meta = ledger.meta(cache_ttl=self.cache_ttl, elapsed=self._clock() - ledger.started)
        return {**body, "_acp": meta}

    # -- the conversation ---------------------------------------------------------------

    async def _answer(self, env: Envelope, ctx: Context, ledger: _Ledger) -> dict[str, Any]:
        """One call, checked: the reply body, an error body, or the next step.

        An invalid answer is repaired once at the same tier, then asked once more
        one tier up (where the definition allows it), each a ``Continue``: a new
        message the coordinator admits like any work, never a second call inside
        this dispatch (which would run past the tier's cap and the budget)."""
        step = env.headers.get(H_STEP)
        plan = ledger.plan = self._plan(env)
        first: list[MessageParam] = [{"role": "user", "content": body_to_text(env.body)}]
        turns: list[MessageParam] = _json_header(env, H_TURNS, []) if step == "repair" else []
        if self._looping and step not in ("repair", "escalate"):
            answer = await self._loop_turn(plan, first, env, ctx, ledger)
        else:
            if self._looping and (conversation := env.headers.get(H_CONV)):
                # a loop's final answer repaired or escalated: with what it was based
                # on (the recorded turns end with the answer itself)
                history = [_api_turn(t) for t in await ctx.turns(conversation)]
                if history and history[-1]["role"] == "assistant":
                    # repaired: after the answer; escalated: asked again in its place
                    history = history if step == "repair" else history[:-1]
                    turns = turns[1:] if step == "repair" else turns
                first = [*first, *history]
            # a loop's history holds tool calls: the request names the same tools (the
            # API wants them defined, and the cached prefix stays whole), none to use
            tools = (await self._offered())[0] if self._looping else None
            none: ToolChoiceParam | None = {"type": "none"} if tools else None
            answer = await self._call(plan, [*first, *turns], env, ctx, ledger, tools=tools,
                                      tool_choice=none)  # fmt: skip
        if not plan.structured:
            _refuse_if_refused(answer)
            return {"text": answer.text}
        reply, problem = _check(answer)
        if reply is not None:
            return reply
        # a loop's answer is repaired with its conversation
        loop = {H_CONV: env.headers.get(H_CONV) or env.id} if self._looping else {}
        if step in (None, "retry") and not turns:
            ctx.log.warning("invalid_reply", tier=plan.tier, problem=problem, next="repair")
            repair = _repair_turns(answer.text, problem, plan)
            raise Continue(
                "repair",
                tier=plan.tier,
                state={**loop, H_STEP: "repair", H_TURNS: _dumps(repair)},
            )
        higher = self._escalation(plan) if step != "escalate" else None
        if higher is not None:
            ctx.log.warning("invalid_reply", tier=plan.tier, problem=problem, next=higher.tier)
            raise Continue(
                "escalate", tier=higher.tier, state={**loop, H_STEP: "escalate", H_TURNS: "[]"}
            )
        return {"error": "invalid_reply", "detail": problem, "raw": answer.text}

    # -- the agent loop: one model turn per dispatch --------------------------------------

    async def _loop_turn(
        self,
        plan: _Plan,
        first: list[MessageParam],
        env: Envelope,
        ctx: Context,
        ledger: _Ledger,
    ) -> _Answer:
        """One turn of the tool-use loop: the final answer, or the next step raised.

        The conversation is a record of turns (``ctx.turns``), appended to, never
        rewritten; a turn is recorded before it is acted on, so a step run again
        after a crash finds its model turn there and does not pay for it twice.
        Tool calls end the dispatch: delegations leave as ordinary commands and
        the step suspends (``Suspend``) until their replies are in; local tools
        run here and the next turn is new work (``Continue``), admitted like any."""
        conversation = env.headers.get(H_CONV) or env.id
        params, local = await self._offered()
        #: where this step's model turn goes in the record (the step before said)
        slot = int(env.headers.get(H_TURN) or 0)
        history = await ctx.turns(conversation)
        if env.headers.get(H_STEP) == "resume" and len(history) == slot - 1:
            # the answers the last turn's tool calls waited for: the next user turn
            answers = await ctx.answers(_join_name(conversation, slot - 1))
            results = _tool_results(history[-1], answers)
            await ctx.add_turn(conversation, slot - 1, {"role": "user", "content": results})
            history.append({"role": "user", "content": results})
        if len(history) > slot:
            # recorded by a run of this step that did not get to commit: not paid again
            history = history[: slot + 1]
            answer = _recorded(plan, history[slot])
        else:
            turn = sum(1 for t in history if t["role"] == "assistant")
            last_turn = turn + 1 >= plan.complexity.max_turns
            messages = [*first, *(_api_turn(t) for t in history)]
            # the last turn is offered the same tools (the cached prefix stays whole)
            # but may not use them, so it answers
            answer = await self._call(
                plan, messages, env, ctx, ledger, tools=params,
                tool_choice={"type": "none"} if last_turn else None,
            )  # fmt: skip
            entry: dict[str, Any] = {"role": "assistant", "content": list(answer.content)}
            entry.update(stop=answer.stop_reason, agent=self.name, tier=plan.tier)
            await ctx.add_turn(conversation, slot, entry)
            history.append(entry)
        if answer.stop_reason == "pause_turn":  # a server tool paused: the API goes on
            raise Continue("turn", tier=plan.tier, state=_next(conversation, "turn", slot + 1))
        calls = [b for b in answer.content if b.get("type") == "tool_use"]
        if answer.stop_reason != "tool_use" or not calls:
            return answer
        join = _join_name(conversation, slot + 1)
        done, children = await self._run_tools(calls, env, ctx, join, local)
        if children:
            state = _next(conversation, "resume", slot + 2)
            raise Suspend("resume", join=join, children=children, done=done, state=state)
        results = _tool_results(history[slot], done)
        await ctx.add_turn(conversation, slot + 1, {"role": "user", "content": results})
        raise Continue("turn", tier=plan.tier, state=_next(conversation, "turn", slot + 2))

    async def _offered(self) -> tuple[list[ToolUnionParam], dict[str, Tool]]:
        """The tools offered (as the API takes them) and those run here, by name: the
        same list every turn, its last entry marked for the prompt cache (tools come
        first in the cached prefix). Kept once every MCP server wanted has answered."""
        if self._offer is not None:
            return self._offer
        toolset = await self.toolbox.toolset(self.tool_plan)
        local: dict[str, Tool] = {**toolset.local, **self._functions}
        params = [*self._builtin, *(t.param() for t in local.values()), *toolset.server]
        if params:
            params[-1] = cast(
                ToolUnionParam,
                {**params[-1], "cache_control": {"type": "ephemeral", "ttl": self.cache_ttl}},
            )
        if not toolset.failed:
            self._offer = (params, local)
        return params, local

    async def _run_tools(
        self,
        calls: list[dict[str, Any]],
        env: Envelope,
        ctx: Context,
        join: str,
        local: Mapping[str, Tool],
    ) -> tuple[dict[str, bytes], list[Envelope]]:
        """The answers of the tools that run here (by call id), and the commands the
        ``delegate`` calls become (ids derived from the call: a re-run sends the same)."""
        done: dict[str, bytes] = {}
        children: list[Envelope] = []
        above = ancestry(env.headers)
        # what an earlier run of this step kept of its tools' calls: read once a turn
        kept = (
            await ctx.answers(f"{join}.tools") if any(c.get("name") in local for c in calls) else {}
        )
        for call in calls:
            call_id, name, args = call["id"], str(call.get("name")), call.get("input") or {}
            if name == DELEGATE:
                child = plan_child(args, me=self.name, above=above, reach=self.reach,
                                   limits=self.config.delegation, already=len(children))  # fmt: skip
                if child.refused:
                    ctx.log.warning("delegation_refused", to=child.to, reason=child.refused)
                    done[call_id] = answer_bytes(MessageKind.ERROR, {"error": child.refused})
                    continue
                children.append(child_command(env, self.name, child.to, child.body, join, call_id))
            elif name == PUBLISH_STATUS:
                status = args.get("status")
                if isinstance(status, dict):
                    await ctx.publish(status)
                    done[call_id] = answer_bytes(MessageKind.REPLY, {"published": True})
                else:
                    done[call_id] = answer_bytes(
                        MessageKind.ERROR, {"error": "status must be a JSON object"}
                    )
            elif name in local:
                done[call_id] = await self._run_tool(local[name], args, call_id, join, kept, ctx)
            else:
                done[call_id] = answer_bytes(MessageKind.ERROR, {"error": f"no tool {name!r}"})
        return done, children

    async def _run_tool(
        self,
        tool: Tool,
        args: dict[str, Any],
        call_id: str,
        join: str,
        kept: Mapping[str, bytes],
        ctx: Context,
    ) -> bytes:
        """A tool's answer: recorded before the next turn, so a step run again after a
        crash reuses it; one not idempotent that was interrupted before its answer was
        recorded is not run again but said to be unknown. Secrets are scrubbed from
        the arguments and the output, the output is cut at its cap, and the call is
        reported (``ctx.tool_used``: agent, tool, duration, outcome)."""
        kept_at = f"{join}.tools"
        if call_id in kept:
            return kept[call_id]
        started = f"started.{call_id}"
        if not tool.idempotent:
            if started in kept:
                await self._report(ctx, kept_at, call_id, tool.name, 0.0, "unknown")
                return answer_bytes(MessageKind.ERROR, {"error": (
                    f"outcome unknown: {tool.name} was running when its worker "
                    "stopped, and it is not run twice; check its effect before retrying"
                )})  # fmt: skip
            await ctx.keep(kept_at, started, b"1")
        redactor = self.toolbox.redactor
        began = self._clock()
        try:
            ok, result = await tool.run(redactor.scrub(args))
        except ToolError as exc:  # refused (a path out of the workspace...): said plainly
            ok, result = False, str(exc)
        except Exception as exc:  # the tool's own failure: the model reads it
            ok, result = False, f"{type(exc).__name__}: {exc}"
        elapsed = self._clock() - began
        body = _cap(redactor.scrub(result), ok, self.config.tools.output_max)
        answer = answer_bytes(MessageKind.REPLY if ok else MessageKind.ERROR, body)
        await ctx.keep(kept_at, call_id, answer)
        await self._report(ctx, kept_at, call_id, tool.name, elapsed, "ok" if ok else "error")
        return answer

    async def _report(
        self, ctx: Context, kept_at: str, call_id: str, tool: str, elapsed: float, outcome: str
    ) -> None:
        event = {"agent": self.name, "tool": tool, "call_id": call_id,
                 "duration_ms": round(elapsed * 1000, 3), "outcome": outcome}  # fmt: skip
        await ctx.keep(kept_at, f"meta.{call_id}", _dumps(event).encode())
        await ctx.tool_used(event)

    # -- where a call goes ---------------------------------------------------------------

    def _resolve(self, override: str | None) -> tuple[str, str]:
        """(tier, model id): an explicit model id in the definition wins, then the
        message's override (tier or model id), then the definition's tier."""
        model = self.definition.model
        if model not in MODEL_ALIASES:
            return self._tier_of_model(model), model
        wanted = override or (self.default_tier if model == "inherit" else model)
        if wanted in self.config.tiers:
            return wanted, self.config.tiers[wanted].model
        if "claude" in wanted:
            return self._tier_of_model(wanted), wanted
        raise ConfigError(f"unknown tier {wanted!r}; configured: {', '.join(self.config.tiers)}")

    def _tier_of_model(self, model: str) -> str:
        """The tier whose prices apply to an explicit model id."""
        for name, spec in self.config.tiers.items():
            if spec.model == model:
                return name
        named = tier_of(model)
        return named if named in self.config.tiers else self.default_tier

    def _plan(self, env: Envelope) -> _Plan:
        try:
            tier, model = self._resolve(env.tier)
        except ConfigError as exc:
            raise _Stop({"error": "unknown_tier", "detail": str(exc)}) from None
        command = env.command or ""
        registered = self._schemas.get(command)
        structured = registered is not None or is_structured(env.body.get("respond_format"))
        schema = registered if registered is not None else None
        if schema is None and structured:
            schema = self._declared_schema(command)
        return _Plan(
            tier=tier,
            model=model,
            spec=self.config.tier(tier),
            complexity=self.config.complexity_class(self.complexity),
            structured=structured,
            reply_model=self.reply_models.get(command),
            required=tuple(schema.get("required", ())) if schema else (),
            schema=schema,
        )

    def _escalation(self, plan: _Plan) -> _Plan | None:
        """The same call one tier up, if there is one and the definition allows it."""
        order = self.config.tier_order()
        if plan.tier not in order or plan.tier == order[-1]:
            return None
        higher = order[order.index(plan.tier) + 1]
        allowed = self.definition.model == "inherit" or higher in self.definition.allowed_tiers
        if not allowed:
            return None
        spec = self.config.tier(higher)
        return replace(plan, tier=higher, model=spec.model, spec=spec)

    # -- the request ---------------------------------------------------------------------

    def _declared_schema(self, command: str) -> dict[str, Any] | None:
        """The reply schema the definition declares for ``command`` (read once)."""
        if not self.derive_schemas:
            return None
        if command not in self._declared:
            declared = reply_schema(self.definition, command or None)
            self._declared[command] = anthropic.transform_schema(declared) if declared else None
        return self._declared[command]

    def _system_blocks(self) -> list[TextBlockParam]:
        """The runtime preamble, then the definition's body; the cache mark on the last
        block caches both (the API rejects empty text blocks)."""
        blocks: list[TextBlockParam] = [{"type": "text", "text": PREAMBLE}]
        if self.definition.system_prompt.strip():
            blocks.append({"type": "text", "text": self.definition.system_prompt})
        blocks[-1]["cache_control"] = {"type": "ephemeral", "ttl": self.cache_ttl}
        return blocks

    def _output_config(self, plan: _Plan) -> OutputConfigParam | None:
        config: OutputConfigParam = {}
        effort = plan.complexity.effort
        if plan.tier in self.effort_tiers and effort in _EFFORTS:
            config["effort"] = cast(_Effort, effort)
        if plan.schema is not None:
            config["format"] = {"type": "json_schema", "schema": plan.schema}
        return config or None

    def _metadata(self, env: Envelope) -> MetadataParam:
        """An opaque per-tenant id (what the API wants for abuse tracing), nothing readable."""
        who = f"{env.tenant or '-'}:{self.name}".encode()
        return {"user_id": hashlib.sha256(who).hexdigest()[:32]}

    def _timeout(self, ctx: Context, plan: _Plan) -> float:
        """The complexity class's timeout, cut short by the sender's deadline. Past the
        deadline nobody waits for the answer: refuse before paying for it (the message
        is dead-lettered as ``deadline`` and its sender told)."""
        timeout = plan.complexity.timeout_s
        if ctx.deadline is not None:
            timeout = min(timeout, ctx.deadline - self._now_for(ctx))
        if timeout <= 0:
            raise Rejected(
                "deadline",
                f"deadline passed {-timeout:.1f}s ago, before the call to {plan.model}",
            )
        return timeout

    # -- one call, with retries ------------------------------------------------------------

    async def _call(
        self,
        plan: _Plan,
        messages: list[MessageParam],
        env: Envelope,
        ctx: Context,
        ledger: _Ledger,
        *,
        tools: list[ToolUnionParam] | None = None,
        tool_choice: ToolChoiceParam | None = None,
    ) -> _Answer:
        """One answered call; transient failures are retried here, up to ``max_attempts``."""
        output_config = self._output_config(plan)
        for attempt in range(1, self.max_attempts + 1):
            if ctx.cancelled:
                raise _Stop({"error": "cancelled", "detail": "the sender cancelled this message"})
            timeout = self._timeout(ctx, plan)
            try:
                raw = await self.client.messages.with_raw_response.create(
                    model=plan.model,
                    max_tokens=plan.complexity.max_tokens,
                    system=self._system or anthropic.omit,
                    messages=messages,
                    metadata=self._metadata(env),
                    output_config=output_config or anthropic.omit,
                    tools=tools or anthropic.omit,
                    tool_choice=tool_choice or anthropic.omit,
                    timeout=timeout,
                )
                await self._observe(plan, raw.headers, raw.status_code, ctx)
                message = await raw.parse()
            except anthropic.APIStatusError as exc:
                await self._observe(plan, exc.response.headers, exc.status_code, ctx)
                retry_after = self._triage(plan, exc)
                reason = f"{exc.status_code} {exc.type or type(exc).__name__}"
            except anthropic.APIConnectionError as exc:
                retry_after, reason = None, type(exc).__name__
            else:
                if not isinstance(message, Message):  # pragma: no cover - we never stream
                    raise TypeError(f"expected a Message, got {type(message).__name__}")
                return self._record(plan, message, ctx, ledger)
            await self._back_off(attempt, retry_after, reason, ctx, ledger)
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    def _triage(self, plan: _Plan, exc: anthropic.APIStatusError) -> float | None:
        """The retry-after of a retryable failure; raises for everything else."""
        if isinstance(exc, _SPEND_LIMIT_ERRORS) or "spend_limit" in (exc.error_code or ""):
            raise SpendLimitReached(
                f"{plan.model}: {exc.api_message or exc.message}",
                tier=plan.tier,
                model=plan.model,
                error_code=exc.error_code,
            ) from exc
        retryable = exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
        hint = exc.response.headers.get("x-should-retry")  # the SDK obeys it too
        if hint in ("true", "false"):
            retryable = hint == "true"
        if not retryable:
            body = {
                "error": exc.type or "api_error",
                "status": exc.status_code,
                "detail": exc.api_message or exc.message,
            }
            if exc.request_id:
                body["request_id"] = exc.request_id
            raise _Stop(body)
        return read_retry_after(exc.response.headers)

    async def _back_off(
        self, attempt: int, retry_after: float | None, reason: str, ctx: Context, ledger: _Ledger
    ) -> None:
        """Sleep before the next attempt (the slot this dispatch holds is held on), or
        end the dispatch and continue later as new work.

        A ``retry-after`` beyond ``max_retry_after`` is not slept through, nor are
        attempts past ``max_attempts``: the message continues as a ``retry`` the
        coordinator admits once the wait is over, the slot free meanwhile. After
        ``max_requeues`` such continuations the message is dead-lettered."""
        delay = retry_after if retry_after is not None else self._backoff(attempt)
        if ctx.deadline is not None and self._now_for(ctx) + delay >= ctx.deadline:
            raise Rejected("deadline", f"{reason}; no time for another attempt before the deadline")
        if (retry_after is not None and retry_after > self.max_retry_after) or (
            attempt >= self.max_attempts
        ):
            requeues = int(ledger.prior.get("requeues", 0)) + 1
            if requeues > self.max_requeues:
                raise Rejected(
                    "unavailable", f"{reason}: still failing after {requeues - 1} requeues"
                )
            ledger.prior = {**ledger.prior, "requeues": requeues}
            # a repair or escalation retried stays what it was
            state = {H_NOT_BEFORE: f"{self._now_for(ctx) + delay:.3f}"}
            state[H_STEP] = ctx.envelope.headers.get(H_STEP) or "retry"
            raise Continue("retry", tier=None, state=state, delay=delay)
        ledger.retries += 1
        ctx.log.warning("model_retry", reason=reason, attempt=attempt, delay_s=round(delay, 3))
        await self._sleep(delay)

    def _now_for(self, ctx: Context) -> float:
        """The clock deadlines are on: the one given for tests, else the context's."""
        return self._now() if self._now is not None else ctx.now()

    def _backoff(self, attempt: int) -> float:
        """Exponential from 1 s, capped at 30 s, with jitter so workers do not retry in step."""
        ceiling = min(2.0 ** (attempt - 1), 30.0)
        return ceiling * (0.5 + 0.5 * self._rng())

    async def _observe(
        self, plan: _Plan, headers: Mapping[str, str], status_code: int, ctx: Context
    ) -> None:
        """Pass the rate-limit headers on; a failing observer must not fail a paid call."""
        snapshot = RateLimitSnapshot.from_headers(
            headers, tier=plan.tier, model=plan.model, status_code=status_code
        )
        if snapshot is None:
            return
        self.rate_limits[plan.tier] = snapshot
        if self.on_rate_limits is None:
            return
        try:
            result = self.on_rate_limits(plan.tier, snapshot)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            ctx.log.warning("rate_limit_callback_failed", error=repr(exc))

    def _record(self, plan: _Plan, message: Message, ctx: Context, ledger: _Ledger) -> _Answer:
        """Turn a response into an answer: usage, cost, totals, model check."""
        reported = message.usage
        server = reported.server_tool_use
        usage = Usage(
            input_tokens=reported.input_tokens,
            output_tokens=reported.output_tokens,
            cache_creation_input_tokens=reported.cache_creation_input_tokens or 0,
            cache_read_input_tokens=reported.cache_read_input_tokens or 0,
            web_search_requests=server.web_search_requests if server else 0,
            web_fetch_requests=server.web_fetch_requests if server else 0,
        )
        answer = _Answer(
            plan=plan,
            text="".join(b.text for b in message.content if isinstance(b, TextBlock)),
            reported_model=message.model,
            stop_reason=message.stop_reason,
            usage=usage,
            cost_usd=self.config.price(plan.tier, usage, cache_ttl=self.cache_ttl),
            content=tuple(b.model_dump(mode="json", exclude_none=True) for b in message.content),
        )
        if not _same_model(plan.model, message.model):
            ctx.log.warning(
                "model_mismatch", requested=plan.model, reported=message.model, tier=plan.tier
            )
        self._add_to_totals(answer)
        ledger.answers.append(answer)
        return answer

    def _add_to_totals(self, answer: _Answer) -> None:
        tier = answer.plan.tier
        totals = self.totals.setdefault(tier, {"usage": Usage(), "cost_usd": 0.0, "calls": 0})
        totals["usage"] = totals["usage"] + answer.usage
        totals["cost_usd"] += answer.cost_usd
        totals["calls"] += 1


def _json_header(env: Envelope, name: str, default: Any) -> Any:
    """A JSON header of the runtime's, or ``default`` when absent or unreadable."""
    raw = env.headers.get(name)
    if not raw:
        return default
    try:
        value = json.loads(raw)
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def _next(conversation: str, step: str, slot: int) -> dict[str, str]:
    """The headers of a loop's next step: its conversation, and where its turn goes."""
    return {H_CONV: conversation, H_STEP: step, H_TURN: str(slot)}


def _join_name(conversation: str, index: int) -> str:
    """Where the answers to the tool calls of turn ``index - 1`` meet."""
    return f"{conversation}.{index}"


def _tool_results(turn: Mapping[str, Any], answers: Mapping[str, bytes]) -> list[dict[str, Any]]:
    """The user turn answering ``turn``'s tool calls, in their order."""
    results = []
    for block in turn["content"]:
        if block.get("type") != "tool_use":
            continue
        is_error, body = read_answer(answers.get(block["id"]))
        results.append(
            {
                "type": "tool_result",
                "tool_use_id": block["id"],
                "content": _dumps(body),
                "is_error": is_error,
            }
        )
    return results


def _api_turn(turn: Mapping[str, Any]) -> MessageParam:
    """A recorded turn as the API takes it (the record keeps a stop reason too)."""
    return cast(MessageParam, {"role": turn["role"], "content": turn["content"]})


def _recorded(plan: _Plan, turn: Mapping[str, Any]) -> _Answer:
    """A model turn recorded by an earlier run of this step: nothing spent now."""
    content = tuple(turn["content"])
    text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
    return _Answer(plan=plan, text=text, reported_model=plan.model,
                   stop_reason=turn.get("stop"), usage=Usage(), cost_usd=0.0,
                   content=content)  # fmt: skip


def _cap(result: Any, ok: bool, limit: int) -> dict[str, Any]:
    """A tool's answer body, its text cut at ``limit`` characters with a note."""
    body = result if isinstance(result, dict) else {"result" if ok else "error": result}
    text = _dumps(body)
    if len(text) <= limit:
        return body
    return {
        "result" if ok else "error": text[:limit],
        "truncated": f"output cut: {limit:,} of {len(text):,} characters shown",
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- checking replies -------------------------------------------------------------------

_FENCE = re.compile(r"^```(?:json)?\s*\n(?P<body>.*)\n```$", re.DOTALL)


def _same_model(requested: str, reported: str) -> bool:
    """An alias answered by its dated snapshot (``-20250929``, ``@20250929``) is the same."""
    return re.fullmatch(re.escape(requested) + r"(?:[-@]\d{8})?", reported) is not None


def _refuse_if_refused(answer: _Answer) -> None:
    """A refusal is final: repairing or escalating would pay to be refused again."""
    if answer.stop_reason == "refusal":
        raise _Stop({"error": "refusal", "detail": answer.text or "the model declined to answer"})


def _check(answer: _Answer) -> tuple[dict[str, Any] | None, str]:
    """(the reply body, "") when the text is a valid reply, else (None, what is wrong)."""
    _refuse_if_refused(answer)
    text = answer.text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body")
    try:
        value = json.loads(text)
    except ValueError as exc:
        cut = " (cut off at max_tokens)" if answer.stop_reason == "max_tokens" else ""
        return None, f"not valid JSON{cut}: {exc}"
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not an object"
    model = answer.plan.reply_model
    if model is not None:
        try:
            model.model_validate(value)
        except ValidationError as exc:
            return None, _describe(model, exc)
    missing = [name for name in answer.plan.required if name not in value]
    if missing:
        return None, f"missing required field(s): {', '.join(missing)}"
    return value, ""


def _describe(model: type[BaseModel], exc: ValidationError) -> str:
    errors = exc.errors()
    shown = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in errors[:8])
    more = f" (+{len(errors) - 8} more)" if len(errors) > 8 else ""
    return f"does not match {model.__name__}: {shown}{more}"


def _repair_turns(bad_text: str, problem: str, plan: _Plan) -> list[MessageParam]:
    """The model's bad reply and a request to fix it (an empty turn would be a 400)."""
    model = plan.reply_model
    schema = (
        f" that matches the {model.__name__} schema"
        if model is not None
        else " that matches the requested schema"
        if plan.schema is not None
        else ""
    )
    return [
        {"role": "assistant", "content": bad_text.strip() or "(no text)"},
        {
            "role": "user",
            "content": f"That reply is invalid: {problem}. Reply again with only the corrected "
            f"JSON object{schema}: no prose, no code fences.",
        },
    ]
