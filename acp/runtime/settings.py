"""Where the Redis-protocol server is: typed settings built from a URL or the environment.

A URL is the one way to name a server (``ACP_REDIS_URL`` or ``--redis``, or a
file holding it: ``ACP_REDIS_URL_FILE``, ``--redis-url-file``), so
that a coordinator, its workers and any subprocess agree by passing one
string. With no URL at all the runtime starts its own embedded server; see
:func:`resolve_redis`.

Passwords are held as :class:`pydantic.SecretStr` and every human-facing form
(``str()``, ``repr()``, :attr:`RedisSettings.redacted_url`, error messages)
hides them, because URLs end up in logs, status output and tracebacks.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from acp.errors import ConfigError
from acp.runtime.environment import ENV_REDIS_URL, ENV_REDIS_URL_FILE

__all__ = [
    "EMBEDDED",
    "ENV_REDIS_URL",
    "ENV_REDIS_URL_FILE",
    "Embedded",
    "RedisSettings",
    "resolve_redis",
]


_SCHEMES: Final = (
    "redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel",
)  # fmt: skip
_SENTINEL_PORT: Final = 26379
_CERT_REQS: Final = ("none", "optional", "required")
#: URL parameters naming TLS files, as redis-py spells them
_TLS_FILES: Final = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_DEFAULT_SOCKET_TIMEOUT: Final = 10.0
_DEFAULT_CONNECT_TIMEOUT: Final = 5.0
_MASK: Final = "***"


class Embedded(enum.Enum):
    """Marker type for "no server was named: start the embedded one"."""

    EMBEDDED = "embedded"


#: returned by :func:`resolve_redis` when no URL is configured
EMBEDDED: Final = Embedded.EMBEDDED


def _scrub(url: str) -> str:
    """Hide everything between ``://`` and the last ``@``.

    Used on raw input we failed to parse, where we cannot know which part is
    the password (an unencoded ``#`` or ``/`` in it derails URL parsing).
    """
    url = re.sub(r"://.*@", f"://{_MASK}@", url, count=1, flags=re.DOTALL)
    return re.sub(r"(sentinel_password=)[^&#]*", rf"\g<1>{_MASK}", url)


class RedisSettings(BaseModel):
    """How to reach one Redis-protocol server (immutable).

    Build it with :meth:`from_url` or :meth:`from_env`; pass
    :meth:`connection_kwargs` to ``redis.asyncio.Redis``. ``socket_timeout``
    must exceed any ``BLOCK`` used on the connection (``None`` disables it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=6379, ge=1, le=65535)
    db: int = Field(default=0, ge=0)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    tls_cert_reqs: Literal["none", "optional", "required"] = "required"
    #: a CA bundle to verify the server with (default: the system's store)
    tls_ca_certs: str | None = None
    #: a client certificate and its key, for servers that ask for one (mutual TLS)
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    unix_socket_path: str | None = None
    #: the server is one node of a Redis/Valkey Cluster (``redis+cluster://``): the
    #: client finds the others from it and sends each command to its slot's primary
    cluster: bool = False
    #: Sentinels watching the primary (``redis+sentinel://``): the client asks them
    #: where the primary of ``service`` is, and asks again after a failover
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    #: the Sentinels' own credentials, where they ask for any (``requirepass`` or
    #: ACL users in sentinel.conf); the URL's user and password are the data nodes'
    sentinel_username: str | None = None
    sentinel_password: SecretStr | None = None
    socket_timeout: float | None = Field(default=_DEFAULT_SOCKET_TIMEOUT, gt=0)
    connect_timeout: float = Field(default=_DEFAULT_CONNECT_TIMEOUT, gt=0)

    # -- construction -------------------------------------------------------

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        """Parse ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` URLs.

        Forms: ``redis://[[user]:password@]host[:port][/db]``,
        ``unix://[[user]:password@]/path/to/socket[?db=N]`` and, for any node of a
        cluster, ``redis+cluster://`` (``rediss+cluster://`` with TLS): the
        ``+cluster`` suffix follows the ``redis+sentinel://`` spelling Celery and
        Kombu made familiar, and says in the URL itself, which every process
        receives, that commands are routed by slot. A primary found through
        Sentinel: ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
        (the Sentinels, 26379 by default; the user and password are the data
        nodes', ``sentinel_username`` and ``sentinel_password`` the Sentinels' own
        where they ask for any). Query parameters:
        ``db``, ``socket_timeout``, ``socket_connect_timeout`` (or
        ``connect_timeout``) and, for ``rediss``, ``ssl_cert_reqs``, ``ssl_ca_certs``,
        ``ssl_certfile`` and ``ssl_keyfile`` (redis-py's names). Anything else is
        refused so that a typo does not silently change behaviour.
        """
        if not isinstance(url, str) or not url.strip():
            raise ConfigError("empty Redis URL (expected e.g. redis://127.0.0.1:6379/0)")
        url = url.strip()
        shown = _scrub(url)
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ConfigError(f"malformed Redis URL {shown}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            got = f"'{scheme}://'" if scheme else "no scheme"
            raise ConfigError(
                f"unsupported Redis URL {shown}: {got}; expected redis://, rediss://, unix://, "
                "redis+cluster:// or redis+sentinel://"
            )
        if parts.fragment or "#" in url:
            raise ConfigError(
                f"Redis URL {shown} contains '#': percent-encode special characters "
                "in the password (e.g. '#' as %23)"
            )

        if "@" in parts.path or "@" in parts.query:
            raise ConfigError(
                f"malformed Redis URL {shown}: percent-encode special characters "
                "in the user name or password (e.g. '/' as %2F, '@' as %40)"
            )

        fields: dict[str, Any] = {}
        if parts.username:
            fields["username"] = unquote(parts.username)
        if parts.password is not None and parts.password != "":
            fields["password"] = SecretStr(unquote(parts.password))

        query = _parse_query(parts.query, shown)
        path_db: int | None
        if scheme.endswith("+sentinel"):
            fields |= _sentinel_fields(parts.netloc, parts.path, shown)
            fields["tls"] = scheme.startswith("rediss")
            path_db = fields.pop("db", None)
        elif scheme == "unix":
            path = unquote(parts.path)
            if parts.hostname:
                raise ConfigError(
                    f"Redis URL {shown}: a unix:// URL takes no host; write unix:///path/to/socket"
                )
            if not path or path == "/":
                raise ConfigError(f"Redis URL {shown} names no socket path")
            fields["unix_socket_path"] = path
            path_db = None
        else:
            host = parts.hostname
            if not host:
                raise ConfigError(f"Redis URL {shown} names no host")
            fields["host"] = host
            try:
                port = parts.port
            except ValueError:
                raise ConfigError(
                    f"Redis URL {shown}: port is not a number between 1 and 65535"
                ) from None
            if port is not None:
                if port == 0:
                    raise ConfigError(f"Redis URL {shown}: port must be between 1 and 65535")
                fields["port"] = port
            fields["tls"] = scheme.startswith("rediss")
            fields["cluster"] = scheme.endswith("+cluster")
            db_text = parts.path.strip("/")
            path_db = _parse_db(db_text, shown, where="path") if db_text else None

        query_db = query.pop("db", None)
        db = path_db
        if query_db is not None:
            qdb = _parse_db(query_db, shown, where="db parameter")
            if path_db is not None and qdb != path_db:
                raise ConfigError(
                    f"Redis URL {shown} names two databases ({path_db} in the path, {qdb} in ?db=)"
                )
            db = qdb
        if db is not None:
            if db and fields.get("cluster"):
                raise ConfigError(f"Redis URL {shown}: a cluster has database 0 only")
            fields["db"] = db

        if "socket_timeout" in query:
            fields["socket_timeout"] = _parse_timeout(
                query.pop("socket_timeout"), shown, "socket_timeout", allow_none=True
            )
        for name in ("socket_connect_timeout", "connect_timeout"):
            if name in query:
                fields["connect_timeout"] = _parse_timeout(query.pop(name), shown, name)
        if "ssl_cert_reqs" in query:
            reqs = query.pop("ssl_cert_reqs").lower()
            if not scheme.startswith("rediss"):
                raise ConfigError(f"Redis URL {shown}: ssl_cert_reqs needs a rediss:// URL")
            if reqs not in _CERT_REQS:
                raise ConfigError(
                    f"Redis URL {shown}: ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}"
                )
            fields["tls_cert_reqs"] = reqs
        for name in _TLS_FILES:
            if name in query:
                if not scheme.startswith("rediss"):
                    raise ConfigError(f"Redis URL {shown}: {name} needs a rediss:// URL")
                fields["tls_" + name.removeprefix("ssl_")] = query.pop(name)
        for name in ("sentinel_username", "sentinel_password"):
            if name in query:
                if not scheme.endswith("+sentinel"):
                    raise ConfigError(f"Redis URL {shown}: {name} needs a redis+sentinel:// URL")
                value = query.pop(name)  # parse_qsl has decoded it
                fields[name] = SecretStr(value) if name.endswith("password") else value
        if query:
            raise ConfigError(
                f"Redis URL {shown}: unknown parameter(s) {', '.join(sorted(query))}; "
                "known: db, socket_timeout, socket_connect_timeout, ssl_cert_reqs, "
                "ssl_ca_certs, ssl_certfile, ssl_keyfile, sentinel_username, sentinel_password"
            )
        try:
            return cls(**fields)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"Redis URL {shown}: {problems}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisSettings:
        """Settings from ``ACP_REDIS_URL``; :class:`ConfigError` when it is unset."""
        env = os.environ if environ is None else environ
        url = env.get(ENV_REDIS_URL, "").strip()
        if not url:
            raise ConfigError(f"{ENV_REDIS_URL} is not set")
        try:
            return cls.from_url(url)
        except ConfigError as exc:
            raise ConfigError(f"{ENV_REDIS_URL}: {exc}") from None

    # -- derived forms ------------------------------------------------------

    @property
    def url(self) -> str:
        """The full URL, password included: for handing to child processes, never to logs."""
        return self._build_url(reveal=True)

    @property
    def redacted_url(self) -> str:
        """The URL with the password replaced by ``***``: safe for logs and status."""
        return self._build_url(reveal=False)

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` / ``redis.asyncio.Redis``."""
        kwargs: dict[str, Any] = {
            "db": self.db,
            "username": self.username,
            "password": self.password.get_secret_value() if self.password else None,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
        }
        if self.unix_socket_path is not None:
            kwargs["unix_socket_path"] = self.unix_socket_path
        else:
            if self.service is None:  # with Sentinel, the primary's address is asked
                kwargs["host"] = self.host
                kwargs["port"] = self.port
            if self.tls:
                kwargs["ssl"] = True
                kwargs["ssl_cert_reqs"] = self.tls_cert_reqs
                for name in _TLS_FILES:
                    if (path := getattr(self, "tls_" + name.removeprefix("ssl_"))) is not None:
                        kwargs[name] = path
        return kwargs

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the connections to the Sentinels themselves."""
        kwargs: dict[str, Any] = {
            "socket_timeout": self.connect_timeout,
            "socket_connect_timeout": self.connect_timeout,
        }
        if self.sentinel_username:
            kwargs["username"] = self.sentinel_username
        if self.sentinel_password is not None:
            kwargs["password"] = self.sentinel_password.get_secret_value()
        return kwargs

    def with_tls_files(
        self,
        *,
        ca_certs: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> RedisSettings:
        """These settings with the TLS files a deployment names (config, environment)
        where the URL names none; a URL without TLS is returned unchanged."""
        if not self.tls:
            return self
        given = {"tls_ca_certs": ca_certs, "tls_certfile": certfile, "tls_keyfile": keyfile}
        update = {k: v for k, v in given.items() if v and getattr(self, k) is None}
        return self.model_copy(update=update) if update else self

    def _build_url(self, *, reveal: bool) -> str:
        auth = ""
        if self.username or self.password:
            auth = quote(self.username or "", safe="")
            if self.password is not None:
                secret = self.password.get_secret_value() if reveal else _MASK
                auth += ":" + (quote(secret, safe="") if reveal else secret)
            auth += "@"
        params: dict[str, str] = {}
        if self.socket_timeout != _DEFAULT_SOCKET_TIMEOUT:
            params["socket_timeout"] = _fmt_timeout(self.socket_timeout)
        if self.connect_timeout != _DEFAULT_CONNECT_TIMEOUT:
            params["socket_connect_timeout"] = _fmt_timeout(self.connect_timeout)
        if self.unix_socket_path is not None:
            query = urlencode({"db": str(self.db), **params})
            return f"unix://{auth}{quote(self.unix_socket_path)}?{query}"
        if self.tls and self.tls_cert_reqs != "required":
            params["ssl_cert_reqs"] = self.tls_cert_reqs
        for name in _TLS_FILES:
            if (path := getattr(self, "tls_" + name.removeprefix("ssl_"))) is not None:
                params[name] = path
        if self.sentinel_username:
            params["sentinel_username"] = self.sentinel_username
        if self.sentinel_password is not None:
            secret = self.sentinel_password.get_secret_value()
            params["sentinel_password"] = secret if reveal else _MASK
        query = f"?{urlencode(params, safe='*' if not reveal else '')}" if params else ""
        scheme = "rediss" if self.tls else "redis"
        if self.service is not None:
            hosts = ",".join(f"{_bracket(h)}:{p}" for h, p in self.sentinels)
            return f"{scheme}+sentinel://{auth}{hosts}/{self.service}/{self.db}{query}"
        scheme += "+cluster" if self.cluster else ""
        return f"{scheme}://{auth}{_bracket(self.host)}:{self.port}/{self.db}{query}"

    def __str__(self) -> str:
        return self.redacted_url


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _sentinel_fields(netloc: str, path: str, shown: str) -> dict[str, Any]:
    """The Sentinels and service of a ``redis+sentinel://`` URL (hosts, then the
    service and an optional database in the path)."""
    hosts = netloc.rpartition("@")[2]
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        host, port = item, _SENTINEL_PORT
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else port
        elif item.count(":") == 1:
            host, _, text = item.partition(":")
            if not text.isdigit() or not 1 <= int(text) <= 65535:
                raise ConfigError(f"Redis URL {shown}: Sentinel port {text!r} is not a port")
            port = int(text)
        if not host:
            raise ConfigError(f"Redis URL {shown} names an empty Sentinel host")
        sentinels.append((host, port))
    names = [p for p in unquote(path).split("/") if p]
    if not names:
        raise ConfigError(
            f"Redis URL {shown} names no service: redis+sentinel://host:26379/SERVICE"
        )
    fields: dict[str, Any] = {
        "sentinels": tuple(sentinels), "service": names[0],
        "host": sentinels[0][0], "port": sentinels[0][1],
    }  # fmt: skip
    if len(names) > 1:
        fields["db"] = _parse_db(names[1], shown, where="path")
    return fields


def resolve_redis(
    url: str | None,
    *,
    url_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RedisSettings | Literal[Embedded.EMBEDDED]:
    """Decide which server to use: the given URL, else the URL in ``url_file``, else
    ``ACP_REDIS_URL``, else the file ``ACP_REDIS_URL_FILE`` names, else :data:`EMBEDDED`.

    An empty string counts as "not given", so ``ACP_REDIS_URL=`` in a shell
    falls back to the embedded server instead of failing on an empty URL.
    """
    if url is not None and url.strip():
        if url_file:
            raise ConfigError("name the Redis server once: a URL or a URL file, not both")
        return RedisSettings.from_url(url)
    if url_file:
        return _from_file(url_file)
    env = os.environ if environ is None else environ
    if env.get(ENV_REDIS_URL, "").strip():
        return RedisSettings.from_env(env)
    if named := env.get(ENV_REDIS_URL_FILE, "").strip():
        return _from_file(named)
    return EMBEDDED


def _from_file(path: str | os.PathLike[str]) -> RedisSettings:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Redis URL file {path}: {exc.strerror or exc}") from None
    try:
        return RedisSettings.from_url(text)
    except ConfigError as exc:
        raise ConfigError(f"Redis URL file {path}: {exc}") from None


def _parse_query(query: str, shown: str) -> dict[str, str]:
    result: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"Redis URL {shown}: malformed query string") from None
    for key, value in pairs:
        if key in result:
            raise ConfigError(f"Redis URL {shown}: parameter {key!r} given twice")
        result[key] = value
    return result


def _parse_db(text: str, shown: str, *, where: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ConfigError(
            f"Redis URL {shown}: database in the {where} must be a non-negative integer, "
            f"got {text!r}"
        )
    return int(text)


def _parse_timeout(text: str, shown: str, name: str, *, allow_none: bool = False) -> float | None:
    if allow_none and text.lower() in ("", "none", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"Redis URL {shown}: {name} must be a positive number of seconds, got {text!r}"
        )
    return value


def _fmt_timeout(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:g}"
