"""Which Redis server a CLI command talks to.

Admin commands (``acp dlq``, status tools) inspect a server that already
holds work, so they must be told which one: starting an empty private server
would answer "nothing here" about the wrong server. Only ``acp up`` and
``acp demo`` fall back to the embedded server.
"""

from __future__ import annotations

from acp.errors import ConfigError
from acp.runtime.settings import EMBEDDED, ENV_REDIS_URL, resolve_redis

__all__ = ["redis_url_for_cli"]


def redis_url_for_cli(url: str | None) -> str:
    """The server URL from ``--redis`` or else ``ACP_REDIS_URL``, checked.

    Raises :class:`ConfigError` when neither is given or the URL is malformed
    (messages never show the password). The returned URL keeps the password:
    it is for connecting, not for printing.
    """
    settings = resolve_redis(url)
    if settings is EMBEDDED:
        raise ConfigError(
            f"no Redis server named: pass --redis URL or set {ENV_REDIS_URL} "
            "(e.g. redis://127.0.0.1:6379/0)"
        )
    return settings.url
