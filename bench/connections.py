"""What one worker serving a large catalogue holds: Redis connections and memory.

One ``Worker`` process serves ``--agents`` Claude-backed agents (definitions
generated here, each a distinct name, tier and complexity; the model API is a
local address never called, since no work is sent), on the embedded server or a
local cluster (``--cluster N``). Once every agent has announced itself the
server is asked how many of its clients belong to the worker (``CLIENT LIST``,
each node on a cluster) and the worker's RSS is read from /proc.

Baseline in the same run: the same worker serving one agent, so the table shows
what the catalogue adds.

    python bench/connections.py [--agents 70] [--cluster 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acp.runtime.cluster import EmbeddedCluster  # noqa: E402
from acp.runtime.embedded import EmbeddedServer  # noqa: E402

TIERS = ("haiku", "sonnet", "opus")
LEVELS = ("low", "medium", "high")

WORKER = """
import sys, anyio
from acp.agents import AgentDefinition, ClaudeAgent, claude_client, load_config
from acp.runtime.bus import RedisBus
from acp.runtime.worker import Worker

url, count = sys.argv[1], int(sys.argv[2])
config = load_config(env={})
client = claude_client(api_key="never-used", base_url="http://127.0.0.1:9")
agents = [
    ClaudeAgent(
        AgentDefinition(
            name=f"agent-{i:03d}", description=f"Agent number {i}.",
            model=("haiku", "sonnet", "opus")[i % 3],
            computational_complexity=("low", "medium", "high")[i % 3],
            system_prompt=f"You are agent {i}; answer in JSON.",
        ),
        client=client, config=config,
    )
    for i in range(count)
]

async def main() -> None:
    async with RedisBus.from_url(url) as bus:
        await Worker(bus, agents, heartbeat=1.0).run()

anyio.run(main)
"""


def _nodes(where: EmbeddedServer | EmbeddedCluster) -> list[tuple[str, int]]:
    if isinstance(where, EmbeddedCluster):
        return where.startup_nodes
    return [(where.host or "127.0.0.1", where.port or 0)]


def _clients_of(where: EmbeddedServer | EmbeddedCluster, pid_ports: set[int]) -> int:
    """Connections whose local port belongs to the worker process."""
    total = 0
    for host, port in _nodes(where):
        client = redis.Redis(host=host, port=port)
        try:
            for info in client.client_list():
                peer_port = int(str(info["addr"]).rsplit(":", 1)[1])
                total += peer_port in pid_ports
        finally:
            client.close()
    return total


def _local_ports(pid: int) -> set[int]:
    """The local TCP ports of ``pid``'s sockets (from /proc: no psutil needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _announced(url_nodes: list[tuple[str, int]], count: int) -> bool:
    from redis.cluster import RedisCluster

    host, port = url_nodes[0]
    client: Any = (
        RedisCluster(host=host, port=port)
        if len(url_nodes) > 1
        else redis.Redis(host=host, port=port)
    )
    try:
        return int(client.hlen("acp:{presence:workers}")) >= count
    finally:
        client.close()


def measure(where: EmbeddedServer | EmbeddedCluster, url: str, agents: int) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, url, str(agents)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "ACP_LOG_LEVEL": "error"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _announced(_nodes(where), agents):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"the worker did not start: {proc.stderr.read() if proc.stderr else ''}"
                )
            time.sleep(0.2)
        time.sleep(3.0)  # a few heartbeats and reads: every connection it keeps is open
        connections = _clients_of(where, _local_ports(proc.pid))
        return {"agents": agents, "connections": connections, "rss_mb": round(_rss_mb(proc.pid), 1)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(args: argparse.Namespace) -> dict[str, Any]:
    where: EmbeddedServer | EmbeddedCluster
    if args.cluster:
        where = EmbeddedCluster(primaries=args.cluster, replicas=0).start()
        url = where.url
    else:
        where = EmbeddedServer().start()
        url = where.url
    try:
        rows = [measure(where, url, 1), measure(where, url, args.agents)]
    finally:
        where.stop()
    server = f"cluster of {args.cluster}" if args.cluster else "one server"
    return {"server": server, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, default=70)
    parser.add_argument("--cluster", type=int, default=0, metavar="N", help="N primaries")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    print(f"one worker process, Claude-backed agents, on {result['server']}")
    print(f"{'agents':>8} {'connections':>12} {'per agent':>10} {'RSS MB':>8}")
    for row in result["rows"]:
        per = row["connections"] / row["agents"]
        print(f"{row['agents']:>8} {row['connections']:>12} {per:>10.2f} {row['rss_mb']:>8.1f}")


if __name__ == "__main__":
    main()
