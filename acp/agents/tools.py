"""Python functions a Claude-backed agent may call: typed, validated, durable.

::

    @tool(idempotent=True)
    async def pipeline_lag(component_id: str, window_minutes: int = 15) -> dict:
        '''Processing lag of a pipeline component over the last minutes.'''
        ...

    agent = ClaudeAgent(definition, client=client, config=config, tools=[pipeline_lag])

The arguments' schema comes from the signature (a pydantic model of its
parameters) and the description from the docstring; the model's input is
validated before the function runs, and a bad input comes back to the model as a
tool error naming the field. The agent loop records each result before the next
model turn, so after a crash a tool that finished is not run again; a tool that
is not ``idempotent`` and was interrupted before its result was recorded is
reported to the model as "outcome unknown", never silently run twice.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, get_type_hints, overload

from pydantic import BaseModel, ValidationError, create_model

from acp.errors import ConfigError

if TYPE_CHECKING:  # the SDK loads slowly; only its type is needed here
    from anthropic.types import ToolParam

__all__ = ["FunctionTool", "Tool", "tool"]


class Tool(Protocol):
    """What the agent loop needs of a tool it runs itself, whatever runs it (a Python
    function, a workspace tool, an MCP server)."""

    @property
    def name(self) -> str: ...

    @property
    def idempotent(self) -> bool: ...

    def param(self) -> ToolParam:
        """The tool as the Messages API's ``tools`` list takes it."""
        ...

    async def run(self, arguments: dict[str, Any]) -> tuple[bool, Any]:
        """(True, result) or (False, what went wrong, for the model to read)."""
        ...


@dataclass(frozen=True)
class FunctionTool:
    """A Python function offered to the model as a tool."""

    name: str
    description: str
    arguments: type[BaseModel]
    function: Callable[..., Any]
    #: running it twice does no harm (a read): after a crash it is simply run again
    idempotent: bool = False

    def param(self) -> ToolParam:
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        return {"name": self.name, "description": self.description, "input_schema": schema}

    async def run(self, arguments: dict[str, Any]) -> tuple[bool, Any]:
        """(True, result) or (False, what is wrong with the arguments)."""
        try:
            args = self.arguments.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '<input>'}: {e['msg']}" for e in exc.errors()
            )
            return False, f"invalid arguments: {problems}"
        result = self.function(**dict(args))
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        return True, result


def _describe(function: Callable[..., Any]) -> str:
    doc = inspect.getdoc(function) or ""
    first = doc.split("\n\n", 1)[0].strip()
    if not first:
        raise ConfigError(f"tool {function.__name__!r} needs a docstring: the model reads it")
    return " ".join(first.split())


def _arguments(function: Callable[..., Any]) -> type[BaseModel]:
    hints = get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ConfigError(f"tool {function.__name__!r}: *args and **kwargs cannot be typed")
        if name not in hints:
            raise ConfigError(f"tool {function.__name__!r}: parameter {name!r} has no type")
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[name] = (hints[name], default)
    model: type[BaseModel] = create_model(f"{function.__name__}_arguments", **fields)
    return model


@overload
def tool(function: Callable[..., Awaitable[Any] | Any], /) -> FunctionTool: ...


@overload
def tool(
    *, name: str | None = None, idempotent: bool = False
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    idempotent: bool = False,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a typed function (sync or async) a tool: ``@tool`` or ``@tool(idempotent=True)``."""

    def make(fn: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(
            name=name or fn.__name__,
            description=_describe(fn),
            arguments=_arguments(fn),
            function=fn,
            idempotent=idempotent,
        )

    return make(function) if function is not None else make
