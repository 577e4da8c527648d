"""The wire format is pinned (issue 17.1): golden frames made once keep decoding to
the same values, the dictionaries' bytes and the kinds' codes are fixed, the fast
and the slow decoders agree, and an implementation written from ``docs/wire.md``
alone (``tests/wire_spec.py``) and the runtime read each other's frames."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acp.errors import DecodeError
from acp.protocol import Envelope, WireCodec
from acp.protocol.body import MessageKind
from acp.protocol.codec import KIND_CODES
from acp.protocol.integrity import KeyRing
from acp.protocol.vocabulary import dictionary
from tests import wire_spec

GOLDEN = Path(__file__).resolve().parent / "golden"
VECTORS = json.loads((GOLDEN / "vectors.json").read_text())
KEY = ("k1", b"golden-secret-key-0123456789")
RING = KeyRing({KEY[0]: KEY[1]})


def codec_for(vector: dict[str, Any]) -> WireCodec:
    keys = vector["keys"]
    ring = KeyRing({k: v.encode() for k, v in keys.items()}) if keys else None
    return WireCodec(keys=ring)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["file"] for v in VECTORS])
def test_golden_frames_decode_to_the_same_values_forever(vector: dict[str, Any]) -> None:
    frame = (GOLDEN / vector["file"]).read_bytes()
    codec = codec_for(vector)
    if vector["payload"] == "body":
        assert codec.decode_body(frame) == vector["body"]
    else:
        assert codec.decode(frame).model_dump(mode="json") == vector["envelope"]
    assert codec.fast_path_errors == 0


def test_a_golden_frame_changed_anywhere_is_refused() -> None:
    frame = bytearray((GOLDEN / "envelope-d2-keyed.bin").read_bytes())
    frame[-3] ^= 0x01
    with pytest.raises(DecodeError):
        WireCodec(keys=RING).decode(bytes(frame))


def test_the_dictionaries_bytes_are_pinned() -> None:
    """Dictionary 1 is rebuilt from word lists at import and dictionary 2 adds frozen
    entropy tables: their bytes must never move, whatever zstd runs here."""
    pins = {
        1: "124e2a7a42f09c78557985a1d31e8c5eec2e0f8a82f92bcdf601a50e8dd24993",
        2: "dc4bbf56d5fb3fbf96a0273d80a7922f074d2590e4d5122dca264604432a2a68",
    }
    for dict_id, pin in pins.items():
        data = dictionary(dict_id)[0]
        assert hashlib.sha256(data).hexdigest() == pin
        assert data == (GOLDEN / f"dictionary-{dict_id}.bin").read_bytes()
        assert pin in (Path(__file__).resolve().parents[1] / "docs" / "wire.md").read_text()


def test_kind_codes_are_a_table_not_an_order() -> None:
    assert {kind.value: code for kind, code in KIND_CODES.items()} == {
        "command": 0, "status": 1, "workflow": 2, "reply": 3, "error": 4, "event": 5,
    }  # fmt: skip
    assert sorted(KIND_CODES, key=KIND_CODES.__getitem__) == wire_spec.KINDS
    assert set(KIND_CODES) == set(MessageKind)


# -- generated envelopes ------------------------------------------------------------------

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
name = st.from_regex(r"[a-z][a-z0-9.-]{0,15}", fullmatch=True)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False,
    allow_infinity=False) | text, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(text, inner, max_size=3), max_leaves=8,
)  # fmt: skip
envelopes = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
        "kind": st.sampled_from([k.value for k in MessageKind]),
        "sender": name,
        "recipient": name,
        "body": st.dictionaries(text, json_value, max_size=5),
        "created_at": st.floats(0, 2e9) | st.integers(0, 2_000_000_000),
    },
    optional={
        "correlation_id": st.none() | name,
        "reply_to": st.none() | name,
        "deadline": st.none() | st.floats(0, 2e9),
        "priority": st.none() | st.integers(0, 9),
        "attempt": st.none() | st.integers(1, 50),
        "traceparent": st.none() | text,
        "tracestate": st.none() | text,
        "tier": st.none() | name,
        "tenant": st.none() | name,
        "headers": st.dictionaries(name, text, max_size=3),
    },
)


def as_runtime(env: dict[str, Any]) -> dict[str, Any]:
    """What the runtime reads a spec envelope as: defaults filled, times as floats."""
    out = {name: env.get(name) for name in wire_spec.FIELDS if name not in ("hash",)}
    out.update(body=env["body"], created_at=float(env["created_at"]),
               priority=5 if env.get("priority") is None else env["priority"],
               attempt=1 if env.get("attempt") is None else env["attempt"],
               headers=env.get("headers") or {})  # fmt: skip
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(env=envelopes, dict_id=st.sampled_from([None, 1, 2]), keyed=st.booleans())
def test_the_spec_and_the_runtime_read_each_others_frames(
    env: dict[str, Any], dict_id: int | None, keyed: bool
) -> None:
    codec = WireCodec(keys=RING if keyed else None)
    key = KEY if keyed else None
    frame = wire_spec.encode(env, dict_id=dict_id, key=key)
    got = codec.decode(frame).model_dump()
    got.pop("hash")
    assert got == as_runtime(env)
    again = codec.encode(Envelope.model_validate(as_runtime(env)))
    read = wire_spec.decode(again, dict([KEY]))
    read.pop("hash")
    assert read == as_runtime(env)
    assert codec.fast_path_errors == 0


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(env=envelopes, keyed=st.booleans())
def test_the_fast_and_the_slow_decoder_agree(env: dict[str, Any], keyed: bool) -> None:
    """Every payload the fast decoder accepts, it reads as the slow one does; what it
    declines (an int time, an unusual field) the slow one decides."""
    codec = WireCodec(keys=RING if keyed else None)
    frame = wire_spec.encode(env, dict_id=None, key=KEY if keyed else None)
    _, array = wire_spec.open_frame(frame)
    payload = msgpack.packb(array, use_bin_type=True)
    slow = codec._envelope(msgpack.unpackb(payload))
    fast = codec._fast_envelope(payload)
    if fast is not None:
        assert fast.model_dump() == slow.model_dump()
    assert codec.decode(frame).model_dump() == slow.model_dump()


@pytest.mark.parametrize("keyed", [False, True])
def test_frames_with_extension_headers_take_the_fast_path(
    keyed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chains, delegations, dispatches and tracked messages all carry headers: they are
    read at the cost of any other frame, and a header that is not text still is not."""
    codec = WireCodec(keys=RING if keyed else None)
    env = Envelope.for_body(
        {"cmd": "AUDIT"}, sender="c", recipient="a",
        headers={"acp-since": "1764900000.125", "acp-root": "m1", "acp-res": "{}"},
    )  # fmt: skip
    frame = codec.encode(env)

    def slow(payload: Any) -> Envelope:
        raise AssertionError("the slow path read a well-formed frame")

    with monkeypatch.context() as patch:
        patch.setattr(codec, "_envelope", slow)
        assert codec.decode(frame).headers == env.headers
    array = msgpack.unpackb(codec._quick_open(frame, 0x02))
    array[-2] = {"acp-root": 7}  # the extension headers: the slow path names the problem
    assert codec._fast_envelope(msgpack.packb(array)) is None
    with pytest.raises(DecodeError, match="map strings to strings"):
        codec._envelope(array)


def test_a_fast_path_failure_on_a_good_frame_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = WireCodec()
    frame = (GOLDEN / "envelope-d2-keyless.bin").read_bytes()

    def broken(data: bytes) -> None:
        raise RuntimeError("a bug in the fast path")

    monkeypatch.setattr(codec, "_fast_envelope", broken)
    assert codec.decode(frame).id == "0193a5c2e4f1b2c3d4e5f60718293a4b"
    assert codec.fast_path_errors == 1
    assert isinstance(codec.last_fast_path_error, RuntimeError)
    with pytest.raises(DecodeError):
        codec.decode(b"\xa2\x02")  # bad on both paths: an error, not a fast-path bug
    assert codec.fast_path_errors == 1
