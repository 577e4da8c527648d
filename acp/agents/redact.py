"""Secrets kept out of what tools see and say.

A tool's arguments come from the model and its output goes back to the model (and
into the conversation record on the server): a secret that reached either would be
one prompt injection away from leaving. The values known to be secret (the API
key, the Redis password, the HMAC keys) are replaced wherever they appear.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["REDACTED", "Redactor", "secrets_from_env"]

REDACTED = "[redacted]"
#: shorter values are not treated as secrets (they would match ordinary text)
_MIN_SECRET = 6
_URL_VARS = ("ACP_REDIS_URL", "REDIS_URL")
_PLAIN_VARS = ("ANTHROPIC_API_KEY", "ACP_REDIS_PASSWORD", "REDIS_PASSWORD")


def secrets_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """The secret values a process's environment holds."""
    env = os.environ if env is None else env
    found = [env[name] for name in _PLAIN_VARS if env.get(name)]
    for name in _URL_VARS:
        if env.get(name):
            found.append(urlsplit(env[name]).password or "")
    for entry in env.get("ACP_HMAC_KEYS", "").replace("\n", ",").split(","):
        found.append(entry.partition("=")[2].strip())
    return [s for s in found if s]


class Redactor:
    """Replaces known secret values in strings, lists and mappings."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str | None]) -> None:
        for secret in secrets:
            if secret and len(secret) >= _MIN_SECRET:
                self._secrets.add(secret)

    def __len__(self) -> int:
        return len(self._secrets)

    def scrub(self, value: Any) -> Any:
        if not self._secrets:
            return value
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        return value
