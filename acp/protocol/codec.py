"""The wire codec: ACP messages as small versioned frames of compressed msgpack.

Frame layout (all multi-byte integers little-endian varints)::

    byte 0    0xA0 | version          (version 2; 0xA2)
    byte 1    flags                   bit 0: payload compressed
                                      bit 1: payload is an envelope (else a bare body)
                                      bits 4-7: dictionary id (acp.protocol.vocabulary;
                                      new frames use 2, frames with 1 still decode)
    varint    payload length before compression
    rest      payload: msgpack, zstd-compressed with the preset dictionary when that is smaller

An envelope payload is a msgpack array of header fields in a fixed order with
the body last, as a binary field holding the body's own msgpack: those bytes
are what the integrity tag covers, so the receiver checks them before it
parses them. Trailing empty header fields are cut. Version 1 carried the body
inline and tagged its canonical JSON. Decoding checks sizes before
decompressing (a small frame cannot expand into a huge one) and turns every
failure into a ``DecodeError`` with a stable ``reason``.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from typing import Any

import msgpack
import zstandard

from acp.errors import ConfigError, DecodeError, FrameTooLarge
from acp.protocol.body import MessageKind
from acp.protocol.envelope import Envelope, _str_map
from acp.protocol.integrity import KeyRing, digest_tag, make_tag, verify_tag
from acp.protocol.vocabulary import DICTIONARY_ID, DICTIONARY_IDS, dictionary

__all__ = ["DEFAULT_MAX_FRAME", "KIND_CODES", "WireCodec", "zstd_dictionary", "zstd_parameters"]

DEFAULT_MAX_FRAME = 1 << 20
VERSION = 2
_MAGIC = 0xA0
_F_COMPRESSED = 0x01
_F_ENVELOPE = 0x02
_KNOWN_FLAGS = _F_COMPRESSED | _F_ENVELOPE
_MIN_COMPRESS = 24

#: each kind's code on the wire, fixed forever (docs/wire.md): never derived from the
#: order of ``MessageKind``, whose members may be reordered; a new kind takes the next
KIND_CODES: dict[MessageKind, int] = {
    MessageKind.COMMAND: 0,
    MessageKind.STATUS: 1,
    MessageKind.WORKFLOW: 2,
    MessageKind.REPLY: 3,
    MessageKind.ERROR: 4,
    MessageKind.EVENT: 5,
}
if set(KIND_CODES) != set(MessageKind) or sorted(KIND_CODES.values()) != list(
    range(len(KIND_CODES))
):
    raise ImportError("every MessageKind needs its own wire code in KIND_CODES, 0 to n-1")
_KINDS = tuple(sorted(KIND_CODES, key=KIND_CODES.__getitem__))
_KIND_CODE = KIND_CODES

# Header fields after (id, kind, sender, recipient), in wire order. Appending is
# backward compatible; reordering is a new version.
_OPTIONAL = (
    "correlation_id",
    "reply_to",
    "created_at",
    "deadline",
    "priority",
    "attempt",
    "traceparent",
    "tracestate",
    "tier",
    "tenant",
    "hash",
    "headers",
)
_STR = (str,)
_STR_OR_NONE = (str, type(None))
_NUM_OR_NONE = (int, float, type(None))
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "correlation_id": _STR_OR_NONE,
    "reply_to": _STR_OR_NONE,
    "created_at": (int, float),
    "deadline": _NUM_OR_NONE,
    "priority": (int,),
    "attempt": (int,),
    "traceparent": _STR_OR_NONE,
    "tracestate": _STR_OR_NONE,
    "tier": _STR_OR_NONE,
    "tenant": _STR_OR_NONE,
    "hash": _STR_OR_NONE,
    "headers": (dict,),
}
_DEFAULTS = {"priority": 5, "attempt": 1, "headers": None}
#: every optional field at its default (headers get a fresh dict per message)
_BLANK: dict[str, Any] = {name: _DEFAULTS.get(name) for name in _OPTIONAL}


_FIRST = _MAGIC | VERSION
_HEADS = [bytes((_FIRST, f)) for f in range(256)]
_TEXT = frozenset((str, type(None)))
#: the envelope fields of a frame's header, in wire order, up to the tag
_HEAD_FIELDS = operator.itemgetter("id", "kind", "sender", "recipient", *_OPTIONAL[:-2])
#: None-padding that brings any valid header to its full length
_PAD = [[None] * (len(_OPTIONAL) - n) for n in range(len(_OPTIONAL) + 1)]
_BYTES = [bytes((b,)) for b in range(256)]
_unpackb = msgpack.unpackb
_N_KINDS = len(_KINDS)
#: a header with every optional field: (id, kind, sender, recipient), the optional ones, the body
_LONGEST = 5 + len(_OPTIONAL)


#: the latest time a message may carry (year 5138): later, or not finite, is not a time
_MAX_TIME = 1e11


def _covered(
    pack: Callable[[Any], bytes],
    id_: str, kind: int, sender: str, recipient: str, corr: str | None, reply_to: str | None,
    created: float, deadline: float | None, priority: int, tier: str | None,
    tenant: str | None, headers: dict[str, str] | None,
) -> bytes:  # fmt: skip
    """The header fields the integrity tag covers, canonically packed (see
    ``acp.protocol.integrity``): everything that routes, prices or names a message."""
    return pack(
        [id_, kind, sender, recipient, corr, reply_to, float(created), deadline, priority,
         tier, tenant, sorted(headers.items()) if headers else None]
    )  # fmt: skip


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed in ACP")


def zstd_parameters() -> zstandard.ZstdCompressionParameters:
    """How frames are compressed, chosen by measurement on ACP bodies.

    zstd's fast strategy with ``target_length`` 1 skips Huffman coding of
    literals, which costs a fixed ~2 us per frame and saves little once the
    dictionary supplies the long matches; ``min_match`` 4 finds short keys.
    See ``acp codec check`` and ``bench/dictionary.py`` for the figures.
    """
    return zstandard.ZstdCompressionParameters(
        window_log=15,
        hash_log=14,
        chain_log=13,
        search_log=1,
        min_match=4,
        target_length=1,
        strategy=zstandard.STRATEGY_FAST,
        write_content_size=0,
        write_checksum=0,
        write_dict_id=0,
        format=zstandard.FORMAT_ZSTD1_MAGICLESS,
    )


def zstd_dictionary(dict_id: int) -> zstandard.ZstdCompressionDict:
    """Wire dictionary ``dict_id`` (see ``acp.protocol.vocabulary``) as zstd takes it."""
    data, full = dictionary(dict_id)
    kind = zstandard.DICT_TYPE_FULLDICT if full else zstandard.DICT_TYPE_RAWCONTENT
    return zstandard.ZstdCompressionDict(data, dict_type=kind)


def _decompressor(zdict: zstandard.ZstdCompressionDict) -> Callable[..., bytes]:
    return zstandard.ZstdDecompressor(
        dict_data=zdict, format=zstandard.FORMAT_ZSTD1_MAGICLESS
    ).decompress


class _Zstd(threading.local):
    """zstd contexts per thread (they are not safe to share); ``threading.local``
    runs ``__init__`` again, with the same arguments, in each new thread."""

    def __init__(self, dict_id: int) -> None:
        params = zstd_parameters()
        zdict = zstd_dictionary(dict_id)
        zdict.precompute_compress(compression_params=params)
        #: dictionary id -> the decompressor's bound method (others added when met)
        self.decompress = {dict_id: _decompressor(zdict)}
        # Bound methods in one tuple: a single thread-local lookup per frame.
        self.ops = (
            msgpack.Packer(use_bin_type=True).pack,
            zstandard.ZstdCompressor(dict_data=zdict, compression_params=params).compress,
            self.decompress[dict_id],
        )

    def decompressor(self, dict_id: int) -> Callable[..., bytes] | None:
        """The decompressor for frames made with ``dict_id``; None if it is unknown."""
        found = self.decompress.get(dict_id)
        if found is None and dict_id in DICTIONARY_IDS:
            found = self.decompress[dict_id] = _decompressor(zstd_dictionary(dict_id))
        return found


def _bad_start(first: int, flags: int) -> None:
    """Say precisely what is wrong with a frame's first two bytes (cold path)."""
    if first & 0xF0 != _MAGIC:
        raise DecodeError("bad_magic", f"first byte 0x{first:02x} is not an ACP frame", offset=0)
    if first & 0x0F != VERSION:
        raise DecodeError(
            "unsupported_version",
            f"frame version {first & 0x0F}, this codec reads {VERSION}",
            offset=0,
        )
    if flags & 0x0F & ~_KNOWN_FLAGS:
        raise DecodeError("bad_flags", f"unknown flag bits 0x{flags:02x}", offset=1)
    what = "an envelope" if flags & _F_ENVELOPE else "a bare body"
    raise DecodeError("wrong_frame_type", f"frame holds {what}", offset=1)


def _unencodable(exc: Exception) -> DecodeError:
    return DecodeError("unencodable", f"message holds a value msgpack cannot carry: {exc}")


def _read_varint(frame: bytes, pos: int) -> tuple[int, int]:
    """Decode a little-endian base-128 varint; (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(frame) or shift > 28:
            raise DecodeError("bad_length", "length varint is truncated or too long", offset=pos)
        byte = frame[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class WireCodec:
    """Encode envelopes (and bare bodies) to frames and back.

    ``keys`` switches integrity tags from digests to HMAC; ``require_signatures``
    (default: whether keys are given) refuses unsigned frames, False accepts them
    during a rollout of keys; ``legacy_signatures`` accepts version-2 signatures,
    which cover the body only (during an upgrade). ``verify=False`` skips checking
    tags on decode (for tools that only inspect). ``dictionary`` is the
    one new frames are compressed with; frames made with any known dictionary
    decode. A reader learns a dictionary before writers may use it: while
    readers older than dictionary 2 still run, write with ``dictionary=1``.
    """

    def __init__(
        self,
        *,
        keys: KeyRing | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        compress: bool = True,
        verify: bool = True,
        dictionary: int = DICTIONARY_ID,
        require_signatures: bool | None = None,
        legacy_signatures: bool = False,
    ) -> None:
        if require_signatures and keys is None:
            raise ConfigError(
                "signatures are required but no key ring is configured (set ACP_HMAC_KEYS "
                "or ACP_HMAC_KEYS_FILE)"
            )
        if dictionary not in DICTIONARY_IDS:
            raise ConfigError(
                f"wire dictionary {dictionary} is unknown; this version knows {DICTIONARY_IDS}"
            )
        self.keys = keys
        self.require_signatures = (
            keys is not None if require_signatures is None else require_signatures
        )
        self.legacy_signatures = legacy_signatures
        self.max_frame = max_frame
        self.compress_enabled = compress
        self.verify = verify
        self.dictionary = dictionary
        #: the flags of a compressed frame made here (envelope bit aside)
        self._compressed = _F_COMPRESSED | (dictionary << 4)
        self._zstd = _Zstd(dictionary)
        #: frames the fast decoding path raised on (the slow path then decided)
        self.fast_path_errors = 0
        self.last_fast_path_error: Exception | None = None

    # -- encoding ---------------------------------------------------------------

    def encode(self, env: Envelope) -> bytes:
        """The frame for ``env``, sealed with an integrity tag if it has none."""
        fields = env.__dict__
        pack, compress, _ = self._zstd.ops
        try:
            body = pack(fields["body"])
            header: list[Any] = [*_HEAD_FIELDS(fields), None, fields["headers"] or None, body]
            header[1] = _KIND_CODE[header[1]]
            tag = fields["hash"]
            if not tag:
                (id_, kind, sender, recipient, corr, reply_to, created, deadline, priority, _,
                 _, _, tier, tenant) = header[:14]  # fmt: skip
                covered = _covered(pack, id_, kind, sender, recipient, corr, reply_to, created,
                                   deadline, priority, tier, tenant, header[15])  # fmt: skip
                keys = self.keys
                tag = (
                    digest_tag(body, covered)
                    if keys is None
                    else make_tag(body, keys, header=covered)
                )
            header[14] = tag
            # Trailing empty header fields are cut, the body staying last: only the
            # extension headers can be empty there, since a tag always precedes them.
            if header[-2] is None:
                del header[-2]
            raw = pack(header)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _unencodable(exc) from exc
        return self._frame(raw, _F_ENVELOPE, compress)

    def covered_header(self, env: Envelope) -> bytes:
        """The canonical header bytes ``env``'s integrity tag covers with its body."""
        f = env.__dict__
        return _covered(
            self._zstd.ops[0], f["id"], _KIND_CODE[f["kind"]], f["sender"], f["recipient"],
            f["correlation_id"], f["reply_to"], f["created_at"], f["deadline"], f["priority"],
            f["tier"], f["tenant"], f["headers"] or None,
        )  # fmt: skip

    def encode_body(self, body: dict[str, Any]) -> bytes:
        """A frame holding only a body: the unit the codec check compares with JSON."""
        pack, compress, _ = self._zstd.ops
        return self._frame(self._pack(body, pack), 0, compress)

    @staticmethod
    def _pack(payload: Any, pack: Callable[[Any], bytes]) -> bytes:
        try:
            return pack(payload)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _unencodable(exc) from exc

    def _frame(self, raw: bytes, flags: int, compress: Callable[[bytes], bytes]) -> bytes:
        n = len(raw)
        if n > self.max_frame:
            raise FrameTooLarge(n, self.max_frame, what="message")
        data = raw
        if self.compress_enabled and n >= _MIN_COMPRESS:
            packed = compress(raw)
            if len(packed) < n:
                data = packed
                flags |= self._compressed
        if n < 0x80:
            return _HEADS[flags] + _BYTES[n] + data
        if n < 0x4000:
            return bytes((_FIRST, flags, (n & 0x7F) | 0x80, n >> 7)) + data
        return _HEADS[flags] + _varint(n) + data

    # -- decoding ---------------------------------------------------------------

    def decode(self, frame: bytes) -> Envelope:
        """The envelope in ``frame``; any problem raises ``DecodeError``."""
        try:
            data = self._quick_open(frame, _F_ENVELOPE)
            if data is not None:
                env = self._fast_envelope(data)
                if env is not None:
                    return env
        except Exception as exc:  # the slow path decides, and names any real error
            env = self._envelope(self._open(frame, _F_ENVELOPE))
            self._fast_path_failed(exc)
            return env
        return self._envelope(self._open(frame, _F_ENVELOPE))

    def _fast_path_failed(self, exc: Exception) -> None:
        """The fast path raised on a frame the slow path then read fine: a bug there,
        counted (``fast_path_errors``, the latest kept) so that it is seen. Bad frames
        raise on both paths and are not counted."""
        self.fast_path_errors += 1
        self.last_fast_path_error = exc

    def _quick_open(self, frame: bytes, kind_bits: int) -> bytes | None:
        """The payload of a common well-formed frame (one- or two-byte length), by a
        straight-line path; None (or any exception) sends the caller to ``_open``,
        which checks everything and names the precise error."""
        flags = frame[1]
        if frame[0] != _FIRST or len(frame) > self.max_frame:
            return None
        b2 = frame[2]
        if b2 < 0x80:
            length, pos = b2, 3
        elif not frame[3] & 0x80:
            length, pos = (b2 & 0x7F) | (frame[3] << 7), 4
        else:
            return None
        data: bytes
        if flags == self._compressed | kind_bits:
            if not 0 < length <= self.max_frame or frame[pos] & 0xE0:
                return None
            data = self._zstd.ops[2](frame[pos:], max_output_size=length)
        elif flags == kind_bits:
            data = frame[pos:]
        else:
            return None
        return data if len(data) == length else None

    def _fast_envelope(self, data: bytes) -> Envelope | None:
        """The envelope when every field is as a well-behaved sender writes it and its
        tag matches, else None: ``_envelope`` then names what is wrong. Everything is
        spelled out in one function because it runs once per message read."""
        payload = _unpackb(data, ext_hook=_no_ext)
        if type(payload) is not list or not 5 <= len(payload) <= _LONGEST:
            return None
        packed = payload.pop()
        payload += _PAD[len(payload) - 4]
        (id_, kind, sender, recipient, corr, reply_to, created, deadline, prio, attempt, tp, ts,
         tier, tenant, tag, hdrs) = payload  # fmt: skip
        if not (
            type(id_) is str
            and id_
            and type(sender) is str
            and sender
            and type(recipient) is str
            and recipient
            and type(kind) is int
            and 0 <= kind < _N_KINDS
            and type(created) is float
            and 0.0 <= created < _MAX_TIME
            and type(packed) is bytes
            and (hdrs is None or _str_map(hdrs))
            and (deadline is None or (type(deadline) is float and 0.0 <= deadline < _MAX_TIME))
            and (prio is None or (type(prio) is int and 0 <= prio <= 9))
            and (attempt is None or (type(attempt) is int and attempt >= 1))
            and type(corr) in _TEXT
            and type(reply_to) in _TEXT
            and type(tp) in _TEXT
            and type(ts) in _TEXT
            and type(tier) in _TEXT
            and type(tenant) in _TEXT
            and type(tag) is str
        ):
            return None
        if self.verify:
            priority = 5 if prio is None else prio
            covered = _covered(self._zstd.ops[0], id_, kind, sender, recipient, corr, reply_to,
                               created, deadline, priority, tier, tenant, hdrs)  # fmt: skip
            if self.keys is None and not self.require_signatures:
                if tag != digest_tag(packed, covered):
                    return None  # a version-2 tag or a bad one: the slow path says which
            else:
                verify_tag(packed, tag, self.keys, header=covered,
                           require=self.require_signatures, legacy=self.legacy_signatures)  # fmt: skip
        body = _unpackb(packed, ext_hook=_no_ext)
        if type(body) is not dict:
            return None
        return Envelope._trusted(
            {
                "id": id_,
                "kind": _KINDS[kind],
                "sender": sender,
                "recipient": recipient,
                "body": body,
                "correlation_id": corr,
                "reply_to": reply_to,
                "created_at": created,
                "deadline": deadline,
                "priority": 5 if prio is None else prio,
                "attempt": 1 if attempt is None else attempt,
                "traceparent": tp,
                "tracestate": ts,
                "tier": tier,
                "tenant": tenant,
                "hash": tag,
                "headers": hdrs or {},
            }
        )

    def decode_body(self, frame: bytes) -> dict[str, Any]:
        try:
            data = self._quick_open(frame, 0)
            if data is not None:
                body = _unpackb(data, ext_hook=_no_ext)
                if type(body) is dict:
                    return body
        except Exception as exc:
            body = self._body(frame)
            self._fast_path_failed(exc)
            return body
        return self._body(frame)

    def _body(self, frame: bytes) -> dict[str, Any]:
        payload = self._open(frame, 0)
        if not isinstance(payload, dict):
            raise DecodeError("bad_body", f"body is a {type(payload).__name__}, not an object")
        return payload

    def _open(self, frame: bytes, kind_bits: int) -> Any:
        if type(frame) is not bytes and not isinstance(frame, bytes | bytearray | memoryview):
            raise DecodeError("not_bytes", f"expected bytes, got {type(frame).__name__}")
        size = len(frame)
        if size > self.max_frame:
            raise FrameTooLarge(size, self.max_frame)
        if size < 3:
            raise DecodeError("truncated", f"frame of {size} bytes is shorter than its header")
        first, flags = frame[0], frame[1]
        if first != _FIRST or flags & 0x0E != kind_bits:
            _bad_start(first, flags)
        b2 = frame[2]
        if b2 < 0x80:
            length, pos = b2, 3
        elif size > 3 and frame[3] < 0x80:
            length, pos = (b2 & 0x7F) | (frame[3] << 7), 4
        else:
            length, pos = _read_varint(frame, 2)
        if length > self.max_frame:
            raise FrameTooLarge(length, self.max_frame, what="decompressed payload")
        data: bytes | memoryview = memoryview(frame)[pos:]
        if flags & _F_COMPRESSED:
            dict_id = flags >> 4
            decompress = self._zstd.decompressor(dict_id)
            if decompress is None:
                raise DecodeError(
                    "unknown_dictionary", f"dictionary {dict_id} is not known here", offset=1
                )
            # Our frames never state their own size; one that does could make
            # zstd allocate whatever it claims, past our length check.
            if len(data) < 2 or data[0] & 0xE0:
                raise DecodeError(
                    "bad_compression",
                    "zstd frame header is short or states its own size",
                    offset=pos,
                )
            try:
                data = decompress(data, max_output_size=length)
            except zstandard.ZstdError as exc:
                raise DecodeError("bad_compression", str(exc), offset=pos) from exc
        elif flags >> 4:
            raise DecodeError("bad_flags", "dictionary id set on an uncompressed frame", offset=1)
        if len(data) != length:
            raise DecodeError(
                "length_mismatch", f"payload is {len(data)} bytes, header says {length}", offset=pos
            )
        try:
            # msgpack >= 1.0 defaults: str keys only (strict_map_key), text as str, lists.
            payload = msgpack.unpackb(data, ext_hook=_no_ext)
        except Exception as exc:  # msgpack raises many unrelated types for bad input
            raise DecodeError("bad_msgpack", f"{type(exc).__name__}: {exc}", offset=pos) from exc
        return payload

    def _envelope(self, payload: Any) -> Envelope:
        if not isinstance(payload, list) or len(payload) < 5:
            raise DecodeError(
                "bad_header", "envelope payload must be an array of header fields and a body"
            )
        packed = payload[-1]
        if type(packed) is not bytes:
            raise DecodeError("bad_body", f"body field is a {type(packed).__name__}, not bytes")
        id_, kind_code, sender, recipient = payload[:4]
        extra = payload[4:-1]
        if len(extra) > len(_OPTIONAL):
            raise DecodeError(
                "bad_header",
                f"{len(extra)} optional header fields; this version knows {len(_OPTIONAL)}",
            )
        for name, value in (("id", id_), ("sender", sender), ("recipient", recipient)):
            if not isinstance(value, _STR) or not value:
                raise DecodeError("bad_header", f"header field {name!r} must be a non-empty string")
        if (
            not isinstance(kind_code, int)
            or isinstance(kind_code, bool)
            or not 0 <= kind_code < len(_KINDS)
        ):
            raise DecodeError("bad_header", f"header field 'kind' has unknown code {kind_code!r}")
        fields: dict[str, Any] = dict(_BLANK)
        for name, value in zip(_OPTIONAL, extra, strict=False):
            if value is None and name in _DEFAULTS:
                continue
            if not isinstance(value, _FIELD_TYPES[name]) or isinstance(value, bool):
                raise DecodeError(
                    "bad_header", f"header field {name!r} has type {type(value).__name__}"
                )
            fields[name] = value
        if not 0 <= fields["priority"] <= 9 or fields["attempt"] < 1:
            raise DecodeError("bad_header", "header field 'priority' or 'attempt' out of range")
        headers = fields["headers"]
        if headers is None:
            fields["headers"] = {}
        elif not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise DecodeError("bad_header", "header field 'headers' must map strings to strings")
        created = fields["created_at"]
        if created is None:
            raise DecodeError("bad_header", "header field 'created_at' is missing")
        for name in ("created_at", "deadline"):
            value = fields[name]
            if value is not None and not 0 <= value < _MAX_TIME:  # NaN fails both
                raise DecodeError("bad_header", f"header field {name!r} is not a time: {value!r}")
        fields["created_at"] = float(created)
        if self.verify:
            covered = _covered(
                self._zstd.ops[0], id_, kind_code, sender, recipient, fields["correlation_id"],
                fields["reply_to"], fields["created_at"], fields["deadline"], fields["priority"],
                fields["tier"], fields["tenant"], fields["headers"],
            )  # fmt: skip
            verify_tag(packed, fields["hash"], self.keys, header=covered,
                       require=self.require_signatures, legacy=self.legacy_signatures)  # fmt: skip
        try:
            body = msgpack.unpackb(packed, ext_hook=_no_ext)
        except Exception as exc:  # as in _open: many unrelated types for bad input
            raise DecodeError("bad_msgpack", f"body: {type(exc).__name__}: {exc}") from exc
        if type(body) is not dict:
            raise DecodeError("bad_body", f"body is a {type(body).__name__}, not an object")
        # Every field was checked above: build without a second validation pass.
        return Envelope._trusted(
            {
                "id": id_,
                "kind": _KINDS[kind_code],
                "sender": sender,
                "recipient": recipient,
                "body": body,
                **fields,
            }
        )
