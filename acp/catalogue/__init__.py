"""The catalogue the runtime ships: agent definitions, the demo's Python agents and
example workflows, as package data, so an installed wheel can run its own demo
from any directory.

Which definitions a command uses is decided in one place, :func:`choose_agents`:
the paths given (``--agents``), else ``ACP_AGENTS``, else ``./agents`` when the
current directory has one, else this shipped catalogue. Every command says
which it used, because "no such agent" reads very differently once you know
the catalogue came from somewhere else.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from acp.agents import loader
from acp.errors import ConfigError

__all__ = [
    "ENV_AGENTS",
    "AgentsChoice",
    "choose_agents",
    "find_workflow",
    "shipped_agents",
    "shipped_workflows",
]

#: ``os.pathsep``-separated definition files or folders, when ``--agents`` is not given
ENV_AGENTS = "ACP_AGENTS"

_extracted: Path | None = None


def _package_dir() -> Path:
    """This package's files as a real directory: the definitions are read as files.

    A normal install is a directory already; a zipped one is copied out once."""
    global _extracted
    root = resources.files(__name__)
    if isinstance(root, Path):
        return root
    if _extracted is None:
        target = Path(tempfile.mkdtemp(prefix="acp-catalogue-"))
        atexit.register(shutil.rmtree, target, True)
        for sub in ("agents", "workflows"):
            (target / sub).mkdir()
            for item in (root / sub).iterdir():
                if item.is_file():
                    (target / sub / item.name).write_bytes(item.read_bytes())
        _extracted = target
    return _extracted


def shipped_agents() -> Path:
    """The folder of the shipped agent definitions."""
    return _package_dir() / "agents"


def shipped_workflows() -> Path:
    """The folder of the shipped example workflows (``acp run health_check``)."""
    return _package_dir() / "workflows"


@dataclass(frozen=True)
class AgentsChoice:
    """The definition paths a command reads and, for people, where they came from."""

    paths: tuple[Path, ...]
    source: str
    shipped: bool = False

    def load(self) -> loader.Catalogue:
        return loader.load_catalogue(*self.paths)

    def describe(self, catalogue: loader.Catalogue) -> str:
        """One line for stderr: which catalogue, how many agents, how many problems."""
        problems = len(catalogue.errors)
        issues = f", {problems} problem{'' if problems == 1 else 's'}" if problems else ""
        count = len(catalogue)
        where = "acp.catalogue, " if self.shipped else ""
        plural = "" if count == 1 else "s"
        return f"agents: {self.source} ({where}{count} definition{plural}{issues})"


def choose_agents(
    paths: Sequence[Path] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> AgentsChoice:
    """``paths`` if given, else ``ACP_AGENTS``, else ``./agents`` if present, else shipped."""
    env = os.environ if env is None else env
    if paths:
        return AgentsChoice(tuple(paths), ", ".join(map(str, paths)))
    if env.get(ENV_AGENTS):
        named = tuple(Path(p) for p in env[ENV_AGENTS].split(os.pathsep) if p)
        return AgentsChoice(named, f"{', '.join(map(str, named))} (from {ENV_AGENTS})")
    local = (cwd or Path.cwd()) / "agents"
    if local.is_dir():
        return AgentsChoice((Path("agents"),), "./agents")
    return AgentsChoice((shipped_agents(),), "the shipped catalogue", shipped=True)


def find_workflow(name: str) -> Path:
    """A workflow file by path, or a shipped workflow by name (``health_check``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_workflows() / (name if name.endswith(".json") else f"{name}.json")
    if shipped.is_file() and not path.parent.name:
        return shipped
    known = ", ".join(sorted(p.stem for p in shipped_workflows().glob("*.json")))
    raise ConfigError(
        f"{name}: no such workflow file, and no shipped workflow by that name ({known})"
    )
