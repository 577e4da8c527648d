"""Integrity tags: the corpus's ``hash`` label made real.

A tag covers the body's bytes exactly as they travel (the msgpack form the wire
codec carries as its own field) and, since version 3, every header field that
decides where a message goes, what it costs or who sent it: id, kind, sender,
recipient, correlation id, reply-to, created-at, deadline, priority, tier,
tenant and the extension headers, in one canonical msgpack array (the codec
builds it; ``header`` below). The bus's delivery count (``attempt``) and the
trace context change at every hop and are left out, so a message forwarded
unchanged keeps its tag. The receiver checks those bytes before it parses the
body and never re-serializes the body to verify, so two encodings of one value
cannot fool it.

Without keys a tag is a truncated SHA-256 digest (catches corruption); with a
key ring it is HMAC-SHA256 naming its key id, so keys rotate without downtime:
sign with the newest, verify with any still listed.

Tag forms: ``d3.<b64url 16 bytes>`` and ``h3.<key id>.<b64url 16 bytes>``.
Version 2 tags (``d2``, ``h2``) covered the body only: a ``d2`` digest is still
read where signatures are not required, an ``h2`` signature only with
``legacy=True`` (during an upgrade), since its headers could have been rewritten.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

import msgpack

from acp.errors import ConfigError, IntegrityError

__all__ = ["KeyRing", "body_bytes", "digest_tag", "make_tag", "verify_tag"]

_TAG_BYTES = 16
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def body_bytes(body: Mapping[str, Any]) -> bytes:
    """The bytes a tag covers: the body as the wire codec packs it."""
    try:
        packed: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise IntegrityError(f"body holds a value msgpack cannot carry: {exc}") from exc
    return packed


def _b64(raw: bytes) -> str:
    # 16 bytes: 22 characters and two '=' of padding, cut
    return binascii.b2a_base64(raw, newline=False)[:-2].translate(_URLSAFE).decode()


def digest_tag(data: bytes, header: bytes = b"") -> str:
    """The keyless tag of a frame's covered header and packed body bytes (the codec
    calls it directly on its hot path)."""
    return "d3." + _b64(hashlib.sha256(header + data).digest()[:_TAG_BYTES])


def _digest_v2(data: bytes) -> str:
    return "d2." + _b64(hashlib.sha256(data).digest()[:_TAG_BYTES])


class KeyRing:
    """HMAC keys by id, oldest first; the last one signs."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise ConfigError("a key ring needs at least one key")
        for kid, secret in keys.items():
            if not kid or "." in kid:
                raise ConfigError(f"key id {kid!r} must be non-empty and contain no '.'")
            if len(secret) < 16:
                raise ConfigError(f"key {kid!r} is {len(secret)} bytes; use at least 16")
        self._keys = dict(keys)
        self.signing_key_id = list(self._keys)[-1]

    @classmethod
    def from_spec(cls, spec: str) -> KeyRing:
        """Parse ``kid=secret,kid2=secret2`` (oldest first); secrets are UTF-8 text."""
        keys: dict[str, bytes] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kid, sep, secret = part.partition("=")
            if not sep:
                raise ConfigError(f"key ring entry {kid!r} is not of the form id=secret")
            keys[kid.strip()] = secret.encode()
        return cls(keys)

    @classmethod
    def from_env(cls, var: str = "ACP_HMAC_KEYS") -> KeyRing | None:
        spec = os.environ.get(var)
        return cls.from_spec(spec) if spec else None

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def secret(self, kid: str) -> bytes | None:
        return self._keys.get(kid)

    def __repr__(self) -> str:  # never show secrets
        return f"KeyRing(key_ids={self.key_ids!r}, signing={self.signing_key_id!r})"


def _mac(secret: bytes, kid: str, data: bytes, version: str = "h3") -> str:
    return f"{version}.{kid}." + _b64(hmac.digest(secret, data, "sha256")[:_TAG_BYTES])


def _data(body: bytes | Mapping[str, Any]) -> bytes:
    return body if isinstance(body, bytes) else body_bytes(body)


def make_tag(
    body: bytes | Mapping[str, Any], keys: KeyRing | None = None, *, header: bytes = b""
) -> str:
    """The tag for a body (its packed bytes, or the mapping itself) and the canonical
    header bytes the codec covers with it."""
    data = header + _data(body)
    if keys is None:
        return "d3." + _b64(hashlib.sha256(data).digest()[:_TAG_BYTES])
    kid = keys.signing_key_id
    secret = keys.secret(kid)
    assert secret is not None
    return _mac(secret, kid, data)


def verify_tag(
    body: bytes | Mapping[str, Any],
    tag: str | None,
    keys: KeyRing | None = None,
    *,
    header: bytes = b"",
    require: bool | None = None,
    legacy: bool = False,
) -> None:
    """Raise ``IntegrityError`` unless ``tag`` matches ``header`` and ``body``.

    ``require`` (default: whether a key ring is given) refuses unsigned tags: a
    bare digest could be forged by anyone who can write the stream. ``legacy``
    accepts version-2 signatures, which cover the body only.
    """
    if not tag:
        raise IntegrityError("message has no integrity tag")
    if require is None:
        require = keys is not None
    scheme, _, rest = tag.partition(".")
    if scheme in ("d3", "d2"):
        if require:
            raise IntegrityError("unsigned frame refused: signatures are required here")
        data = _data(body)
        expected = digest_tag(data, header) if scheme == "d3" else _digest_v2(data)
        if not hmac.compare_digest(expected, tag):
            raise IntegrityError(f"digest does not match its tag ({scheme})")
        return
    if scheme in ("h3", "h2"):
        kid, _, _mac_part = rest.partition(".")
        if keys is None:
            raise IntegrityError(
                f"message signed with key {kid!r} but no key ring is configured", key_id=kid
            )
        secret = keys.secret(kid)
        if secret is None:
            raise IntegrityError(f"unknown key id {kid!r}", key_id=kid)
        if scheme == "h2" and not legacy:
            raise IntegrityError(
                f"version-2 signature (key {kid!r}) covers the body only: refused, its "
                "headers could have been rewritten (accept it only during an upgrade)",
                key_id=kid,
            )
        data = _data(body) if scheme == "h2" else header + _data(body)
        if not hmac.compare_digest(_mac(secret, kid, data, scheme), tag):
            raise IntegrityError(f"HMAC mismatch for key id {kid!r}", key_id=kid)
        return
    raise IntegrityError(f"unknown integrity tag scheme {scheme!r}")
