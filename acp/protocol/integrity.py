"""Integrity tags: the corpus's ``hash`` label made real.

A tag covers the canonical body (sorted keys, compact JSON, UTF-8), so it
survives any re-encoding. Without keys it is a truncated SHA-256 digest
(catches corruption); with a key ring it is HMAC-SHA256 naming its key id, so
keys rotate without downtime: sign with the newest, verify with any still listed.

Tag forms: ``d1.<b64url 16 bytes>`` and ``h1.<key id>.<b64url 16 bytes>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

from acp.errors import ConfigError, IntegrityError

__all__ = ["KeyRing", "canonical_body", "make_tag", "verify_tag"]

_TAG_BYTES = 16


def canonical_body(body: Mapping[str, Any]) -> bytes:
    """The byte form tags are computed over; raises ``IntegrityError`` for non-JSON data."""
    try:
        return json.dumps(
            body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise IntegrityError(f"body is not plain JSON data: {exc}") from exc


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


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


def _digest(data: bytes) -> str:
    return "d1." + _b64(hashlib.sha256(data).digest()[:_TAG_BYTES])


def _mac(secret: bytes, kid: str, data: bytes) -> str:
    return f"h1.{kid}." + _b64(hmac.digest(secret, data, "sha256")[:_TAG_BYTES])


def make_tag(body: Mapping[str, Any], keys: KeyRing | None = None) -> str:
    data = canonical_body(body)
    if keys is None:
        return _digest(data)
    kid = keys.signing_key_id
    secret = keys.secret(kid)
    assert secret is not None
    return _mac(secret, kid, data)


def verify_tag(body: Mapping[str, Any], tag: str | None, keys: KeyRing | None = None) -> None:
    """Raise ``IntegrityError`` unless ``tag`` matches ``body``.

    With a key ring, only HMAC tags are accepted (a bare digest could be forged).
    """
    if not tag:
        raise IntegrityError("message has no integrity tag")
    scheme, _, rest = tag.partition(".")
    data = canonical_body(body)
    if scheme == "d1":
        if keys is not None:
            raise IntegrityError("unsigned digest tag refused: a key ring is configured")
        if not hmac.compare_digest(_digest(data), tag):
            raise IntegrityError("body digest does not match its tag")
        return
    if scheme == "h1":
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
