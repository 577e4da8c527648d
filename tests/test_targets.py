"""Targets: agent names from a catalogue (Python entrypoints or Claude) and module:attr."""

from __future__ import annotations

from pathlib import Path

import pytest

from acp.agents import Agent, AgentBase, AgentDefinition, load_catalogue
from acp.agents.imports import import_agent
from acp.cli.targets import resolve_targets
from acp.errors import ConfigError, UnknownAgent

DEFINITION = "---\nname: {name}\ndescription: d\nmodel: haiku\n{extra}---\n\nPrompt.\n"


def catalogue(tmp_path: Path, **files: str) -> Path:
    for name, extra in files.items():
        (tmp_path / f"{name}.md").write_text(DEFINITION.format(name=name, extra=extra))
    return tmp_path


def test_one_catalogue_mixes_python_and_claude_agents(tmp_path: Path) -> None:
    (tmp_path / "my_agents.py").write_text(
        "from acp.agents import Agent\nagent = Agent('python-one')\n"
    )
    # the catalogue sits beside the code, as in a project: defs/ next to my_agents.py
    (tmp_path / "defs").mkdir()
    folder = catalogue(
        tmp_path / "defs", **{"python-one": "entrypoint: my_agents:agent\n", "claude-one": ""}
    )
    built: list[AgentDefinition] = []

    def claude(definition: AgentDefinition) -> AgentBase:
        built.append(definition)
        return Agent(definition.name)

    agents = resolve_targets(
        ["python-one", "claude-one"], catalogue=load_catalogue(folder), claude=claude
    )
    assert [a.name for a in agents] == ["python-one", "claude-one"]
    assert [d.name for d in built] == ["claude-one"]


def test_entrypoint_must_be_the_agent_the_definition_names(tmp_path: Path) -> None:
    (tmp_path / "other.py").write_text(
        "from acp.agents import Agent\nagent = Agent('someone-else')\n"
    )
    (tmp_path / "defs").mkdir()
    folder = catalogue(tmp_path / "defs", **{"named-one": "entrypoint: other:agent\n"})
    with pytest.raises(ConfigError, match="someone-else"):
        resolve_targets(["named-one"], catalogue=load_catalogue(folder))


def test_module_attr_targets_and_their_errors() -> None:
    assert import_agent("acp.catalogue.pipeline_doctor:agent").name == "pipeline-doctor"
    with pytest.raises(ConfigError, match="module:attr"):
        import_agent("no-colon")
    with pytest.raises(ConfigError, match="cannot import"):
        import_agent("no_such_module_anywhere:agent")
    with pytest.raises(ConfigError, match="not an agent"):
        import_agent("json:dumps.__name__")


def test_unknown_names_and_duplicates(tmp_path: Path) -> None:
    folder = catalogue(
        tmp_path, **{"only-one": "entrypoint: acp.catalogue.pipeline_doctor:agent\n"}
    )
    with pytest.raises(UnknownAgent):
        resolve_targets(["nobody"], catalogue=load_catalogue(folder))
    with pytest.raises(ConfigError, match="more than once"):
        resolve_targets(
            ["acp.catalogue.pipeline_doctor:agent"] * 2, catalogue=load_catalogue(folder)
        )
