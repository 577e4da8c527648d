"""Where a request's CPU goes, against the budget the in-flight goals leave.

``bench/bus.py --phases inflight`` compares ``Client.request`` with 100 in flight
to a plain redis-py request/reply loop (goals: 0.6 of its rate direct, 0.4
through a coordinator). This script measures, in one run on one embedded server:

- the raw loop and acp's two paths (rate, process CPU per request, and the share
  of the wall clock the process was busy);
- the CPU per request each goal allows, at acp's own measured busy share and at
  a fully busy process (the most generous reading);
- the protocol work every request needs, each step on its own on a warm cache:
  building the command, encoding and decoding it, building the reply, encoding and
  decoding it (the same codec and envelope the runtime uses), and the cancel
  scope a worker runs each handler in;
- what acp would reach if that protocol work cost nothing.

    python bench/request_budget.py              # table
    python bench/request_budget.py --json       # one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgpack
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bus  # bench/ is not a package: its modules sit on sys.path
from _acp import BODY, run_acp_inflight

from acp.protocol import Envelope, WireCodec
from acp.protocol.codec import zstd_dictionary, zstd_parameters
from acp.runtime.client import new_traceparent
from acp.runtime.embedded import EmbeddedServer

GOALS = {"direct": 0.6, "coordinator": 0.4}
ANSWER = {"component_id": "orders_etl", "healthy": True}


def best_us(step: Callable[[], object], n: int = 5000, rounds: int = 5) -> float:
    """The best of ``rounds`` mean times of ``step``, in microseconds (a floor: warm
    caches, no other work in between)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            step()
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1e6


def protocol_steps() -> dict[str, float]:
    """Each step of the protocol work one request needs, as the runtime does it."""
    codec = WireCodec()
    ask = {**BODY, "cmd": "ECHO"}

    def command() -> Envelope:
        now = time.time()
        return Envelope.for_body(
            dict(ask), sender="client-1", recipient="echo", reply_to="acp.inbox.client-1",
            priority=5, deadline=now + 60.0, created_at=now, traceparent=new_traceparent(),
        )  # fmt: skip

    env = command()
    frame = codec.encode(env)
    reply = codec.decode(frame).reply(ANSWER)
    reply_frame = codec.encode(reply)
    steps = {
        "build command": best_us(command),
        "encode command": best_us(lambda: codec.encode(env)),
        "decode command": best_us(lambda: codec.decode(frame)),
        "build reply": best_us(lambda: env.reply(ANSWER)),
        "encode reply": best_us(lambda: codec.encode(reply)),
        "decode reply": best_us(lambda: codec.decode(reply_frame)),
    }

    async def scope() -> float:
        def enter() -> None:
            with anyio.CancelScope():  # noqa: ASYNC100 - its cost is what is measured
                pass

        return best_us(enter)

    steps["handler's cancel scope"] = anyio.run(scope)
    # through a coordinator the command is decoded once more (and forwarded as it came)
    steps["coordinator decodes command"] = steps["decode command"]
    return steps


def compiled_floor() -> dict[str, float]:
    """The compiled calls alone for each frame of a request (msgpack, SHA-256 and zstd
    with the runtime's dictionary, nothing checked, no envelope built): the least any
    Python code can spend on that protocol work, in microseconds."""
    zdict = zstd_dictionary(WireCodec().dictionary)
    compress = zstandard.ZstdCompressor(dict_data=zdict, compression_params=zstd_parameters())
    decompress = zstandard.ZstdDecompressor(
        dict_data=zdict, format=zstandard.FORMAT_ZSTD1_MAGICLESS
    ).decompress
    pack, unpack, sha256 = msgpack.Packer(use_bin_type=True).pack, msgpack.unpackb, hashlib.sha256
    header = ["01JD" + "0" * 22, 0, "client-1", "echo", None, "acp.inbox.client-1",
              1.7e9, 1.7e9 + 60, 5, None, "00-" + "1" * 32 + "-" + "2" * 16 + "-01"]  # fmt: skip

    def encode(body: dict[str, Any]) -> bytes:
        packed = pack(body)
        tag = sha256(pack(header) + packed).digest()[:16]
        return compress.compress(pack([*header, tag, packed]))

    def decode(frame: bytes) -> object:
        fields = unpack(decompress(frame, max_output_size=4096))  # the frame has the size
        packed = fields[-1]
        sha256(pack(fields[:-2]) + packed).digest()
        return unpack(packed)

    floor = {}
    for name, body in (("command", {**BODY, "cmd": "ECHO"}), ("reply", ANSWER)):
        frame = encode(body)
        floor[f"encode {name}"] = best_us(lambda body=body: encode(body))
        floor[f"decode {name}"] = best_us(lambda frame=frame: decode(frame))
    return floor


async def paths(url: str, requests: int, rounds: int) -> dict[str, dict[str, float]]:
    """Medians over ``rounds`` interleaved runs of each path."""
    runs: dict[str, list[dict[str, Any]]] = {"raw": [], "direct": [], "coordinator": []}
    for via in ("direct", "coordinator"):  # warm: imports, scripts, groups
        await bus.reset(url)
        await run_acp_inflight(url, 500, via=via)
    for _ in range(rounds):
        await bus.reset(url)
        runs["raw"].append(await bus.raw_inflight(url, requests))
        for via in ("direct", "coordinator"):
            await bus.reset(url)
            runs[via].append(await run_acp_inflight(url, requests, via=via))
    out = {}
    for path, found in runs.items():
        rate = statistics.median(r["requests_per_s"] for r in found)
        cpu = statistics.median(r["cpu_us_per_request"] for r in found)
        out[path] = {"per_s": rate, "cpu_us": cpu, "busy": rate * cpu / 1e6}
    return out


def budget(
    measured: dict[str, dict[str, float]], steps: dict[str, float], floor: dict[str, float]
) -> dict[str, Any]:
    raw_rate = measured["raw"]["per_s"]
    result: dict[str, Any] = {"steps_us": steps, "compiled_floor_us": floor, "paths": measured}
    for path, goal in GOALS.items():
        m = measured[path]
        protocol = sum(us for name, us in steps.items() if path in name or "coord" not in name)
        least = sum(floor.values()) + (floor["decode command"] if path == "coordinator" else 0)
        rest = m["cpu_us"] - protocol
        result[path] = {
            "goal": goal,
            "protocol_us": protocol,
            "ratio": m["per_s"] / raw_rate,
            "allowed_cpu_us_at_own_busy": m["busy"] * 1e6 / (goal * raw_rate),
            "allowed_cpu_us_fully_busy": 1e6 / (goal * raw_rate),
            "cpu_us_less_protocol": rest,
            "ratio_if_protocol_free": m["busy"] * 1e6 / rest / raw_rate,
            "compiled_floor_us": least,
            # the most generous reading: the process always busy, the protocol work
            # down to its compiled calls, everything else as measured
            "ratio_at_best": 1e6 / (rest + least) / raw_rate,
        }
    return result


def render(result: dict[str, Any]) -> str:
    p = result["paths"]
    lines = ["path           req/s   CPU/request   busy"]
    for path in ("raw", "direct", "coordinator"):
        m = p[path]
        lines.append(f"{path:12s} {m['per_s']:7,.0f}   {m['cpu_us']:7.1f} us   {m['busy']:.2f}")
    lines.append("")
    lines.append("protocol work per request, each step alone on a warm cache:")
    for name, us in result["steps_us"].items():
        lines.append(f"  {name:28s} {us:5.1f} us")
    floor = result["compiled_floor_us"]
    lines.append(f"  (the compiled calls alone for the four frames: {sum(floor.values()):.1f} us)")
    for path in GOALS:
        r = result[path]
        lines += [
            "",
            f"{path}: ratio {r['ratio']:.3f}, goal {r['goal']}, protocol work "
            f"{r['protocol_us']:.1f} us",
            f"  CPU per request the goal allows: {r['allowed_cpu_us_at_own_busy']:.1f} us at "
            f"this path's busy share, {r['allowed_cpu_us_fully_busy']:.1f} us fully busy",
            f"  CPU per request less the protocol work: {r['cpu_us_less_protocol']:.1f} us",
            f"  ratio if the protocol work cost nothing: {r['ratio_if_protocol_free']:.3f}",
            f"  ratio fully busy, with the protocol work down to its compiled calls "
            f"({r['compiled_floor_us']:.1f} us): {r['ratio_at_best']:.3f}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs per path")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    bus._quiet_logs()
    steps = protocol_steps()
    with EmbeddedServer(durability="normal") as server:
        measured = asyncio.run(paths(server.url, args.requests, args.rounds))
    result = budget(measured, steps, compiled_floor())
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
