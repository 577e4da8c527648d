"""Which Redis server a CLI command talks to.

Admin commands (``acp dlq``, status tools) inspect a server that already
holds work, so they must be told which one: starting an empty private server
would answer "nothing here" about the wrong server. Only ``acp up`` and
``acp demo`` fall back to the embedded server.
"""

from __future__ import annotations

import os

from acp.errors import ConfigError
from acp.runtime.settings import EMBEDDED, ENV_REDIS_URL, ENV_REDIS_URL_FILE, resolve_redis

__all__ = ["redis_url_for_cli"]


def redis_url_for_cli(url: str | None, url_file: str | os.PathLike[str] | None = None) -> str:
    """The server URL from ``--redis``, ``--redis-url-file``, ``ACP_REDIS_URL`` or
    ``ACP_REDIS_URL_FILE`` (the first given), checked.

    Raises :class:`ConfigError` when neither is given or the URL is malformed
    (messages never show the password). The returned URL keeps the password:
    it is for connecting, not for printing.
    """
    settings = resolve_redis(url, url_file=url_file)
    if settings is EMBEDDED:
        raise ConfigError(
            f"no Redis server named: pass --redis URL or --redis-url-file FILE, or set "
            f"{ENV_REDIS_URL} or {ENV_REDIS_URL_FILE} (e.g. redis://127.0.0.1:6379/0)"
        )
    return settings.url
