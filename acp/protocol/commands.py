"""Typed views of known commands, and a registry users extend with their own.

A typed model is a *view*: the envelope keeps the body exactly as written, so
unknown fields and unknown commands still flow untouched. Validation errors
name the field path (``data_flow.quality_score``) so the sender can fix them.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acp.errors import SchemaError
from acp.protocol.body import command_name

__all__ = [
    "AssignCommand",
    "CommandModel",
    "CommandRegistry",
    "DataFlow",
    "PipelineStatusCommand",
    "schema_error",
]

M = TypeVar("M", bound=type["CommandModel"])


class CommandModel(BaseModel):
    """Base for typed commands: unknown fields are kept, values are not coerced."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    #: the ``cmd`` value this model describes
    command: ClassVar[str]

    cmd: str
    respond_format: str | None = None
    hash: str | None = None


class DataFlow(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    ingestion_rate: str | float | None = None
    processing_lag: str | float | None = None
    quality_score: float | None = Field(default=None, ge=0.0, le=1.0)


class PipelineStatusCommand(CommandModel):
    """Ask a data engineer about a pipeline's health, with the metrics observed."""

    command = "PIPELINE_STATUS"

    component_id: str
    data_flow: DataFlow = Field(default_factory=DataFlow)
    infrastructure: dict[str, Any] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=list)


class AssignCommand(CommandModel):
    """Hand a component to an agent; ``to`` names the assignee."""

    command = "ASSIGN"

    to: str = Field(min_length=1)
    component_id: str | None = None
    component: str | None = None
    req: dict[str, Any] = Field(default_factory=dict)
    deliver: list[str] = Field(default_factory=list)
    deps: list[str] = Field(default_factory=list)


def schema_error(model: str, exc: ValidationError) -> SchemaError:
    return SchemaError(model, [(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()])


class CommandRegistry:
    """Command name -> typed model. Each runtime object owns one; nothing global."""

    def __init__(self, models: tuple[type[CommandModel], ...] = ()) -> None:
        self._models: dict[str, type[CommandModel]] = {}
        for model in models:
            self.register(model)

    @classmethod
    def with_builtins(cls) -> CommandRegistry:
        return cls((PipelineStatusCommand, AssignCommand))

    def register(self, model: M) -> M:
        """Add a model (usable as a class decorator); its ``command`` must be set."""
        name = getattr(model, "command", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{model.__name__} must define a class attribute 'command'")
        self._models[name] = model
        return model

    def get(self, name: str) -> type[CommandModel] | None:
        return self._models.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def names(self) -> list[str]:
        return sorted(self._models)

    def parse(self, body: dict[str, Any]) -> CommandModel | None:
        """The typed view of ``body`` (None for unregistered commands); raises ``SchemaError``."""
        name = command_name(body)
        model = self._models.get(name) if name else None
        if model is None:
            return None
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise schema_error(name or model.__name__, exc) from exc
