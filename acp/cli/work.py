"""The work commands: ``acp worker``, ``send``, ``result``, ``run``, ``trace``, ``tail``."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import anyio
import typer
from rich.console import Console

from acp.cli.app import app
from acp.cli.common import (
    _AGENTS_OPTION,
    _CONFIG_OPTION,
    _METRICS_OPTION,
    CacheTTL,
    _catalogue,
    _DurabilityOption,
    _fail,
    _first_line,
    _RedisFileOption,
    _RedisOption,
    _run,
    _serve_with_metrics,
    _when,
    _where,
    _with_bus,
)
from acp.errors import ACPError, ProtocolError, RequestTimeout

if TYPE_CHECKING:
    from acp.agents import AgentBase, AgentDefinition, Catalogue, RuntimeConfig
    from acp.runtime.client import Result


def _claude_factory(
    runtime_config: RuntimeConfig,
    base_url: str | None,
    cache_ttl: Literal["5m", "1h"],
    catalogue: Catalogue,
    redis_url: str | None = None,
) -> Callable[[AgentDefinition], AgentBase]:
    """Claude-backed agents for a worker: one client and one toolbox for all of them
    (its MCP connections are the worker's, whatever the number of agents)."""
    from acp.agents.toolbox import Toolbox

    shared: dict[str, Any] = {}

    def build(definition: AgentDefinition) -> AgentBase:
        from acp.agents.claude import ClaudeAgent, claude_client  # the SDK loads slowly

        if not shared:
            # MissingAPIKey names ANTHROPIC_API_KEY
            shared["client"] = claude_client(base_url=base_url)
            secret = urlsplit(redis_url).password if redis_url else None
            shared["toolbox"] = Toolbox(runtime_config.tools, secrets=[secret or ""])
        return ClaudeAgent(
            definition, client=shared["client"], config=runtime_config, cache_ttl=cache_ttl,
            catalogue=catalogue.definitions, toolbox=shared["toolbox"],
        )  # fmt: skip

    return build


@app.command("worker")
def worker_command(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="Agent names from the definitions, or module:attr of Python agents.",
            metavar="TARGET",
        ),
    ],
    agents: _AGENTS_OPTION = None,
    concurrency: Annotated[int, typer.Option(help="Messages in flight per agent.", min=1)] = 16,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    durability: _DurabilityOption = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Stable worker id (default host-pid); a restart under it resumes its work."
        ),
    ] = None,
    config: _CONFIG_OPTION = None,
    base_url: Annotated[
        str | None,
        typer.Option(envvar="ANTHROPIC_BASE_URL", help="Anthropic API or a compatible gateway."),
    ] = None,
    cache_ttl: Annotated[
        CacheTTL, typer.Option(help="System prompt cache lifetime.")
    ] = CacheTTL.five_minutes,
    metrics_port: _METRICS_OPTION = None,
) -> None:
    """Run agents: Python handlers and Claude-backed definitions, until Ctrl-C / SIGTERM.

    Example: acp worker data-engineer acp.catalogue.pipeline_doctor:agent --redis redis://127.0.0.1:6379/0
    """
    from acp.cli.targets import resolve_targets
    from acp.runtime.metrics import Metrics
    from acp.runtime.worker import Worker

    where = _where(redis, redis_url_file, config, durability)
    try:
        catalogue = _catalogue(agents)
        ttl: Literal["5m", "1h"] = "1h" if cache_ttl is CacheTTL.one_hour else "5m"
        claude = _claude_factory(where.deployment.config, base_url, ttl, catalogue, where.url)
        resolved = resolve_targets(targets, catalogue=catalogue, claude=claude)
    except ACPError as exc:
        raise _fail(str(exc)) from None

    async def run() -> None:
        async with where.deployment.bus(where.url) as bus:
            metrics = Metrics() if metrics_port is not None else None
            worker = Worker(
                bus, resolved, concurrency=concurrency, worker_id=name, metrics=metrics,
                codec=where.deployment.codec, delegation=where.deployment.config.delegation,
            )  # fmt: skip
            typer.echo(
                f"worker {worker.worker_id}: {', '.join(a.name for a in resolved)} on {bus.settings.redacted_url}",
                err=True,
            )
            await _serve_with_metrics(metrics, metrics_port, worker)

    _run(run)


@app.command("send")
def send_command(
    agent: Annotated[str, typer.Argument(help="The agent to send to.")],
    body: Annotated[
        str, typer.Option("--json", help="The ACP body, as JSON text.", metavar="BODY")
    ],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the reply and print it.")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to wait for the reply (with --wait). It is also the command's "
            "deadline: work still queued when it passes is dropped, not run and paid for."
        ),
    ] = 60.0,
    no_deadline: Annotated[
        bool,
        typer.Option(
            "--no-deadline",
            help="With --wait: let the command run even after the wait ends "
            "(follow it with acp result ID). Without --wait a command has no deadline.",
        ),
    ] = False,
    human: Annotated[bool, typer.Option("--human", help="Render the reply for a person.")] = False,
    tier: Annotated[
        str | None, typer.Option(help="Override the agent's tier for this message.")
    ] = None,
    config: _CONFIG_OPTION = None,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    durability: _DurabilityOption = None,
) -> None:
    """Send a command to an agent; with --wait, print its reply as JSON (or rendered).

    Every command sent is tracked: `acp result ID` says later where it stands
    (queued, parked, running, done, dead) and shows its reply.

    Example: acp send data-engineer --json '{"cmd":"PIPELINE_STATUS","component_id":"etl"}' --wait
    """
    from acp.protocol import Envelope, MessageKind, body_from_text, body_to_text, render_envelope
    from acp.runtime.bus import RedisBus
    from acp.runtime.client import Client

    try:
        payload = body_from_text(body)
    except ProtocolError as exc:
        raise _fail(f"--json: {exc}", 2) from None
    where = _where(redis, redis_url_file, config, durability)

    async def run(bus: RedisBus) -> tuple[Envelope, Envelope | None]:
        client = Client(bus, sender="cli", codec=where.deployment.codec)
        if not wait:
            return await client.send(agent, payload, tier=tier), None
        deadline = None if no_deadline else time.time() + timeout
        env = client.command(agent, payload, reply=True, tier=tier, deadline=deadline, track=True)
        try:
            return env, await client.request_envelope(env, timeout=timeout)
        except RequestTimeout as exc:
            raise _fail(f"{exc}\nfollow it: acp result {env.id} --wait") from None

    sent, reply = _with_bus(where, run)
    if reply is None:
        typer.echo(json.dumps({"sent": sent.id, "to": agent}))
        typer.echo(f"follow it: acp result {sent.id} --wait", err=True)
        return
    typer.echo(render_envelope(reply) if human else body_to_text(reply.body))
    if reply.kind is MessageKind.ERROR:
        raise typer.Exit(1)


@app.command("result")
def result_command(
    msg_id: Annotated[str, typer.Argument(help="The message id acp send printed.", metavar="ID")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the command is done or dead.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    human: Annotated[bool, typer.Option("--human", help="Render the reply for a person.")] = False,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """Where a command sent earlier stands: queued, parked (no worker for its agent),
    running, done (with its reply) or dead (with the reason and how to replay it).

    Exits 0 when done, 1 when dead or unknown, 3 when still on its way.

    Example: acp result 0193a5c2e4f1b2c3d4e5f60718293a4b --wait
    """
    from acp.protocol import MessageKind
    from acp.runtime.bus import RedisBus
    from acp.runtime.client import Client, ResultState

    async def look(bus: RedisBus) -> Result:
        client = Client(bus, codec=where.deployment.codec)
        return await client.result(msg_id, wait=timeout if wait else None)

    where = _where(redis, redis_url_file, config)
    result = _with_bus(where, look)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), default=str))
    else:
        _show_result(result, human=human)
    if result.state is ResultState.DONE:
        code = 1 if result.reply is not None and result.reply.kind is MessageKind.ERROR else 0
    else:
        code = 3 if not result.final and result.state is not ResultState.UNKNOWN else 1
    raise typer.Exit(code)


def _show_result(result: Result, *, human: bool) -> None:
    from acp.protocol import body_to_text, render_envelope
    from acp.runtime.client import ResultState

    if result.state is ResultState.UNKNOWN:
        typer.echo(
            f"{result.msg_id}: unknown (not sent with acp send or Client.send, "
            "or its record expired; see [results] in the runtime config)"
        )
        return
    what = f"{result.command or 'message'} to {result.agent or '?'}"
    when = f" at {_when(result.updated_at)}" if result.updated_at else ""
    detail = f": {result.detail}" if result.detail and not result.final else ""
    typer.echo(f"{result.msg_id}: {what}: {result.state.value}{when}{detail}")
    if result.state is ResultState.DEAD and result.reply is not None:
        body = result.reply.body
        typer.echo(f"  reason   {body.get('reason')} after {body.get('attempts')} attempt(s)")
        typer.echo(f"  error    {_first_line(str(body.get('detail', '')))}")
        typer.echo(f"  replay   {body.get('replay')}")
    elif result.reply is not None:
        typer.echo(render_envelope(result.reply) if human else body_to_text(result.reply.body))


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


@app.command("run")
def run_command(
    workflows: Annotated[
        list[str],
        typer.Argument(
            help="Workflow messages as JSON files (the shapes definitions use), or the name "
            "of a shipped workflow (health_check, release).",
            metavar="WORKFLOW",
        ),
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress and print each report at the end.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reports.")] = 3600.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each report as JSON, one per line.")
    ] = False,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
    durability: _DurabilityOption = None,
) -> None:
    """Start workflows: phases in order, parallel steps at once, sequential in order,
    each step's agent getting the previous phase's outputs. Needs a running coordinator.
    Several workflows run side by side; exits 1 if any of them failed.

    Example: acp run health_check examples/my-release.json --wait
    """
    from acp.catalogue import find_workflow
    from acp.protocol import Envelope, MessageKind, body_from_text, body_to_text, parse_workflow
    from acp.runtime.bus import RedisBus
    from acp.runtime.client import Client
    from acp.runtime.keys import COORDINATORS, WORKFLOW_INTAKE, WORKFLOW_TOPIC

    bodies: list[dict[str, Any]] = []
    for name in workflows:
        try:
            path = find_workflow(name)
            body = body_from_text(path.read_text(encoding="utf-8"))
            parse_workflow(body)  # refuse what is not a workflow before anything is sent
        except (OSError, ACPError) as exc:
            raise _fail(f"{name}: {exc}", 2) from None
        bodies.append(body)
    # with --json, stdout carries only the reports: progress goes to stderr
    console = Console(highlight=False, soft_wrap=True, stderr=as_json)
    where = _where(redis, redis_url_file, config, durability)
    inspect = where.deployment.inspecting_codec

    async def run(bus: RedisBus) -> list[Envelope]:
        client = Client(bus, sender="cli", via="coordinator", codec=where.deployment.codec)
        if not await bus.members(COORDINATORS):
            console.print(
                "[yellow]no coordinator is running: the workflows wait in its intake[/yellow]"
            )
        if not wait:
            for body in bodies:
                sent = await client.send(WORKFLOW_INTAKE, body, track=False)
                typer.echo(json.dumps({"workflow_id": sent.id, "workflow": body.get("workflow")}))
            return []
        started = [client.command(WORKFLOW_INTAKE, body, reply=True) for body in bodies]
        envs = {env.id: env for env in started}
        reports: dict[str, Envelope] = {}

        async def follow() -> None:
            async for event in bus.subscribe(WORKFLOW_TOPIC):
                if event.headers.get("workflow") not in envs:
                    continue
                status = inspect.decode(event.frame).body.get("workflow_status", {})
                name = status.get("workflow")
                if status.get("event") == "step":
                    mark = {"succeeded": "[green]ok[/green]", "running": "..."}.get(
                        status.get("step_status", ""), status.get("step_status")
                    )
                    console.print(
                        f"  {name} step {status.get('step')} {status.get('agent')}: {mark}"
                    )
                elif status.get("event") == "started":
                    console.print(f"workflow {name} started: {status.get('steps')} steps")

        async def one(env: Envelope) -> None:
            reports[env.id] = await client.request_envelope(env, timeout=timeout)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.05)
            async with anyio.create_task_group() as requests:
                for env in started:
                    requests.start_soon(one, env)
            tg.cancel_scope.cancel()
        return [reports[env.id] for env in started]

    reports = _with_bus(where, run)
    failed = False
    for report in reports:
        r = report.body
        failed = failed or report.kind is MessageKind.ERROR or r.get("status") == "failed"
        if as_json:
            typer.echo(body_to_text(r))
            continue
        console.print(
            f"workflow {r.get('workflow')}: {r.get('status')} in {_duration(r.get('seconds', 0))}, "
            f"cost ${r.get('cost_usd', 0):.4f}"
        )
        for step in r.get("steps", []):
            console.print(
                f"  {step['step']:<28} {step['agent']:<24} {step['status']:<10} "
                f"${step['cost_usd']:.4f} {_duration(step['seconds'])}"
            )
    if failed:
        raise typer.Exit(1)


@app.command("trace")
def trace_command(
    root_id: Annotated[
        str, typer.Argument(help="The root request's id (acp send prints it).", metavar="ROOT_ID")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """The delegation tree of a request: each agent, its tier and model, model turns,
    tokens, cost, time and outcome, and whom it asked.

    Example: acp trace 0193a5c2e4f1b2c3d4e5f60718293a4b
    """
    from acp.runtime.bus import RedisBus
    from acp.runtime.client import Client
    from acp.runtime.trace import TraceNode, read_trace

    where = _where(redis, redis_url_file, config)

    async def look(bus: RedisBus) -> TraceNode:
        result = await Client(bus, codec=where.deployment.codec).result(root_id)
        node = await read_trace(bus, root_id, agent=result.agent or "?")
        if result.reply is not None:
            node.meta = dict(result.reply.body.get("_acp") or {})
            node.outcome = result.state.value
        return node

    node = _with_bus(where, look)
    if as_json:
        typer.echo(json.dumps(node.as_dict(), default=str))
        return
    typer.echo("\n".join(node.render()))
    typer.echo(f"tree cost ${node.total_cost():.4f}")


@app.command("tail")
def tail_command(
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", help="Only this agent's queue (repeatable).", show_default=False),
    ] = None,
    human: Annotated[
        bool, typer.Option("--human", help="Render each message for a person.")
    ] = False,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """Follow messages as they flow into queues, until Ctrl-C: compact JSON, one
    message a line, or rendered for a person. It only watches: nothing is consumed.

    A command sent through the coordinator shows twice, one hop each: first in the
    coordinator's intake ("hop": "coordinator", waiting to be scheduled), then in its
    agent's queue ("hop": "agent", dispatched). Same id, one delivery. Tool calls
    made in agent loops show too ("topic": "tools": agent, tool, duration, outcome).

    Example: acp tail --agent data-engineer --human
    """
    from acp.protocol import MessageKind, envelope_to_text, render_envelope
    from acp.protocol.headers import H_JOIN, H_ROOT
    from acp.runtime.bus import RedisBus
    from acp.runtime.keys import TOOLS_TOPIC, is_intake
    from acp.runtime.status import agent_queues

    where = _where(redis, redis_url_file, config)
    codec = where.deployment.inspecting_codec

    async def queues(bus: RedisBus) -> None:
        dests = agent or list(await agent_queues(bus))
        while not dests:  # nothing sent yet: follow the queues once there are some
            await anyio.sleep(1.0)
            dests = list(await agent_queues(bus))
        async for delivery in bus.follow(dests):
            try:
                env = codec.decode(delivery.frame)
            except ACPError as exc:
                typer.echo(json.dumps({"queue": delivery.dest, "undecodable": str(exc)}))
                continue
            hop = "coordinator" if is_intake(delivery.dest) else "agent"
            if human:
                place = (
                    f"coordinator intake, for {env.recipient}"
                    if hop == "coordinator"
                    else f"{delivery.dest}'s queue"
                )
                if H_JOIN in env.headers:  # a delegation, or the answer to one
                    what = (
                        "answer to"
                        if env.kind in (MessageKind.REPLY, MessageKind.ERROR)
                        else "delegated by"
                    )
                    root = env.headers.get(H_ROOT, "?")
                    place += f"; {what} {env.recipient if what == 'answer to' else env.sender} (tree {root})"
                typer.echo(f"-- {place}\n{render_envelope(env)}")
            else:
                record = json.loads(envelope_to_text(env))
                typer.echo(json.dumps({"queue": delivery.dest, "hop": hop, **record}))

    async def tool_calls(bus: RedisBus) -> None:
        """Tool calls are not messages: workers report them on a topic."""
        async for event in bus.subscribe(TOOLS_TOPIC):
            try:
                env = codec.decode(event.frame)
            except ACPError:
                continue
            call = env.body.get("tool_call")
            if not isinstance(call, dict) or (agent and call.get("agent") not in agent):
                continue
            if human:
                typer.echo(
                    f"-- tool call: {call.get('agent')} ran {call.get('tool')}: "
                    f"{call.get('outcome')} in {call.get('duration_ms')} ms "
                    f"(message {env.body.get('msg_id')})"
                )
            else:
                typer.echo(json.dumps({"topic": TOOLS_TOPIC, "msg_id": env.body.get("msg_id"),
                                       **call}))  # fmt: skip

    async def follow(bus: RedisBus) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(queues, bus)
            tg.start_soon(tool_calls, bus)

    with contextlib.suppress(KeyboardInterrupt):
        _with_bus(where, follow)
