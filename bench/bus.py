"""Bus benchmark: the ACP message path against the best plain redis-py loop.

The runtime's throughput only means something next to what the same client
library can do on the same server with no runtime in between, so this script
starts its own embedded server and measures, one phase at a time:

* **raw**: a hand-tuned redis-py asyncio loop (pipelined XADD of pre-encoded
  msgpack payloads, XREADGROUP COUNT + one XACK per batch, producer and
  consumer concurrent) and a raw XADD / XREADGROUP / XADD / XREAD round trip;
* **acp**: ``bench/_acp.py`` (the full path: envelope, codec, bus, processor, commit);
* **peers**: Dramatiq and arq in subprocesses (``bench/_peers.py``).

``ratio = acp_msgs_per_s / raw_msgs_per_s`` is the figure the runtime is
judged by. Phases run sequentially on a flushed database (two cores: anything
running beside a phase would be measured too), and every phase has a timeout.

    python bench/bus.py --messages 20000            # readable table
    python bench/bus.py --messages 20000 --json     # one JSON object on stdout
    python bench/bus.py --phases throughput --cluster 3   # and one server vs a cluster
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

import msgpack
import redis
import redis.asyncio as aioredis
import structlog

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run as a script from anywhere: make ``acp`` importable
    sys.path.insert(0, str(_HERE.parent))
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import _cluster  # noqa: E402
import _peers  # noqa: E402

from acp.runtime.embedded import EmbeddedServer  # noqa: E402

STREAM: Final = b"bench:raw"
GROUP: Final = "bench"
REQ_STREAM: Final = b"bench:rtt:req"
REP_STREAM: Final = b"bench:rtt:rep"
RR_REQ: Final = b"bench:rr:req"
RR_REP: Final = b"bench:rr:rep"
FIELD: Final = b"m"
#: mean size of an ACP body in the real corpus, in compact JSON (FACTS.md)
PAYLOAD_TARGET: Final = 370


# --- payloads ----------------------------------------------------------------------


def make_payloads(n: int, size: int = PAYLOAD_TARGET) -> list[bytes]:
    """``n`` msgpack-packed ACP-like envelopes of about ``size`` bytes, each with its sequence number.

    Encoding happens before the clock starts: the raw loop measures the bus,
    not msgpack, and the unique ``seq`` lets the consumer prove exactly-once.
    """
    pad = max(0, size - len(_pack(0, 0)))
    return [_pack(i, pad) for i in range(n)]


def _pack(seq: int, pad: int) -> bytes:
    body = {
        "cmd": "review",
        "task": {
            "id": f"T-{seq:08d}",
            "title": "Review the retry policy",
            "files": ["acp/runtime/retry.py"],
            "complexity": 3,
        },
        "ctx": {"branch": "main", "note": "x" * pad},
    }
    envelope = {
        "id": f"01JD{seq:022d}",
        "kind": "command",
        "sender": "agent.coordinator",
        "recipient": "agent.reviewer",
        "body": body,
        "correlation_id": f"01JC{seq:022d}",
        "reply_to": "agent.coordinator",
        "created_at": 1_764_000_000.0 + seq / 1000,
        "priority": 5,
        "attempt": 1,
        "tier": "sonnet",
        "seq": seq,
    }
    packed: bytes = msgpack.packb(envelope, use_bin_type=True)
    return packed


# --- clients and housekeeping --------------------------------------------------------


def client(url: str, *, hiredis: bool = True) -> aioredis.Redis:
    """An asyncio client; ``hiredis=False`` forces the pure-Python parser to show what hiredis buys."""
    kwargs: dict[str, Any] = {}
    if not hiredis:
        from redis._parsers import _AsyncRESP2Parser

        kwargs["parser_class"] = _AsyncRESP2Parser
    return aioredis.Redis.from_url(url, **kwargs)


def hiredis_in_use(hiredis: bool) -> bool:
    from redis.utils import HIREDIS_AVAILABLE

    return bool(HIREDIS_AVAILABLE and hiredis)


async def reset(url: str) -> None:
    """Empty the server and compact its AOF so no phase inherits data or an AOF rewrite.

    Without the rewrite, a run of several phases grows the AOF past the
    automatic-rewrite threshold and a background fork lands in the middle of
    some later phase on a two-core machine.
    """
    r = aioredis.Redis.from_url(url)
    try:
        async with deadline("flush and AOF rewrite", 30.0):
            pipe = r.pipeline(transaction=False)
            pipe.flushall()
            pipe.script_flush()
            pipe.function_flush()
            await pipe.execute()
            while True:  # a rewrite may already be running; retry until ours is accepted
                try:
                    await r.bgrewriteaof()
                    break
                except redis.ResponseError:
                    await asyncio.sleep(0.05)
            while True:
                info = await r.info("persistence")
                if not (info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")):
                    return
                await asyncio.sleep(0.02)
    finally:
        await r.aclose()


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Flatten an XREAD/XREADGROUP reply (RESP2 list or RESP3 dict) into its entries."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (s[1] for s in reply)
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    for batch in streams:
        if batch and isinstance(batch[0], list) and batch[0] and isinstance(batch[0][0], list):
            batch = batch[0]  # RESP3 wraps each stream's entries once more
        out.extend(batch)
    return out


# --- raw throughput ------------------------------------------------------------------


async def raw_throughput(
    url: str,
    payloads: Sequence[bytes],
    *,
    batch: int = 250,
    count: int = 250,
    hiredis: bool = True,
) -> dict[str, Any]:
    """The best plain redis-py producer/consumer pair: what the ACP path is measured against.

    Producer: pipelines of ``batch`` XADDs on one connection. Consumer: one
    XREADGROUP COUNT ``count`` per round trip, with the XACK for the previous
    batch riding in the same pipeline, so each batch costs one round trip.
    Every payload is unpacked and its ``seq`` counted to prove exactly-once.
    The rate is ``N / (first XADD sent -> last XACK answered)``.
    """
    n = len(payloads)
    prod = client(url, hiredis=hiredis)
    cons = client(url, hiredis=hiredis)
    await prod.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await cons.ping()  # connect before the clock starts
    seen = bytearray(n)
    duplicates = 0
    started = asyncio.Event()
    t0 = 0.0
    t_end = 0.0

    async def produce() -> None:
        nonlocal t0
        pipe = prod.pipeline(transaction=False)
        t0 = time.perf_counter()
        started.set()
        for start in range(0, n, batch):
            for payload in payloads[start : start + batch]:
                pipe.xadd(STREAM, {FIELD: payload})
            await pipe.execute()

    async def consume() -> None:
        nonlocal duplicates, t_end
        unpackb = msgpack.unpackb
        received = 0
        to_ack: list[bytes] = []
        await started.wait()
        while received < n:
            pipe = cons.pipeline(transaction=False)
            if to_ack:
                pipe.xack(STREAM, GROUP, *to_ack)
            pipe.xreadgroup(GROUP, "c1", {STREAM: b">"}, count=count, block=1000)
            replies = await pipe.execute()
            entries = _entries(replies[-1])
            to_ack = [entry_id for entry_id, _ in entries]
            received += len(entries)
            for _, fields in entries:
                seq = unpackb(fields[FIELD])["seq"]
                if seen[seq]:
                    duplicates += 1
                seen[seq] = 1
        if to_ack:
            await cons.xack(STREAM, GROUP, *to_ack)
        t_end = time.perf_counter()

    try:
        async with asyncio.TaskGroup() as tasks:  # one failing cancels the other
            tasks.create_task(consume())
            tasks.create_task(produce())
        pending = (await prod.xpending(STREAM, GROUP))["pending"]
    finally:
        await prod.aclose()
        await cons.aclose()
    elapsed = t_end - t0
    return {
        "msgs_per_s": n / elapsed,
        "seconds": elapsed,
        "lost": n - sum(seen),
        "duplicates": duplicates,
        "unacked": pending,
    }


# --- raw round trip -------------------------------------------------------------------


async def raw_rtt(
    url: str,
    requests: int,
    *,
    warmup: int = 200,
    hiredis: bool = True,
    payload: bytes = b"",
) -> list[float]:
    """Request/reply round trips over two streams with plain redis-py, in seconds.

    A responder blocked on XREADGROUP reads each request, then XADDs the reply
    and XACKs the request in one pipeline. The client sends its XADD and its
    XREAD BLOCK on the reply stream in one pipeline (the XREAD names the last
    reply id seen, so it cannot miss a fast reply): one client write per trip.
    """
    payload = payload or make_payloads(1)[0]
    caller = client(url, hiredis=hiredis)
    server = client(url, hiredis=hiredis)
    await server.xgroup_create(REQ_STREAM, GROUP, id="0", mkstream=True)
    stop = asyncio.Event()

    async def respond() -> None:
        while not stop.is_set():
            reply = await server.xreadgroup(GROUP, "r1", {REQ_STREAM: b">"}, count=10, block=200)
            entries = _entries(reply)
            if not entries:
                continue
            pipe = server.pipeline(transaction=False)
            for _, fields in entries:
                pipe.xadd(REP_STREAM, {FIELD: fields[FIELD]})
            pipe.xack(REQ_STREAM, GROUP, *(entry_id for entry_id, _ in entries))
            await pipe.execute()

    async def call() -> list[float]:
        samples: list[float] = []
        last = b"0-0"
        pipe = caller.pipeline(transaction=False)
        for i in range(warmup + requests):
            t = time.perf_counter()
            pipe.xadd(REQ_STREAM, {FIELD: payload})
            pipe.xread({REP_STREAM: last}, count=1, block=5000)
            _, reply = await pipe.execute()
            elapsed = time.perf_counter() - t
            entries = _entries(reply)
            if not entries:
                raise TimeoutError("no reply within 5 s")
            last = entries[-1][0]
            if i >= warmup:
                samples.append(elapsed)
        return samples

    responder = asyncio.create_task(respond())
    try:
        return await call()
    finally:
        stop.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(responder, 2.0)
        await caller.aclose()
        await server.aclose()


# --- raw request/reply, many in flight ---------------------------------------------------


async def raw_inflight(
    url: str, requests: int, *, in_flight: int = 100, payload: bytes = b""
) -> dict[str, Any]:
    """A plain redis-py request/reply loop keeping ``in_flight`` requests out: what a
    competent engineer writes for the same job as ``Client.request`` under load.

    The caller sends its new requests in the same pipeline as its next XREAD BLOCK
    of the reply stream (one round trip per batch of replies); the responder reads
    requests with XREADGROUP COUNT 100 and answers a batch with one pipeline of
    XADDs and one XACK. Each reply names its request, so latency is per request.
    """
    payload = payload or make_payloads(1)[0]
    caller = client(url)
    server = client(url)
    await server.xgroup_create(RR_REQ, GROUP, id="0", mkstream=True)
    await caller.ping()
    stop = asyncio.Event()

    async def respond() -> None:
        while not stop.is_set():
            reply = await server.xreadgroup(GROUP, "r1", {RR_REQ: b">"}, count=100, block=200)
            entries = _entries(reply)
            if not entries:
                continue
            pipe = server.pipeline(transaction=False)
            for _, fields in entries:
                pipe.xadd(RR_REP, {FIELD: fields[FIELD], b"c": fields[b"c"]})
            pipe.xack(RR_REQ, GROUP, *(entry_id for entry_id, _ in entries))
            await pipe.execute()

    latencies: list[float] = []
    sent_at: dict[int, float] = {}
    issued = 0
    done = 0
    last = b"0-0"
    fresh = min(in_flight, requests)
    responder = asyncio.create_task(respond())
    started, cpu = time.perf_counter(), time.process_time()
    try:
        while done < requests:
            pipe = caller.pipeline(transaction=False)
            now = time.perf_counter()
            for _ in range(fresh):
                sent_at[issued] = now
                pipe.xadd(RR_REQ, {FIELD: payload, b"c": issued})
                issued += 1
            pipe.xread({RR_REP: last}, count=in_flight, block=5000)
            entries = _entries((await pipe.execute())[-1])
            if not entries:
                raise TimeoutError("no reply within 5 s")
            now = time.perf_counter()
            for entry_id, fields in entries:
                latencies.append(now - sent_at.pop(int(fields[b"c"])))
                last = entry_id
            done += len(entries)
            fresh = min(len(entries), requests - issued)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        stop.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(responder, 2.0)
        await caller.aclose()
        await server.aclose()
    return {
        "requests_per_s": requests / elapsed,
        "cpu_us_per_request": cpu / requests * 1e6,
        "latencies": latencies,
    }


# --- the ACP path ------------------------------------------------------------------------


def load_acp() -> tuple[Any, str | None]:
    """``bench/_acp.py`` or the reason it cannot be used (imported late: acp may be broken)."""
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        benchmark = importlib.import_module("_acp")
    except ImportError as exc:
        return None, f"bench/_acp.py is not importable: {exc}"
    needed = ("run_acp_throughput", "run_acp_rtt", "run_acp_inflight")
    missing = [f for f in needed if not hasattr(benchmark, f)]
    if missing:
        return None, f"bench/_acp.py lacks {', '.join(missing)}"
    return benchmark, None


# --- figures --------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linearly interpolated between closest ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _ms(samples: Sequence[float], q: float) -> float:
    return round(percentile(samples, q) * 1000, 4)


@contextlib.asynccontextmanager
async def deadline(what: str, seconds: float) -> AsyncIterator[None]:
    """``asyncio.timeout`` whose error names the phase that overran."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise TimeoutError(f"{what} did not finish within {seconds:g} s") from None


# --- the run ------------------------------------------------------------------------------


async def run_phases(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The phases ``--phases`` names, each raw and acp interleaved ``--repeat`` times."""
    payloads = make_payloads(args.messages)
    acp, acp_skipped = load_acp()
    result: dict[str, Any] = {
        "messages": args.messages,
        "payload_bytes": round(sum(map(len, payloads)) / max(len(payloads), 1), 1),
    }
    if acp is None:
        result["acp_skipped"] = acp_skipped
    if "throughput" in args.phases:
        result |= await throughput_phase(url, args, payloads, acp)
    if "rtt" in args.phases:
        result |= await rtt_phase(url, args, payloads, acp)
    if "inflight" in args.phases:
        result |= await inflight_phase(url, args, payloads, acp)
    if args.cluster:
        await reset(url)
        async with deadline("cluster phase", args.timeout * 6):
            result["cluster"] = await _cluster.cluster_phase(url, args.cluster, args.messages)
    await reset(url)
    return result


async def throughput_phase(
    url: str, args: argparse.Namespace, payloads: list[bytes], acp: Any
) -> dict[str, Any]:
    """Raw and ACP throughput interleaved ``--repeat`` times (medians reported)."""
    raw_runs: list[dict[str, Any]] = []
    acp_runs: list[dict[str, Any]] = []
    limit = args.timeout
    warm = min(2000, args.messages)
    # Warm the server and both code paths (imports, scripts, allocations); not measured.
    await reset(url)
    async with deadline("raw warm-up", limit):
        await raw_throughput(url, payloads[:warm], batch=args.batch, count=args.count)
    if acp is not None:
        await reset(url)
        async with deadline("acp warm-up", limit):
            await acp.run_acp_throughput(url, warm)
    # Interleaved, so drift (other load on the machine) hits both paths alike.
    for _ in range(args.repeat):
        await reset(url)
        async with deadline("raw throughput", limit):
            raw_runs.append(
                await raw_throughput(
                    url, payloads, batch=args.batch, count=args.count, hiredis=args.hiredis
                )
            )
        if acp is not None:
            await reset(url)
            async with deadline("run_acp_throughput", limit):
                acp_runs.append(await acp.run_acp_throughput(url, args.messages))
    raw_rate = statistics.median(r["msgs_per_s"] for r in raw_runs)
    result: dict[str, Any] = {
        "acp_msgs_per_s": None,
        "raw_msgs_per_s": round(raw_rate, 1),
        "ratio": None,
        "lost": None,
        "duplicates": None,
        "raw_lost": sum(r["lost"] for r in raw_runs),
        "raw_duplicates": sum(r["duplicates"] for r in raw_runs),
        "raw_unacked": sum(r["unacked"] for r in raw_runs),
        "raw_runs_msgs_per_s": [round(r["msgs_per_s"], 1) for r in raw_runs],
    }
    if acp_runs:
        acp_rate = statistics.median(float(r["msgs_per_s"]) for r in acp_runs)
        result |= {
            "acp_msgs_per_s": round(acp_rate, 1),
            "ratio": round(acp_rate / raw_rate, 3),
            "lost": sum(int(r["lost"]) for r in acp_runs),
            "duplicates": sum(int(r["duplicates"]) for r in acp_runs),
            "acp_runs_msgs_per_s": [round(float(r["msgs_per_s"]), 1) for r in acp_runs],
        }
    return result


async def rtt_phase(
    url: str, args: argparse.Namespace, payloads: list[bytes], acp: Any
) -> dict[str, Any]:
    """Both round trips in ``--repeat`` interleaved rounds (samples pooled): latency
    drifts with the machine's load."""
    raw_samples: list[float] = []
    acp_samples: list[float] = []
    per_round = max(1, args.rtt_requests // args.repeat)
    for _ in range(args.repeat):
        await reset(url)
        async with deadline("raw round trips", args.timeout):
            raw_samples += await raw_rtt(
                url, per_round, warmup=50, hiredis=args.hiredis, payload=payloads[0]
            )
        if acp is not None:
            await reset(url)
            async with deadline("run_acp_rtt", args.timeout):
                acp_samples += await acp.run_acp_rtt(url, per_round)
    result: dict[str, Any] = {
        "acp_rtt_p50_ms": None,
        "acp_rtt_p99_ms": None,
        "raw_rtt_p50_ms": _ms(raw_samples, 50),
        "raw_rtt_p99_ms": _ms(raw_samples, 99),
    }
    if acp_samples:
        result["acp_rtt_p50_ms"] = _ms(acp_samples, 50)
        result["acp_rtt_p99_ms"] = _ms(acp_samples, 99)
    return result


async def inflight_phase(
    url: str, args: argparse.Namespace, payloads: list[bytes], acp: Any
) -> dict[str, Any]:
    """Request/reply with ``--in-flight`` requests out at once: the plain redis-py loop,
    ``Client.request`` straight to a worker, and through a coordinator, interleaved
    ``--inflight-repeat`` times (rates: medians; latencies: pooled)."""
    n, depth = args.inflight_requests, args.in_flight
    runs: dict[str, list[dict[str, Any]]] = {"raw": [], "direct": [], "coordinator": []}
    if acp is not None:  # warm both acp paths once: imports, scripts, groups
        for via in ("direct", "coordinator"):
            await reset(url)
            async with deadline(f"acp {via} in-flight warm-up", args.timeout):
                await acp.run_acp_inflight(url, min(n, 500), in_flight=depth, via=via)
    for _ in range(args.inflight_repeat):
        await reset(url)
        async with deadline("raw in-flight request/reply", args.timeout):
            runs["raw"].append(await raw_inflight(url, n, in_flight=depth, payload=payloads[0]))
        if acp is None:
            continue
        for via in ("direct", "coordinator"):
            await reset(url)
            async with deadline(f"acp {via} in-flight request/reply", args.timeout):
                runs[via].append(await acp.run_acp_inflight(url, n, in_flight=depth, via=via))
    result: dict[str, Any] = {"inflight_requests": n, "in_flight": depth}
    raw_rate = statistics.median(r["requests_per_s"] for r in runs["raw"])
    for path, path_runs in runs.items():
        if not path_runs:
            continue
        rate = statistics.median(r["requests_per_s"] for r in path_runs)
        pooled = [t for r in path_runs for t in r["latencies"]]
        result[f"rr_{path}_per_s"] = round(rate, 1)
        result[f"rr_{path}_p50_ms"] = _ms(pooled, 50)
        result[f"rr_{path}_p95_ms"] = _ms(pooled, 95)
        result[f"rr_{path}_cpu_us"] = round(
            statistics.median(r["cpu_us_per_request"] for r in path_runs), 1
        )
        if path != "raw":
            result[f"rr_{path}_ratio"] = round(rate / raw_rate, 3)
    return result


def run_peers(server: EmbeddedServer, args: argparse.Namespace) -> dict[str, Any]:
    """Each peer in its own subprocess on its own database, the server flushed before each."""
    out: dict[str, Any] = {f"{name}_msgs_per_s": None for name in _peers.PEERS}
    skipped: dict[str, str] = {}
    details: dict[str, Any] = {}
    for name in _peers.PEERS:
        if not args.peers:
            skipped[name] = "--no-peers"
            continue
        asyncio.run(reset(server.url))
        python = args.arq_python if name == "arq" else sys.executable
        figures = _peers.run_peer(
            name, server.url, args.messages, timeout=args.peer_timeout, python=python
        )
        if "skipped" in figures:
            skipped[name] = figures["skipped"]
            continue
        out[f"{name}_msgs_per_s"] = figures["msgs_per_s"]
        details[name] = figures
    asyncio.run(reset(server.url))
    if skipped:
        out["peers_skipped"] = skipped
    if details:
        out["peers"] = details
    return out


def context(server: EmbeddedServer, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "server": str(server.version),
        "durability": server.durability,
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "hiredis": hiredis_in_use(args.hiredis),
        "batch": args.batch,
        "count": args.count,
        "repeat": args.repeat,
        "phases": sorted(args.phases),
        "rtt_requests": args.rtt_requests,
        "cpus": os.cpu_count(),
    }


# --- output -------------------------------------------------------------------------------


def render_table(result: dict[str, Any]) -> str:
    """A side-by-side table of the JSON figures, for people."""

    def fmt(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.3f}{unit}" if value < 10 else f"{value:,.0f}{unit}"
        return f"{value}{unit}"

    rows = [("", "acp", "raw redis-py")]
    if "raw_msgs_per_s" in result:
        rows += [
            ("msgs/s", fmt(result["acp_msgs_per_s"]), fmt(result["raw_msgs_per_s"])),
            ("lost", fmt(result["lost"]), fmt(result["raw_lost"])),
            ("duplicates", fmt(result["duplicates"]), fmt(result["raw_duplicates"])),
        ]
    if "raw_rtt_p50_ms" in result:
        rows += [
            ("rtt p50", fmt(result["acp_rtt_p50_ms"], " ms"), fmt(result["raw_rtt_p50_ms"], " ms")),
            ("rtt p99", fmt(result["acp_rtt_p99_ms"], " ms"), fmt(result["raw_rtt_p99_ms"], " ms")),
        ]
    if "rr_raw_per_s" in result:
        depth = result["in_flight"]
        for path in ("direct", "coordinator"):
            rows += [
                (
                    f"{depth} in flight, {path}: req/s",
                    fmt(result.get(f"rr_{path}_per_s")),
                    fmt(result["rr_raw_per_s"]),
                ),
                (
                    f"{depth} in flight, {path}: p50 / p95",
                    f"{fmt(result.get(f'rr_{path}_p50_ms'))} / {fmt(result.get(f'rr_{path}_p95_ms'), ' ms')}",
                    f"{fmt(result['rr_raw_p50_ms'])} / {fmt(result['rr_raw_p95_ms'], ' ms')}",
                ),
            ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}".rstrip() for a, b, c in rows]
    lines.insert(1, "-" * (sum(widths) + 4))
    if "ratio" in result:
        ratio = result["ratio"]
        lines.append(f"ratio acp/raw: {fmt(ratio)}" + ("" if ratio is None else " (goal 0.7)"))
    for path, goal in (("direct", 0.6), ("coordinator", 0.4)):
        if result.get(f"rr_{path}_ratio") is not None:
            lines.append(
                f"request/reply {path} ratio acp/raw: {fmt(result[f'rr_{path}_ratio'])} (goal {goal})"
            )
    if result.get("acp_skipped"):
        lines.append(f"acp skipped: {result['acp_skipped']}")
    if "cluster" in result:
        lines += _cluster.render(result["cluster"])
    for name in _peers.PEERS:
        figures = result.get("peers", {}).get(name)
        if figures:
            extras = ", ".join(
                f"{k} {fmt(v)}" for k, v in figures.items() if k != "msgs_per_s" and v is not None
            )
            lines.append(f"{name}: {fmt(figures['msgs_per_s'])} msgs/s end to end ({extras})")
        elif name in result.get("peers_skipped", {}):
            lines.append(f"{name}: skipped ({result['peers_skipped'][name]})")
    lines.append(
        f"{result['messages']} messages of ~{result['payload_bytes']:.0f} B; "
        f"phases {', '.join(sorted(result['phases']))}; "
        f"{result['server']} ({result['durability']}); Python {result['python']}, "
        f"redis-py {result['redis_py']}, hiredis {'on' if result['hiredis'] else 'off'}; "
        f"batch {result['batch']}, count {result['count']}, median of {result['repeat']}"
    )
    return "\n".join(lines)


def _quiet_logs() -> None:
    """Send library logs to stderr at WARNING+, so stdout carries only the result."""
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000, help="messages per throughput run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--peers", action=argparse.BooleanOptionalAction, default=True, help="Dramatiq/arq rows"
    )
    # Nine, not five: one phase moves by 15% either way on a shared 2-vCPU machine,
    # and the median of nine pairs keeps a run's ratio within a few percent.
    parser.add_argument("--repeat", type=int, default=9, help="throughput runs (median reported)")
    parser.add_argument("--rtt-requests", type=int, default=2000, help="measured round trips")
    parser.add_argument("--batch", type=int, default=250, help="raw producer pipeline size")
    parser.add_argument("--count", type=int, default=250, help="raw XREADGROUP COUNT")
    parser.add_argument(
        "--hiredis",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="raw loop parser (--no-hiredis shows what hiredis buys)",
    )
    parser.add_argument(
        "--phases",
        type=lambda text: set(text.split(",")),
        default={"throughput", "rtt", "inflight"},
        help="comma-separated: throughput, rtt, inflight (default: all)",
    )
    parser.add_argument("--in-flight", type=int, default=100, help="requests out at once")
    parser.add_argument(
        "--inflight-requests", type=int, default=3000, help="requests per in-flight run"
    )
    parser.add_argument(
        "--inflight-repeat", type=int, default=3, help="in-flight runs (median reported)"
    )
    parser.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="N",
        help="also measure 12 queues on one server against a local cluster of N primaries, "
        "the per-shard ceiling and the coordinator's dispatch rate (bench/_cluster.py)",
    )
    parser.add_argument("--durability", choices=("normal", "safe"), default="normal")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per phase")
    parser.add_argument("--peer-timeout", type=float, default=180.0, help="seconds per peer")
    parser.add_argument(
        "--arq-python",
        default=os.environ.get("ACP_BENCH_ARQ_PYTHON", sys.executable),
        help="interpreter with arq installed (arq pins redis<6; $ACP_BENCH_ARQ_PYTHON)",
    )
    args = parser.parse_args(argv)
    unknown = args.phases - {"throughput", "rtt", "inflight"}
    if unknown:
        parser.error(f"--phases: unknown phase(s) {', '.join(sorted(unknown))}")
    for name in ("messages", "repeat", "rtt_requests", "batch", "count", "in_flight"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet_logs()
    with EmbeddedServer(durability=args.durability) as server:
        result = asyncio.run(run_phases(server.url, args))
        result |= run_peers(server, args)
        result |= context(server, args)
    if args.json:
        print(json.dumps(result))
    else:
        print(render_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
