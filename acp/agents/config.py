"""Model tiers, complexity classes and budgets: configuration, never code.

Loaded from a TOML file (``runtime/acp.toml`` is the shipped default) and
overridable by environment so one file serves every deployment:
``ACP_TIER_<TIER>_<FIELD>`` (``ACP_TIER_SONNET_MODEL=claude-sonnet-4-6``),
``ACP_COMPLEXITY_<CLASS>_<FIELD>``, ``ACP_BUDGET_DAILY_USD``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acp.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "Budgets",
    "ComplexityClass",
    "Price",
    "Results",
    "RuntimeConfig",
    "TierSpec",
    "Usage",
    "load_config",
]

#: the configuration shipped with the project: ``runtime/acp.toml`` in a checkout,
#: a copy inside the package in an installed wheel
_IN_WHEEL = Path(__file__).resolve().parents[1] / "default_config.toml"
DEFAULT_CONFIG = (
    _IN_WHEEL
    if _IN_WHEEL.exists()
    else Path(__file__).resolve().parents[2] / "runtime" / "acp.toml"
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Price(_Frozen):
    """USD per million tokens."""

    input: float = Field(ge=0)
    cache_write_5m: float = Field(ge=0)
    cache_write_1h: float = Field(ge=0)
    cache_read: float = Field(ge=0)
    output: float = Field(ge=0)


class Usage(_Frozen):
    """Tokens one model call used, as the API reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens
            + other.cache_creation_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
        )


class TierSpec(_Frozen):
    model: str
    price: Price
    concurrency: int = Field(ge=1)
    requests_per_minute: int = Field(ge=1)
    input_tokens_per_minute: int = Field(ge=1)
    output_tokens_per_minute: int = Field(ge=1)

    def cost(self, usage: Usage, *, cache_ttl: str = "5m") -> float:
        """USD for ``usage`` at this tier's prices."""
        write = self.price.cache_write_1h if cache_ttl == "1h" else self.price.cache_write_5m
        return (
            usage.input_tokens * self.price.input
            + usage.cache_creation_input_tokens * write
            + usage.cache_read_input_tokens * self.price.cache_read
            + usage.output_tokens * self.price.output
        ) / 1_000_000


class ComplexityClass(_Frozen):
    expected_input_tokens: int = Field(ge=0)
    expected_output_tokens: int = Field(ge=0)
    max_tokens: int = Field(ge=1)
    timeout_s: float = Field(gt=0)
    weight: float = Field(gt=0)
    effort: str = "medium"


class Budgets(_Frozen):
    daily_usd: float | None = Field(default=None, ge=0)
    per_agent_daily_usd: dict[str, float] = Field(default_factory=dict)
    per_tenant_daily_usd: dict[str, float] = Field(default_factory=dict)


class Results(_Frozen):
    """How long, and how many, result records are kept (``acp result``)."""

    ttl_s: float = Field(default=24 * 3600.0, gt=0)
    max_entries: int = Field(default=100_000, ge=1)


class RuntimeConfig(_Frozen):
    tiers: dict[str, TierSpec]
    complexity: dict[str, ComplexityClass]
    budgets: Budgets = Field(default_factory=Budgets)
    results: Results = Field(default_factory=Results)

    def tier(self, name: str) -> TierSpec:
        try:
            return self.tiers[name]
        except KeyError:
            raise ConfigError(
                f"unknown tier {name!r}; configured: {', '.join(self.tiers)}"
            ) from None

    def complexity_class(self, name: str) -> ComplexityClass:
        try:
            return self.complexity[name]
        except KeyError:
            raise ConfigError(
                f"unknown complexity {name!r}; configured: {', '.join(self.complexity)}"
            ) from None

    def tier_order(self) -> list[str]:
        """Tiers cheapest first (by output price): the order escalation climbs."""
        return sorted(
            self.tiers, key=lambda t: (self.tiers[t].price.output, self.tiers[t].price.input)
        )


def _coerce(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for key, value in env.items():
        parts = key.lower().split("_")
        if key.startswith("ACP_TIER_") and len(parts) >= 4:
            section, name, field = "tiers", parts[2], "_".join(parts[3:])
        elif key.startswith("ACP_COMPLEXITY_") and len(parts) >= 4:
            section, name, field = "complexity", parts[2], "_".join(parts[3:])
        elif key == "ACP_BUDGET_DAILY_USD":
            data.setdefault("budgets", {})["daily_usd"] = float(value)
            continue
        else:
            continue
        target = data.setdefault(section, {}).setdefault(name, {})
        if field.startswith("price_"):
            target.setdefault("price", {})[field[len("price_") :]] = float(value)
        else:
            target[field] = _coerce(value)


def load_config(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> RuntimeConfig:
    """Read ``path`` (default: ``ACP_CONFIG`` or the shipped file), apply env overrides."""
    env = os.environ if env is None else env
    source = Path(path or env.get("ACP_CONFIG") or DEFAULT_CONFIG)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {source} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    _apply_env(data, env)
    try:
        return RuntimeConfig.model_validate(data)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(f"{source}: {where}") from exc
