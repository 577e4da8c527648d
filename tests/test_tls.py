"""TLS to the server (issue 14.10): a CA file, a client certificate and key, named in
the URL, the environment or the runtime config, through a real TLS endpoint.

The bundled server has no TLS, so the test puts a TLS-terminating proxy in front of
it: TLS 1.2+, the server's certificate signed by a CA made for the test, and a
client certificate required (mutual TLS), as managed Redis services do."""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest
import trustme
from anyio.abc import SocketStream
from anyio.streams.tls import TLSListener

from acp.errors import BusError
from acp.runtime import Deployment, Outgoing, RedisBus

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]


class Certificates:
    def __init__(self, where: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1")
        client = self.ca.issue_cert("acp-worker@example.test")
        self.ca_file = where / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.client_cert = where / "client.pem"
        self.client_key = where / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.configure_cert(self.server_context)
        self.ca.configure_trust(self.server_context)
        self.server_context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS


async def _pipe(source: Any, sink: Any) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError, OSError):
        pass
    finally:
        await sink.aclose()


async def _proxy(
    certs: Certificates, target_port: int, *, task_status: Any = anyio.TASK_STATUS_IGNORED
) -> None:
    """Terminate TLS on a free port and forward the bytes to the plain server."""
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener = TLSListener(tcp, certs.server_context, standard_compatible=False)

    async def serve(client: SocketStream) -> None:
        upstream = await anyio.connect_tcp("127.0.0.1", target_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_pipe, client, upstream)
            tg.start_soon(_pipe, upstream, client)

    async def handle(client: Any) -> None:
        # a client that failed the handshake: what the refusal tests want
        with contextlib.suppress(ssl.SSLError, OSError, anyio.BrokenResourceError):
            await serve(client)

    async with listener:
        task_status.started(port)
        await listener.serve(handle)


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


def _url(port: int, **params: Path) -> str:
    query = "&".join(f"{k}={quote(str(v))}" for k, v in params.items())
    return f"rediss://127.0.0.1:{port}/0" + (f"?{query}" if query else "")


async def _round_trip(bus: RedisBus) -> None:
    await bus.send_many([Outgoing("tls-check", "m1", b"frame")])
    (entry,) = await bus.entries("tls-check")
    assert entry.frame == b"frame"


async def test_ca_and_client_certificate_from_the_url(redis_url: str, certs: Certificates) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with anyio.create_task_group() as tg:
        proxy = await tg.start(_proxy, certs, port)
        url = _url(proxy, ssl_ca_certs=certs.ca_file, ssl_certfile=certs.client_cert,
                   ssl_keyfile=certs.client_key)  # fmt: skip
        async with RedisBus.from_url(url) as bus:
            await _round_trip(bus)
            assert "ssl_ca_certs=" in bus.settings.url  # handed on to child processes
        # without the CA the server is not trusted; without the client certificate
        # the server refuses: neither is mistaken for a working connection
        for params in (
            {"ssl_certfile": certs.client_cert, "ssl_keyfile": certs.client_key},
            {"ssl_ca_certs": certs.ca_file},
        ):
            with pytest.raises(BusError):
                async with RedisBus.from_url(_url(proxy, **params), reconnect_timeout=0.3) as bus:
                    await _round_trip(bus)
        tg.cancel_scope.cancel()


async def test_tls_files_from_the_environment_and_from_the_config(
    redis_url: str, certs: Certificates, tmp_path: Path
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    config = tmp_path / "acp.toml"
    shipped = (ROOT / "runtime" / "acp.toml").read_text(encoding="utf-8")
    config.write_text(
        shipped.replace(
            '# ssl_ca_certs = "/etc/acp/redis-ca.pem"', f'ssl_ca_certs = "{certs.ca_file}"'
        ),
        encoding="utf-8",
    )
    env = {
        "ACP_REDIS_SSL_CERTFILE": str(certs.client_cert),
        "ACP_REDIS_SSL_KEYFILE": str(certs.client_key),
    }
    deployment = Deployment.load(config, env=env)
    async with anyio.create_task_group() as tg:
        proxy = await tg.start(_proxy, certs, port)
        async with deployment.bus(_url(proxy)) as bus:
            await _round_trip(bus)
        # the command line, the same way
        done = await anyio.run_process(
            [sys.executable, "-m", "acp", "dlq", "list", "--config", str(config),
             "--redis", _url(proxy)],
            env={**os.environ, **env}, cwd=ROOT, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        assert b"no dead letters" in done.stdout
        tg.cancel_scope.cancel()
