"""Running the platform: ``acp coordinator``, ``status``, ``demo``, ``up``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from acp.cli.app import app
from acp.cli.common import (
    _ADMIN_RECONNECT_TIMEOUT,
    _AGENTS_OPTION,
    _CONFIG_OPTION,
    _METRICS_OPTION,
    _catalogue,
    _deployment,
    _DurabilityOption,
    _fail,
    _RedisFileOption,
    _RedisOption,
    _run,
    _serve_with_metrics,
    _where,
    _with_bus,
)
from acp.errors import ACPError, ConfigError
from acp.runtime.environment import ENV_REDIS_URL


@app.command("coordinator")
def coordinator_command(
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
    durability: _DurabilityOption = None,
    agents: _AGENTS_OPTION = None,
    name: Annotated[str | None, typer.Option(help="Coordinator id (default host-pid).")] = None,
    lease_ttl: Annotated[
        float, typer.Option(help="Leader lease seconds: a standby takes over within this.")
    ] = 5.0,
    status_interval: Annotated[
        float, typer.Option(help="Seconds between platform status updates.")
    ] = 10.0,
    metrics_port: _METRICS_OPTION = None,
) -> None:
    """Schedule agent work by tier and complexity, inside rate limits and budgets.

    Run two for high availability: one leads, the other takes over within the
    lease time. Stop with Ctrl-C / SIGTERM.

    Example: acp coordinator --redis redis://127.0.0.1:6379/0 --config runtime/acp.toml
    """
    from acp.runtime.coordinator import Coordinator
    from acp.runtime.metrics import Metrics

    where = _where(redis, redis_url_file, config, durability)
    try:
        catalogue = _catalogue(agents)
    except ACPError as exc:
        raise _fail(str(exc)) from None

    async def run() -> None:
        async with where.deployment.bus(where.url) as bus:
            metrics = Metrics() if metrics_port is not None else None
            coordinator = Coordinator(
                bus, where.deployment.config, definitions=catalogue.definitions,
                coordinator_id=name, lease_ttl=lease_ttl, status_interval=status_interval,
                metrics=metrics, codec=where.deployment.codec,
            )  # fmt: skip
            typer.echo(f"coordinator {coordinator.id} on {bus.settings.redacted_url}", err=True)
            await _serve_with_metrics(metrics, metrics_port, coordinator)

    _run(run)


def _rate(rate: float | None) -> str:
    return "no work finished yet" if rate is None else f"{rate:.1%}"


def _status_view(status: dict[str, Any]) -> Group:
    workers = Table(title="workers", title_justify="left")
    for column in ("agent", "kind", "tier", "worker", "in flight", "handled", "capacity"):
        workers.add_column(column)
    for w in status["workers"]:
        workers.add_row(
            w.get("agent", "?"), w.get("kind", "?"), w.get("tier", "?"), w.get("worker", "?"),
            str(w.get("in_flight", 0)), str(w.get("handled", 0)), str(w.get("capacity", "?")),
        )  # fmt: skip
    queues = Table(title="queues", title_justify="left")
    for column in ("destination", "ready", "in flight", "delayed", "dead", "lag s"):
        queues.add_column(column)
    for dest, q in status["queues"].items():
        dead = f"[red]{q['dead']}[/red]" if q["dead"] else "0"
        queues.add_row(
            dest, str(q["ready"]), str(q["in_flight"]), str(q["delayed"]), dead, f"{q['lag_s']:.1f}"
        )
    parts: list[Any] = [workers, queues]
    platform = status.get("platform")
    if platform:
        tiers = Table(title="tiers", title_justify="left")
        for column in ("tier", "in flight", "cap", "requests left"):
            tiers.add_column(column)
        for tier, t in platform["scheduling"]["tiers"].items():
            tiers.add_row(tier, str(t["in_flight"]), str(t["concurrency"]), str(t["requests_left"]))
        cost = platform["cost_today"]
        budget = f" of {cost['budget_usd']:.2f}" if cost.get("budget_usd") else ""
        agents_ = platform["agents"]
        parts += [
            tiers,
            Text(
                f"cost today ${cost['total_usd']:.4f}{budget} · waiting for a worker: "
                f"{agents_['waiting_for_a_worker']} · success rate: {_rate(agents_['success_rate'])}"
            ),
        ]
    else:
        parts.append(
            Text("no coordinator status yet (is `acp coordinator` running?)", style="yellow")
        )
    return Group(*parts)


@app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """Workers, queues, dead letters, tiers and cost today against budget.

    Example: acp status --watch --redis redis://127.0.0.1:6379/0
    """
    from rich.live import Live

    from acp.runtime.status import read_status

    where = _where(redis, redis_url_file, config)
    if as_json:
        typer.echo(json.dumps(_with_bus(where, read_status), default=str))
        return
    if not watch:
        Console().print(_status_view(_with_bus(where, read_status)))
        return

    async def follow() -> None:
        async with where.deployment.bus(
            where.url, reconnect_timeout=_ADMIN_RECONNECT_TIMEOUT
        ) as bus:
            with Live(_status_view(await read_status(bus)), refresh_per_second=4) as live:
                while True:
                    await anyio.sleep(interval)
                    live.update(_status_view(await read_status(bus)))

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(follow)


# --- acp demo / acp up ----------------------------------------------------------


@app.command("demo")
def demo_command(
    agents: _AGENTS_OPTION = None,
    messages: Annotated[int, typer.Option(help="Commands of traffic to send.", min=1)] = 300,
    config: _CONFIG_OPTION = None,
    durability: _DurabilityOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with the summary as JSON.")] = False,
) -> None:
    """A complete run on one screen: a private server, the coordinator, workers,
    real traffic, dead letters, and the pipeline monitor asking the data engineer.
    No key needed; with ANTHROPIC_API_KEY the data engineer answers through Claude.

    Example: acp demo
    """
    from acp.cli.demo import run_demo
    from acp.logs import configure_logging

    console = Console(highlight=False, soft_wrap=True)
    if "ACP_LOG_LEVEL" not in os.environ:
        configure_logging(
            "error"
        )  # the demo narrates; its expected warnings (dead letters) would clutter it
    try:
        catalogue = _catalogue(agents)
        deployment = _deployment(config, durability)
    except ACPError as exc:
        raise _fail(str(exc)) from None
    summary = _run(
        lambda: run_demo(
            catalogue,
            deployment.config,
            say=console.print,
            messages=messages,
            deployment=deployment,
        )
    )
    if as_json:
        typer.echo(json.dumps(summary))
        return
    claude = "answered through Claude" if summary["claude"] else "waiting for a Claude worker"
    console.print(
        f"\nSummary: {summary['handled']} messages handled, {summary['round_trips_per_s']:,.0f} round trips/s "
        f"(p50 {summary['latency_p50_ms']} ms, p95 {summary['latency_p95_ms']} ms), "
        f"{summary['dead_letters']} dead letters, cost ${summary['cost_usd']:.4f}; data engineer {claude}."
    )


@app.command("up")
def up_command(
    agents: _AGENTS_OPTION = None,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis",
            metavar="URL",
            help=f"Use this server instead of a private one (else ${ENV_REDIS_URL}; a "
            "password in it shows in `ps`: prefer the variable or --redis-url-file).",
        ),
    ] = None,
    redis_url_file: _RedisFileOption = None,
    durability: _DurabilityOption = None,
    data_dir: Annotated[
        str | None, typer.Option(help="Keep the private server's data here (default: temporary).")
    ] = None,
    cluster: Annotated[
        int | None,
        typer.Option(
            "--cluster",
            metavar="N",
            min=1,
            help="Start a private local cluster instead: N primaries with one replica each, "
            "on loopback (to try the runtime on a cluster; data is temporary).",
            show_default=False,
        ),
    ] = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """Run everything: a private Redis-protocol server (unless --redis), the
    coordinator and workers for every agent in the catalogue, with live status.
    Ctrl-C stops it all cleanly.

    Example: acp up --agents agents/ (or acp up --cluster 3)
    """
    from rich.live import Live

    from acp.runtime.settings import EMBEDDED, resolve_redis
    from acp.runtime.stack import Stack, plan_agents
    from acp.runtime.status import read_status

    console = Console()
    try:
        deployment = _deployment(config, durability)
        named = resolve_redis(redis, url_file=redis_url_file)
        if cluster and named is not EMBEDDED:
            raise ConfigError(
                "--cluster starts a private cluster: it cannot be given with a server URL"
            )
        if cluster and data_dir:
            raise ConfigError("--cluster keeps its data in temporary directories: drop --data-dir")
        catalogue = _catalogue(agents)
        plan = plan_agents(catalogue, deployment.config)
    except ACPError as exc:
        raise _fail(str(exc)) from None
    stack = Stack(
        plan, deployment.config, catalogue.definitions, data_dir=data_dir, cluster=cluster,
        redis_url=None if named is EMBEDDED else named.url, deployment=deployment,
    )  # fmt: skip

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(stack.run)
            assert stack.settings is not None
            console.print(f"Redis at [bold]{stack.settings.redacted_url}[/bold]; agents running: "
                          f"{', '.join(a.name for a in plan.agents) or 'none'}")  # fmt: skip
            if plan.waiting_for_key:
                console.print(
                    f"waiting for ANTHROPIC_API_KEY (their work is queued): {', '.join(plan.waiting_for_key)}"
                )
            console.print(
                f"send work:  ACP_REDIS_URL={stack.settings.redacted_url} acp send AGENT --json '{{\"cmd\": ...}}' --wait"
            )
            async with deployment.bus(stack.settings.url) as bus:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals, Live(
                    _status_view(await read_status(bus)), console=console, refresh_per_second=2
                ) as live:  # fmt: skip

                    async def refresh() -> None:
                        while True:
                            await anyio.sleep(1.0)
                            live.update(_status_view(await read_status(bus)))

                    tg.start_soon(refresh)
                    async for _ in signals:
                        break
            console.print("stopping: in-flight work finishes, the rest stays queued")
            stack.stop()
            tg.cancel_scope.cancel()

    _run(run)
