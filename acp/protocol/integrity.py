"""Integrity tags: the corpus's ``hash`` label made real.

A tag covers the body's bytes exactly as they travel: the msgpack form the
wire codec carries as its own field. The receiver checks those bytes before
it parses them and never re-serializes to verify, so the check costs one hash
over a few hundred bytes and cannot be fooled by two encodings of one value.
Re-encoding a decoded body reproduces the same bytes (msgpack keeps key order
and picks one encoding per value), so a forwarded message keeps its tag.

Without keys a tag is a truncated SHA-256 digest (catches corruption); with
a key ring it is HMAC-SHA256 naming its key id, so keys rotate without
downtime: sign with the newest, verify with any still listed.

Tag forms: ``d2.<b64url 16 bytes>`` and ``h2.<key id>.<b64url 16 bytes>``
(version 1 tags covered canonical JSON and cost six times as much).
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


def digest_tag(data: bytes) -> str:
    """The keyless tag of packed body bytes (the codec calls it directly on its hot path)."""
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


def _mac(secret: bytes, kid: str, data: bytes) -> str:
    return f"h2.{kid}." + _b64(hmac.digest(secret, data, "sha256")[:_TAG_BYTES])


def _data(body: bytes | Mapping[str, Any]) -> bytes:
    return body if isinstance(body, bytes) else body_bytes(body)


def make_tag(body: bytes | Mapping[str, Any], keys: KeyRing | None = None) -> str:
    """The tag for a body, given as its packed bytes or as the mapping itself."""
    data = _data(body)
    if keys is None:
        return digest_tag(data)
    kid = keys.signing_key_id
    secret = keys.secret(kid)
    assert secret is not None
    return _mac(secret, kid, data)


def verify_tag(
    body: bytes | Mapping[str, Any], tag: str | None, keys: KeyRing | None = None
) -> None:
    """Raise ``IntegrityError`` unless ``tag`` matches ``body`` (its packed bytes, ideally).

    With a key ring, only HMAC tags are accepted (a bare digest could be forged).
    """
    if not tag:
        raise IntegrityError("message has no integrity tag")
    scheme, _, rest = tag.partition(".")
    data = _data(body)
    if scheme == "d2":
        if keys is not None:
            raise IntegrityError("unsigned digest tag refused: a key ring is configured")
        if not hmac.compare_digest(digest_tag(data), tag):
            raise IntegrityError("body digest does not match its tag")
        return
    if scheme == "h2":
        kid, _, _mac_part = rest.partition(".")
        if keys is None:
            raise IntegrityError(
                f"message signed with key {kid!r} but no key ring is configured", key_id=kid
            )
        secret = keys.secret(kid)
        if secret is None:
            raise IntegrityError(f"unknown key id {kid!r}", key_id=kid)
        if not hmac.compare_digest(_mac(secret, kid, data), tag):
            raise IntegrityError(f"HMAC mismatch for key id {kid!r}", key_id=kid)
        return
    raise IntegrityError(f"unknown integrity tag scheme {scheme!r}")
