"""ACP frames as ``docs/wire.md`` describes them, written from that page alone:
msgpack, zstandard, hashlib and hmac, nothing of ``acp``. The tests hold it
against the runtime both ways, so the page stays true."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import msgpack
import zstandard

GOLDEN = Path(__file__).resolve().parent / "golden"
KINDS = ["command", "status", "workflow", "reply", "error", "event"]
FIELDS = ["id", "kind", "sender", "recipient", "correlation_id", "reply_to", "created_at",
          "deadline", "priority", "attempt", "traceparent", "tracestate", "tier", "tenant",
          "hash", "headers"]  # fmt: skip


class SpecError(Exception):
    pass


def _dictionary(dict_id: int) -> zstandard.ZstdCompressionDict:
    data = (GOLDEN / f"dictionary-{dict_id}.bin").read_bytes()
    kind = zstandard.DICT_TYPE_RAWCONTENT if dict_id == 1 else zstandard.DICT_TYPE_FULLDICT
    return zstandard.ZstdCompressionDict(data, dict_type=kind)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def tag(covered: bytes, body: bytes, key: tuple[str, bytes] | None = None) -> str:
    data = covered + body
    if key is None:
        return "d3." + _b64url(hashlib.sha256(data).digest()[:16])
    kid, secret = key
    return f"h3.{kid}." + _b64url(hmac.new(secret, data, hashlib.sha256).digest()[:16])


def covered_header(env: dict[str, Any]) -> bytes:
    headers = env.get("headers") or {}
    return msgpack.packb(
        [env["id"], KINDS.index(env["kind"]), env["sender"], env["recipient"],
         env.get("correlation_id"), env.get("reply_to"), float(env["created_at"]),
         env.get("deadline"), 5 if env.get("priority") is None else env["priority"],
         env.get("tier"), env.get("tenant"),
         sorted([k, v] for k, v in headers.items()) or None],
        use_bin_type=True,
    )  # fmt: skip


def frame(payload: bytes, *, envelope: bool, dict_id: int | None) -> bytes:
    flags = 0x02 if envelope else 0
    data = payload
    if dict_id is not None:
        params = zstandard.ZstdCompressionParameters(
            format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=0, write_checksum=0,
            write_dict_id=0, compression_level=3,
        )  # fmt: skip
        compressor = zstandard.ZstdCompressor(dict_data=_dictionary(dict_id),
                                              compression_params=params)  # fmt: skip
        data = compressor.compress(payload)
        flags |= 0x01 | (dict_id << 4)
    return bytes((0xA2, flags)) + _varint(len(payload)) + data


def encode(env: dict[str, Any], *, dict_id: int | None = 2,
           key: tuple[str, bytes] | None = None) -> bytes:  # fmt: skip
    """An envelope (a dict of the fields of section 2, body included) as a frame."""
    body = msgpack.packb(env["body"], use_bin_type=True)
    header = {**env, "hash": tag(covered_header(env), body, key)}
    array = [header.get(name) for name in FIELDS]
    array[1] = KINDS.index(env["kind"])
    array[15] = env.get("headers") or None
    if array[15] is None:
        array.pop()
    return frame(msgpack.packb([*array, body], use_bin_type=True), envelope=True, dict_id=dict_id)


def encode_body(body: dict[str, Any], *, dict_id: int | None = 2) -> bytes:
    return frame(msgpack.packb(body, use_bin_type=True), envelope=False, dict_id=dict_id)


def open_frame(data: bytes) -> tuple[bool, Any]:
    """(is an envelope, the payload decoded from msgpack)."""
    if data[0] != 0xA2:
        raise SpecError("not a version-2 ACP frame")
    flags = data[1]
    length, shift, pos = 0, 0, 2
    while True:
        byte = data[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            break
    payload = data[pos:]
    if flags & 0x01:
        if payload[0] & 0xE0:
            raise SpecError("a zstd frame stating its own size")
        decompressor = zstandard.ZstdDecompressor(
            dict_data=_dictionary(flags >> 4), format=zstandard.FORMAT_ZSTD1_MAGICLESS
        )
        payload = decompressor.decompress(payload, max_output_size=length)
    if len(payload) != length:
        raise SpecError("payload length does not match")
    return bool(flags & 0x02), msgpack.unpackb(payload, raw=False)


def decode(data: bytes, keys: dict[str, bytes] | None = None) -> dict[str, Any]:
    """An envelope frame's fields (the body under ``body``), its tag checked."""
    envelope, array = open_frame(data)
    if not envelope:
        raise SpecError("a bare body, not an envelope")
    body_bytes = array.pop()
    env = dict(zip(FIELDS, array + [None] * (len(FIELDS) - len(array)), strict=True))
    env["kind"] = KINDS[env["kind"]]
    env["headers"] = env["headers"] or {}
    env["priority"] = 5 if env["priority"] is None else env["priority"]
    env["attempt"] = 1 if env["attempt"] is None else env["attempt"]
    env["created_at"] = float(env["created_at"])
    given = env["hash"]
    key = None
    if given.startswith("h3."):
        kid = given.split(".")[1]
        key = (kid, (keys or {})[kid])
    if tag(covered_header(env), body_bytes, key) != given:
        raise SpecError("the tag does not match")
    env["body"] = msgpack.unpackb(body_bytes, raw=False)
    return env
