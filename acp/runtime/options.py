"""What every process of one deployment must agree on, read once from the runtime
configuration and the environment: the bus's options and durability, and the wire
codec with its key ring. Clients, workers, coordinators and the admin tools that
build theirs here keep result records as long, trim ledgers at the same count,
write the same dictionary and accept exactly the same signatures."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from acp.agents.config import RuntimeConfig, load_config
from acp.errors import ConfigError
from acp.protocol import KeyRing, WireCodec
from acp.runtime.bus.base import BusOptions
from acp.runtime.bus.redis import Durability, RedisBus
from acp.runtime.settings import RedisSettings

__all__ = [
    "ENV_HMAC_KEYS",
    "ENV_HMAC_KEYS_FILE",
    "Deployment",
    "bus_options",
    "load_key_ring",
]

#: the key ring itself: ``id=secret,id2=secret2``, oldest first, the last one signs
ENV_HMAC_KEYS = "ACP_HMAC_KEYS"
#: a file holding the key ring (kept out of the environment of every child process)
ENV_HMAC_KEYS_FILE = "ACP_HMAC_KEYS_FILE"


def bus_options(config: RuntimeConfig, **overrides: Any) -> BusOptions:
    """``BusOptions`` with ``[results]`` and ``[bus]`` of ``config`` (and ``overrides``)."""
    return BusOptions(
        result_ttl=config.results.ttl_s,
        result_max=config.results.max_entries,
        dedup_max=config.bus.dedup_max,
        dead_max=config.bus.dead_max,
        dead_payload_max=config.bus.dead_payload_max,
        **overrides,
    )


def load_key_ring(config: RuntimeConfig, env: Mapping[str, str] | None = None) -> KeyRing | None:
    """The key ring from ``ACP_HMAC_KEYS``, else the file ``ACP_HMAC_KEYS_FILE`` names,
    else ``[wire] hmac_keys_file``; None when none is set."""
    env = os.environ if env is None else env
    if spec := env.get(ENV_HMAC_KEYS, "").strip():
        try:
            return KeyRing.from_spec(spec)
        except ConfigError as exc:
            raise ConfigError(f"{ENV_HMAC_KEYS}: {exc}") from None
    path = env.get(ENV_HMAC_KEYS_FILE, "").strip() or config.wire.hmac_keys_file
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"key ring file {path}: {exc.strerror or exc}") from None
    entries = [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]
    try:
        return KeyRing.from_spec(",".join(e for e in entries if not e.startswith("#")))
    except ConfigError as exc:
        raise ConfigError(f"key ring file {path}: {exc}") from None


@dataclass(frozen=True)
class Deployment:
    """The settings a process takes from the deployment's configuration; build it with
    :meth:`load` (or :meth:`from_config`) and open buses with :meth:`bus`."""

    config: RuntimeConfig
    options: BusOptions
    durability: Durability
    codec: WireCodec

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        durability: Durability | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Deployment:
        """Read the configuration file (``ACP_CONFIG`` or the shipped one) with the
        environment's overrides; ``durability`` (a command's flag) wins over both."""
        return cls.from_config(load_config(path, env=env), durability=durability, env=env)

    @classmethod
    def from_config(
        cls,
        config: RuntimeConfig,
        *,
        durability: Durability | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Deployment:
        wire = config.wire
        keys = load_key_ring(config, env)
        codec = WireCodec(
            keys=keys,
            max_frame=wire.max_frame,
            dictionary=wire.dictionary,
            require_signatures=wire.require_signatures,
            legacy_signatures=wire.legacy_signatures,
        )
        return cls(config, bus_options(config), durability or config.bus.durability, codec)

    def bus(self, url: str, **kwargs: Any) -> RedisBus:
        """A bus on the server at ``url`` with this deployment's options, durability and
        TLS files (where the URL names none)."""
        tls = self.config.redis
        settings = RedisSettings.from_url(url).with_tls_files(
            ca_certs=tls.ssl_ca_certs, certfile=tls.ssl_certfile, keyfile=tls.ssl_keyfile
        )
        return RedisBus(settings, self.options, durability=self.durability, **kwargs)

    @cached_property
    def inspecting_codec(self) -> WireCodec:
        """A codec for tools that show frames whatever their tag: it reads what the
        deployment's codec reads, without refusing what fails verification (made
        once: a codec prepares its dictionary)."""
        codec = self.codec
        return WireCodec(
            keys=codec.keys,
            max_frame=max(codec.max_frame, 64 * 1024 * 1024),
            dictionary=codec.dictionary,
            verify=False,
            require_signatures=False,
            legacy_signatures=True,
        )
