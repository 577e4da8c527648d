"""An agent definition as typed, immutable data.

A definition is a Claude Code subagent file: YAML frontmatter (``name``,
``description``, ``model``, ``tools`` ...) plus a markdown body that is the
system prompt. ACP adds ``computational_complexity`` (for scheduling),
``entrypoint`` (a Python implementation, so one catalogue can mix Python and
Claude-backed agents) and ``allowed_tiers`` (how far the coordinator may move
the agent between model tiers). Keys nobody here knows stay in ``extra`` so a
definition never silently loses what its author wrote.

The models validate values only; reading files and locating problems by line
is the loader's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from acp.protocol import MessageKind, classify_body, command_name

__all__ = [
    "COMPLEXITIES",
    "FRONTMATTER_KEYS",
    "MODEL_ALIASES",
    "AgentDefinition",
    "Complexity",
    "DeclaredMessage",
    "Tier",
    "tier_of",
]

Tier = Literal["haiku", "sonnet", "opus"]
Complexity = Literal["low", "medium", "high"]

#: cheapest first, the order the coordinator steps through (same as ``acp.protocol.TIERS``)
_TIERS: tuple[Tier, ...] = get_args(Tier)
COMPLEXITIES: tuple[Complexity, ...] = get_args(Complexity)
#: the short names Claude Code accepts for ``model``
MODEL_ALIASES: tuple[str, ...] = (*_TIERS, "inherit")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._:@/-]*$")
_ENTRYPOINT = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def tier_of(model: str) -> Tier | None:
    """The tier a model alias or explicit model id belongs to, if it names one.

    ``inherit`` and ids that mention no tier give ``None``: the caller decides.
    """
    lowered = model.lower()
    for tier in _TIERS:
        if tier in lowered:
            return tier
    return None


def _as_list(value: object) -> object:
    """Claude Code lets list-valued keys be a comma-separated string."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class DeclaredMessage(BaseModel):
    """One JSON example from a definition's body: what the agent says it exchanges."""

    model_config = ConfigDict(frozen=True)

    kind: MessageKind
    command: str | None = None
    #: top-level keys, in the order the example lists them
    fields: tuple[str, ...] = ()
    example: dict[str, Any]
    #: 1-based line of the opening fence in the definition file
    line: int
    #: inside the "Agent Coordination Protocol (ACP)" section
    in_acp_section: bool = False
    #: the heading above the example and the line of text just before it
    #: ("Your reply", "Response format:"): what the example is an example of
    context: str = ""

    @classmethod
    def from_example(
        cls, example: dict[str, Any], *, line: int, in_acp_section: bool, context: str = ""
    ) -> DeclaredMessage:
        """Classify with the protocol's own rules so loader and runtime agree."""
        return cls(
            kind=classify_body(example),
            command=command_name(example),
            fields=tuple(example),
            example=example,
            line=line,
            in_acp_section=in_acp_section,
            context=context,
        )


class AgentDefinition(BaseModel):
    """A parsed agent definition file.

    Fields named like Claude Code's camelCase keys (``permissionMode``,
    ``disallowedTools``) accept both spellings.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    name: str
    description: str
    #: ``haiku`` | ``sonnet`` | ``opus`` | ``inherit`` | an explicit model id
    model: str = "inherit"
    computational_complexity: Complexity = "medium"
    #: tools the agent may use; empty means the file does not restrict them
    tools: list[str] = Field(default_factory=list)
    disallowed_tools: list[str] = Field(default_factory=list, alias="disallowedTools")
    color: str | None = None
    permission_mode: str | None = Field(default=None, alias="permissionMode")
    skills: list[str] = Field(default_factory=list)
    hooks: dict[str, Any] | None = None
    #: ``"package.module:attr"`` naming a Python agent that implements this definition
    entrypoint: str | None = None
    #: tiers the coordinator may move this agent to; empty means stay on ``model``
    allowed_tiers: list[Tier] = Field(default_factory=list)
    #: agents this one may delegate to (``["*"]``: the whole catalogue); unset: the
    #: catalogue agents its body names
    delegates_to: list[str] | None = None
    #: every other frontmatter key (``triggers``, ``output_contract``, unknown keys ...)
    extra: dict[str, Any] = Field(default_factory=dict)
    #: the markdown body after the frontmatter
    system_prompt: str = ""
    path: Path | None = None
    messages: tuple[DeclaredMessage, ...] = ()

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: object) -> object:
        if isinstance(value, str) and not _NAME.match(value):
            raise ValueError(
                "name must be 1-64 lowercase letters, digits, '-' or '_' "
                f"starting with a letter or digit; got {value!r}"
            )
        return value

    @field_validator("delegates_to", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("description")
    @classmethod
    def _check_description(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("description must not be empty: the coordinator routes by it")
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _check_model(cls, value: object) -> str:
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in MODEL_ALIASES:
                return text.lower()
            if _MODEL_ID.match(text) and "claude" in text:
                return text
        raise ValueError(
            f"model must be one of {', '.join(MODEL_ALIASES)} or an explicit Claude "
            f"model id such as 'claude-sonnet-4-5'; got {value!r}"
        )

    @field_validator("computational_complexity", mode="before")
    @classmethod
    def _check_complexity(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in COMPLEXITIES:
            return value.strip().lower()
        raise ValueError(
            f"computational_complexity must be one of {', '.join(COMPLEXITIES)}; got {value!r}"
        )

    @field_validator("tools", "disallowed_tools", "skills", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        return _as_list(value)

    @field_validator("allowed_tiers", mode="before")
    @classmethod
    def _check_tiers(cls, value: object) -> object:
        value = _as_list(value)
        if not isinstance(value, list):
            return value
        tiers: list[str] = []
        for item in value:
            tier = item.strip().lower() if isinstance(item, str) else item
            if tier not in _TIERS:
                raise ValueError(f"allowed_tiers entries must be {', '.join(_TIERS)}; got {item!r}")
            if tier not in tiers:
                tiers.append(tier)
        return tiers

    @field_validator("entrypoint")
    @classmethod
    def _check_entrypoint(cls, value: str | None) -> str | None:
        if value is not None and not _ENTRYPOINT.match(value):
            raise ValueError(f"entrypoint must look like 'package.module:attr'; got {value!r}")
        return value

    @property
    def tier(self) -> Tier | None:
        """The model tier to schedule on; ``None`` for ``inherit`` or an unrecognised id."""
        return None if self.model == "inherit" else tier_of(self.model)

    @property
    def commands(self) -> list[str]:
        """Command names the file declares, sorted and unique."""
        return sorted({m.command for m in self.messages if m.command is not None})

    @property
    def acp_messages(self) -> list[DeclaredMessage]:
        """Messages shown in the ACP section itself (the authoritative ones)."""
        return [m for m in self.messages if m.in_acp_section]

    @property
    def status_updates(self) -> list[DeclaredMessage]:
        return [m for m in self.messages if m.kind is MessageKind.STATUS]

    @property
    def workflows(self) -> list[DeclaredMessage]:
        return [m for m in self.messages if m.kind is MessageKind.WORKFLOW]

    @property
    def examples(self) -> list[dict[str, Any]]:
        """Every JSON object the body shows, in file order."""
        return [m.example for m in self.messages]


def _frontmatter_keys() -> dict[str, str]:
    derived = {"extra", "system_prompt", "path", "messages"}
    keys: dict[str, str] = {}
    for field_name, info in AgentDefinition.model_fields.items():
        if field_name in derived:
            continue
        keys[field_name] = field_name
        if info.alias:
            keys[info.alias] = field_name
    return keys


#: frontmatter spelling -> ``AgentDefinition`` field; any other key goes to ``extra``
FRONTMATTER_KEYS: Mapping[str, str] = MappingProxyType(_frontmatter_keys())
