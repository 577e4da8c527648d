"""Wire codec: round trips keep every field, and bad bytes only ever raise DecodeError."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acp.errors import ConfigError, DecodeError, FrameTooLarge, IntegrityError
from acp.protocol import Envelope, KeyRing, MessageKind, WireCodec, body_bytes, make_tag, verify_tag
from acp.protocol.check import check_bodies, same_json

PIPELINE = {
    "cmd": "PIPELINE_STATUS",
    "component_id": "orders_etl",
    "data_flow": {"ingestion_rate": "310GB/day", "processing_lag": "4m", "quality_score": 0.97},
    "infrastructure": {"workers": 12, "queue": "healthy"},
    "outputs": ["daily_orders", "refunds"],
    "respond_format": "STRUCTURED_JSON",
    "x_unknown": {"nested": [1, 2.5, True, None, "é"]},
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
bodies = st.dictionaries(st.text(min_size=1, max_size=16), json_values, max_size=8)


def test_envelope_round_trip_keeps_every_field() -> None:
    codec = WireCodec()
    env = Envelope.for_body(
        PIPELINE,
        sender="pipeline-monitor",
        recipient="data-engineer",
        correlation_id="c1",
        reply_to="pipeline-monitor.replies",
        deadline=2_000_000_000.5,
        priority=8,
        attempt=3,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tier="opus",
        tenant="acme",
        headers={"x-k": "v"},
    )
    back = codec.decode(codec.encode(env))
    assert back.kind is MessageKind.COMMAND
    assert same_json(back.body, PIPELINE)
    assert back.hash is not None
    assert back == env.evolve(hash=back.hash)


def test_defaults_survive_trailing_field_trimming() -> None:
    codec = WireCodec()
    env = Envelope.for_body({"data_platform": {"running": 3}}, sender="a", recipient="b")
    back = codec.decode(codec.encode(env))
    assert (back.priority, back.attempt, back.headers, back.kind) == (5, 1, {}, MessageKind.STATUS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_any_json_body_round_trips_exactly(body: dict[str, Any]) -> None:
    codec = WireCodec()
    assert same_json(codec.decode_body(codec.encode_body(body)), body)
    env = Envelope.for_body(body, sender="s", recipient="r")
    assert same_json(codec.decode(codec.encode(env)).body, body)


def _frames() -> list[bytes]:
    codec = WireCodec()
    out = []
    for i in range(40):
        body = {"cmd": "TASK", "n": i, "text": "x" * (i * 7), "items": list(range(i % 9))}
        out.append(codec.encode(Envelope.for_body(body, sender="s", recipient="r")))
        out.append(codec.encode_body(body))
    return out


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            del data[rng.randrange(len(data)) :]
        elif op == 2:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif op == 3 and len(data) > 2:
            data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            data[2:2] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
    return bytes(data)


def test_twelve_thousand_random_and_mutated_frames_only_raise_decode_error() -> None:
    """Both entry points only raise ``DecodeError``, and the fast and the slow envelope
    decoders read every frame the fast one takes alike."""
    rng = random.Random(20261126)
    codec = WireCodec(max_frame=64 * 1024)
    seeds = _frames()
    outcomes = {"ok": 0, "decode_error": 0, "fast_agreed": 0}
    for i in range(12_000):
        if i % 3 == 0:
            frame = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
            if i % 2:
                frame = bytes((0xA2, rng.choice((0x00, 0x01, 0x02, 0x03, 0x13, 0x12)))) + frame
        else:
            frame = _mutate(rng, rng.choice(seeds))
        for decode in (codec.decode, codec.decode_body):
            try:
                decode(frame)
                outcomes["ok"] += 1
            except DecodeError:
                outcomes["decode_error"] += 1
        outcomes["fast_agreed"] += _fast_and_slow_agree(codec, frame)
    assert outcomes["decode_error"] > 10_000
    outcomes["fast_agreed"] += sum(_fast_and_slow_agree(codec, seed) for seed in seeds)
    assert outcomes["fast_agreed"] > len(seeds) // 2, "the fast path took frames to compare"
    assert codec.fast_path_errors == 0, codec.last_fast_path_error


def _fast_and_slow_agree(codec: WireCodec, frame: bytes) -> int:
    """1 when the fast path decoded ``frame`` and the slow path read it the same way;
    0 when the fast path declined it (or raised: the slow path decides)."""
    try:
        data = codec._quick_open(frame, 0x02)
        fast = codec._fast_envelope(data) if data is not None else None
    except Exception:
        fast = None
    if fast is None:
        return 0
    slow = codec._envelope(codec._open(frame, 0x02))
    assert fast.model_dump() == slow.model_dump()
    return 1


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    codec = WireCodec()
    for decode in (codec.decode, codec.decode_body):
        with contextlib.suppress(DecodeError):
            decode(data)


def test_oversized_frame_refused_before_decompression() -> None:
    codec = WireCodec(max_frame=1024)
    with pytest.raises(FrameTooLarge) as info:
        codec.decode(b"\xa2\x03" + b"\x00" * 2000)
    assert info.value.size == 2002
    assert info.value.limit == 1024


def test_small_frame_claiming_huge_payload_is_refused() -> None:
    codec = WireCodec()
    small = WireCodec().encode_body({"k": "v" * 100})
    # rewrite the length varint to claim 64 MiB
    forged = small[:2] + bytes((0x80, 0x80, 0x80, 0x20)) + small[4:]
    with pytest.raises(FrameTooLarge):
        codec.decode_body(forged)


def test_zstd_frame_stating_its_own_size_is_refused() -> None:
    import zstandard

    inner = msgpack.packb({"a": "b" * 100})
    bomb = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters(
            format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=1
        )
    ).compress(inner)
    frame = bytes((0xA2, 0x11, len(inner) & 0x7F | 0x80, len(inner) >> 7)) + bomb
    with pytest.raises(DecodeError) as info:
        WireCodec().decode_body(frame)
    assert info.value.reason == "bad_compression"


def _frame_with_dictionary(env: Envelope, dict_id: int) -> bytes:
    """``env`` framed as a sender compressing with dictionary ``dict_id`` would."""
    import zstandard

    from acp.protocol.codec import zstd_dictionary, zstd_parameters

    plain = WireCodec(compress=False).encode(env)
    length, payload = plain[2] & 0x7F | plain[3] << 7, plain[4:]
    assert len(payload) == length >= 0x80
    packed = zstandard.ZstdCompressor(
        dict_data=zstd_dictionary(dict_id), compression_params=zstd_parameters()
    ).compress(payload)
    return bytes((0xA2, 0x03 | dict_id << 4)) + plain[2:4] + packed


def test_new_frames_use_dictionary_two_and_frames_of_dictionary_one_still_decode() -> None:
    codec = WireCodec()
    env = Envelope.for_body(PIPELINE, sender="pipeline-monitor", recipient="data-engineer")
    frame = codec.encode(env)
    assert frame[1] == 0x23  # compressed envelope, dictionary 2
    assert _frame_with_dictionary(env, 2) == frame
    old = _frame_with_dictionary(env, 1)  # as written before dictionary 2, still in Redis
    assert old != frame
    # what a writer sends while readers that know only dictionary 1 still run
    assert WireCodec(dictionary=1).encode(env) == old
    body_frame = WireCodec(dictionary=1).encode_body(PIPELINE)
    assert body_frame[1] == 0x11
    assert codec.decode_body(body_frame) == PIPELINE
    decoded = codec.decode(old)
    assert decoded == codec.decode(frame)
    assert decoded.model_dump(exclude={"hash"}) == env.model_dump(exclude={"hash"})


def test_dictionary_two_is_dictionary_one_behind_entropy_tables() -> None:
    import zstandard

    from acp.protocol.vocabulary import DICTIONARY_ID, DICTIONARY_IDS, dictionary, dictionary_bytes

    assert (DICTIONARY_ID, DICTIONARY_IDS) == (2, (1, 2))
    assert dictionary(1) == (dictionary_bytes(), False)
    full, is_full = dictionary(2)
    assert is_full
    assert full.endswith(dictionary_bytes())
    assert full[:4] == bytes.fromhex("37a430ec")  # zstd's dictionary magic
    # zstd parses the entropy tables (a bad header fails here, not on the first frame)
    zstandard.ZstdCompressionDict(full, dict_type=zstandard.DICT_TYPE_FULLDICT).precompute_compress(
        level=1
    )
    with pytest.raises(KeyError):
        dictionary(3)


def test_a_dictionary_this_version_does_not_know_cannot_be_chosen() -> None:
    with pytest.raises(ConfigError, match="wire dictionary 7"):
        WireCodec(dictionary=7)


def test_unknown_dictionary_is_named() -> None:
    codec = WireCodec()
    frame = codec.encode(Envelope.for_body(PIPELINE, sender="a", recipient="b"))
    with pytest.raises(DecodeError) as info:
        codec.decode(frame[:1] + bytes((0x33,)) + frame[2:])
    assert info.value.reason == "unknown_dictionary"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "truncated"),
        (b"\x00\x00\x00", "bad_magic"),
        (b"\xa7\x00\x00", "unsupported_version"),
        (b"\xa1\x03\x05\x00\x00", "unsupported_version"),  # version 1: body inline, JSON tags
        (b"\xa2\x08\x00", "bad_flags"),
        (b"\xa2\x00\x01\xc1", "wrong_frame_type"),
        (b"\xa2\x02\x01\xc1", "bad_msgpack"),
        (b"\xa2\x02\x05\xc0", "length_mismatch"),
    ],
)
def test_decode_errors_name_the_problem(frame: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        WireCodec().decode(frame)
    assert info.value.reason == reason


def test_bad_header_field_is_named() -> None:
    payload = msgpack.packb(
        ["id1", 0, "s", "r", None, None, "yesterday", msgpack.packb({"cmd": "X"})]
    )
    frame = bytes((0xA2, 0x02, len(payload))) + payload
    with pytest.raises(DecodeError, match="created_at"):
        WireCodec().decode(frame)


def test_msgpack_extension_types_are_refused() -> None:
    payload = msgpack.packb({"a": msgpack.ExtType(5, b"xx")})
    with pytest.raises(DecodeError) as info:
        WireCodec().decode_body(bytes((0xA2, 0x00, len(payload))) + payload)
    assert info.value.reason == "bad_msgpack"


def test_tampered_body_fails_integrity() -> None:
    codec = WireCodec(compress=False)
    frame = codec.encode(
        Envelope.for_body({"cmd": "PAY", "amount": 100_000}, sender="a", recipient="b")
    )
    tampered = frame.replace(msgpack.packb(100_000), msgpack.packb(900_000))
    assert tampered != frame
    with pytest.raises(IntegrityError):
        codec.decode(tampered)


def test_hmac_keys_rotate_without_downtime() -> None:
    old = WireCodec(keys=KeyRing({"k1": b"a" * 32}))
    both = WireCodec(keys=KeyRing({"k1": b"a" * 32, "k2": b"b" * 32}))
    new_only = WireCodec(keys=KeyRing({"k2": b"b" * 32}))
    env = Envelope.for_body({"cmd": "X"}, sender="a", recipient="b")
    from_old = old.encode(env)
    from_both = both.encode(env)
    assert both.decode(from_old).hash.startswith("h3.k1.")  # type: ignore[union-attr]
    assert new_only.decode(from_both).hash.startswith("h3.k2.")  # type: ignore[union-attr]
    with pytest.raises(IntegrityError) as info:
        new_only.decode(from_old)
    assert info.value.key_id == "k1"
    with pytest.raises(IntegrityError, match="unsigned"):
        both.decode(WireCodec().encode(env))


def test_codec_check_reports_figures_in_one_run() -> None:
    report = check_bodies(
        [PIPELINE, {"data_platform": {"pipelines": {"running": 2}}, "hash": "x"}], repeats=2
    )
    assert report.messages == 2
    assert report.mismatches == 0
    assert 0 < report.wire_bytes < report.json_bytes
    assert report.codec_roundtrip_us > 0
    assert report.stdlib_json_roundtrip_us > 0


def test_same_json_tells_bool_from_int() -> None:
    assert not same_json({"a": True}, {"a": 1})
    assert not same_json([1], [1.0])
    assert same_json({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]})


def test_the_tag_covers_the_body_bytes_as_they_travel() -> None:
    codec = WireCodec()
    env = Envelope.for_body(
        {"cmd": "PIPELINE_STATUS", "b": [1, 2.5, "x"], "a": None}, sender="s", recipient="r"
    )
    back = codec.decode(codec.encode(env))
    header = codec.covered_header(env)
    assert back.hash == make_tag(body_bytes(env.body), header=header)
    assert back.hash is not None
    assert back.hash.startswith("d3.")
    # re-encoding a decoded envelope reproduces the same body bytes, so it keeps its tag
    again = codec.decode(codec.encode(back))
    assert again.hash == back.hash
    assert again.body == env.body
    # the same JSON value with its keys in another order is another byte string
    reordered = {"a": None, "b": [1, 2.5, "x"], "cmd": "PIPELINE_STATUS"}
    with pytest.raises(IntegrityError, match="digest"):
        verify_tag(body_bytes(reordered), back.hash, header=header)
    with pytest.raises(IntegrityError, match="scheme 'd1'"):
        verify_tag(body_bytes(env.body), "d1.AAAAAAAAAAAAAAAAAAAAAA")
