"""The environment variables that name where the server is: here, apart from the
settings module (pydantic), so that the command line's help can name them without
loading it."""

from typing import Final

__all__ = ["ENV_REDIS_URL", "ENV_REDIS_URL_FILE"]

#: the Redis (or Valkey) URL every command uses unless given one
ENV_REDIS_URL: Final = "ACP_REDIS_URL"
#: a file holding that URL (a password stays out of ``ps`` and the environment)
ENV_REDIS_URL_FILE: Final = "ACP_REDIS_URL_FILE"
