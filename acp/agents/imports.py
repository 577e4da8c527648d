"""``module:attr`` names in configuration and on the command line, imported."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from acp.agents.sdk import AgentBase
from acp.errors import ConfigError

__all__ = ["import_agent", "import_object"]


def import_object(spec: str, *, what: str, search: Sequence[Path] = ()) -> object:
    """The object at ``module:attr`` (``attr`` may be dotted).

    The current directory and ``search`` paths are importable, as with
    ``python -m``, so a project's own modules can be named; ``what`` names the
    thing wanted in errors ("agent", "tool")."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{spec!r} is not of the form module:attr")
    for path in (Path.cwd(), *search):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for {what} {spec!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r}") from None
    return target


def import_agent(spec: str, *, search: Sequence[Path] = ()) -> AgentBase:
    """The agent at ``module:attr`` (an agent, or a callable returning one).

    The current directory and ``search`` paths are importable, as with
    ``python -m``, so a project's own modules can be named.
    """
    target = import_object(spec, what="agent", search=search)
    if not isinstance(target, AgentBase) and callable(target):
        target = target()
    if not isinstance(target, AgentBase):
        raise ConfigError(f"{spec!r} is a {type(target).__name__}, not an agent (acp.agents.Agent)")
    return target
