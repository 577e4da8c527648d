"""Round-trip ACP bodies through the wire and text codecs and measure them.

The figures compare like with like in one run: compact JSON bytes against
wire frame bytes, and a codec round trip (encode + decode of a body frame)
against stdlib ``json`` dumps + loads of the same bodies. Timings take the
best of several interleaved repeats, as ``timeit`` does, so a busy machine
skews neither side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from acp.errors import ProtocolError
from acp.protocol.codec import WireCodec
from acp.protocol.envelope import Envelope
from acp.protocol.text import body_from_text, body_to_text, envelope_from_text, envelope_to_text

__all__ = ["CodecReport", "check_bodies", "same_json"]


class CodecReport(BaseModel):
    messages: int
    mismatches: int
    json_bytes: int
    wire_bytes: int
    ratio: float
    codec_roundtrip_us: float
    stdlib_json_roundtrip_us: float
    #: (index, what differed) for each mismatch, for the CLI to show
    problems: list[tuple[int, str]] = []


def same_json(a: Any, b: Any) -> bool:
    """Equality that also tells ``true`` from ``1`` and ``1`` from ``1.0``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _best_us(fn: Callable[[], object], count: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def check_bodies(
    bodies: Sequence[dict[str, Any]], *, codec: WireCodec | None = None, repeats: int = 7
) -> CodecReport:
    codec = codec or WireCodec()
    problems: list[tuple[int, str]] = []
    json_bytes = wire_bytes = 0
    for i, body in enumerate(bodies):
        json_bytes += len(body_to_text(body).encode())
        try:
            frame = codec.encode_body(body)
            wire_bytes += len(frame)
            if not same_json(codec.decode_body(frame), body):
                problems.append((i, "wire body round trip changed the body"))
            if not same_json(body_from_text(body_to_text(body)), body):
                problems.append((i, "text round trip changed the body"))
            env = Envelope.for_body(body, sender="codec-check", recipient="codec-check")
            back = codec.decode(codec.encode(env))
            if not same_json(back.body, body) or back.kind != env.kind or back.id != env.id:
                problems.append((i, "envelope wire round trip changed the message"))
            if not same_json(envelope_from_text(envelope_to_text(env)).body, body):
                problems.append((i, "envelope text round trip changed the body"))
        except ProtocolError as exc:
            problems.append((i, f"{type(exc).__name__}: {exc}"))

    encode, decode = codec.encode_body, codec.decode_body
    dumps, loads = json.dumps, json.loads

    def codec_pass() -> None:
        for body in bodies:
            decode(encode(body))

    def json_pass() -> None:
        for body in bodies:
            loads(dumps(body, separators=(",", ":"), ensure_ascii=False))

    n = max(len(bodies), 1)
    rounds = max(1, 2000 // n)

    def many(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(rounds):
                fn()

        return run

    codec_us = json_us = float("inf")
    for _ in range(repeats):  # interleave so both sides see the same machine load
        codec_us = min(codec_us, _best_us(many(codec_pass), n * rounds, 1))
        json_us = min(json_us, _best_us(many(json_pass), n * rounds, 1))
    return CodecReport(
        messages=len(bodies),
        mismatches=len(problems),
        json_bytes=json_bytes,
        wire_bytes=wire_bytes,
        ratio=round(wire_bytes / json_bytes, 4) if json_bytes else 0.0,
        codec_roundtrip_us=round(codec_us, 2),
        stdlib_json_roundtrip_us=round(json_us, 2),
        problems=problems,
    )
