"""Wire dictionaries side by side, and how dictionary 2 was made.

    python bench/dictionary.py [PATH ...]           # figures for dictionaries 1 and 2
    python bench/dictionary.py --json [PATH ...]
    python bench/dictionary.py --make-entropy       # dictionary 2's entropy header, as hex

Dictionary 1 is raw content: zstd has to build default entropy tables for
every frame, which is about a third of what compressing a 370-byte frame
costs. Dictionary 2 is the same content with entropy tables in front, so the
fast strategy reuses them. The tables are statistics of messages this project
wrote: the vocabulary's own samples and the examples of its ``agents/``
catalogue (frozen in ``dictionary-training.json``), each both as a bare body
and inside an envelope (the two payloads the codec compresses). ``--make-entropy`` needs ``backports.zstd`` (or
Python 3.14's ``compression.zstd``); the header it printed is frozen in
``acp/protocol/vocabulary.py``, since frames name their dictionary by id.

The figures (PATHs default to the shipped catalogue, ``acp/catalogue/agents/``): compact JSON bytes, wire bytes
and the ratio for each dictionary, and the time to compress the benchmark's
envelope payload, best of seven.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import zstandard

ROOT = Path(__file__).resolve().parent.parent
#: the examples of the agents/ catalogue when dictionary 2 was made, kept so that
#: remaking it does not depend on the catalogue as it is today
TRAINING = ROOT / "bench" / "dictionary-training.json"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _acp import BODY  # noqa: E402

from acp.agents.examples import collect_examples  # noqa: E402
from acp.protocol import Envelope, WireCodec, classify_body, vocabulary  # noqa: E402
from acp.protocol.codec import zstd_dictionary, zstd_parameters  # noqa: E402
from acp.protocol.integrity import _digest_v2  # noqa: E402


def _payload(frame: bytes) -> bytes:
    """An uncompressed frame's payload: what the codec hands zstd."""
    return frame[4:] if frame[2] & 0x80 else frame[3:]


def training_payloads() -> list[bytes]:
    """What the entropy tables are counted on: deterministic, project-written."""
    bodies = vocabulary.sample_bodies() + json.loads(TRAINING.read_text())
    plain = WireCodec(compress=False)
    payloads: list[bytes] = []
    for i, body in enumerate(bodies):
        env = Envelope(
            id=f"{i:032x}",
            kind=classify_body(body),
            sender="agent-a",
            recipient="agent-b",
            body=body,
            created_at=1_790_000_000.0 + i,
            # the tag of the frames dictionary 2 was counted on: a digest of the body
            # alone (tags now cover the header too, which changes their bytes)
            hash=_digest_v2(msgpack.packb(body, use_bin_type=True)),
        )
        frame = plain.encode(env)
        payloads.append(_payload(frame))
        payloads.append(msgpack.packb(body, use_bin_type=True))
    return payloads


def make_entropy() -> bytes:
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef]
    content = vocabulary.dictionary_bytes()
    full = zstd.finalize_dict(
        zstd.ZstdDict(content, is_raw=True), training_payloads(), len(content) + 4096, 3
    ).dict_content
    assert full.endswith(content), "a finalized dictionary ends with its content"
    header: bytes = full[: len(full) - len(content)]
    return header


def figures(paths: Sequence[str]) -> dict[str, Any]:
    examples, _ = collect_examples(*paths)
    json_bytes = sum(
        len(json.dumps(b, separators=(",", ":"), ensure_ascii=False).encode()) for b in examples
    )
    params = zstd_parameters()
    payload = _payload(
        WireCodec(compress=False).encode(Envelope.for_body(BODY, sender="bench", recipient="bench"))
    )
    out: dict[str, Any] = {"messages": len(examples), "json_bytes": json_bytes}
    for dict_id in (1, 2):
        d = zstd_dictionary(dict_id)
        d.precompute_compress(compression_params=params)
        compress = zstandard.ZstdCompressor(dict_data=d, compression_params=params).compress
        wire = 0
        for body in examples:
            packed = msgpack.packb(body, use_bin_type=True)
            # the codec's header is 3 or 4 bytes; it keeps whichever payload is smaller
            wire += min(len(compress(packed)), len(packed)) + (3 if len(packed) < 0x80 else 4)
        timer = timeit.Timer(partial(compress, payload))
        seconds = min(timer.repeat(number=20000, repeat=7)) / 20000
        out[f"dict{dict_id}"] = {
            "wire_bytes": wire,
            "ratio": round(wire / max(json_bytes, 1), 4),
            "envelope_bytes": len(compress(payload)),
            "compress_us": round(seconds * 1e6, 3),
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=[str(ROOT / "acp" / "catalogue" / "agents")])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--make-entropy", action="store_true")
    args = parser.parse_args(argv)
    if args.make_entropy:
        print(make_entropy().hex())
        return 0
    result = figures(args.paths)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['messages']} messages, {result['json_bytes']} bytes of compact JSON")
        for dict_id in (1, 2):
            r = result[f"dict{dict_id}"]
            print(
                f"dictionary {dict_id}: {r['wire_bytes']} wire bytes (ratio {r['ratio']}), "
                f"benchmark envelope {r['envelope_bytes']} B in {r['compress_us']} us"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
