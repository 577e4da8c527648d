"""Agent definition files: the real corpus, our own catalogue, and every way a file breaks."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent
from typing import get_args

import pytest

import acp.agents
from acp.agents import (
    AgentDefinition,
    Catalogue,
    DeclaredMessage,
    Tier,
    load_catalogue,
    load_definition,
    tier_of,
)
from acp.errors import AgentError, DefinitionError, UnknownAgent
from acp.protocol import TIERS, MessageKind

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
PROJECT_AGENTS = Path(__file__).resolve().parents[1] / "acp" / "catalogue" / "agents"

needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"shared agent corpus not found at {CORPUS}"
)

GOOD = """\
---
name: {name}
description: A test agent.
model: sonnet
---

You are a test agent.

## Agent Coordination Protocol (ACP)

```json
{{"cmd": "PING", "target_id": "t1", "respond_format": "STRUCTURED_JSON"}}
```
"""


def write(directory: Path, filename: str, text: str) -> Path:
    path = directory / filename
    path.write_text(dedent(text), encoding="utf-8")
    return path


def good(directory: Path, name: str, filename: str | None = None) -> Path:
    return write(directory, filename or f"{name}.md", GOOD.format(name=name))


def only_error(catalogue: Catalogue) -> DefinitionError:
    assert len(catalogue.errors) == 1, catalogue.errors
    return catalogue.errors[0]


# --- the real corpus ---------------------------------------------------------------


@needs_corpus
def test_corpus_loads_all_five_with_their_commands() -> None:
    catalogue = load_catalogue(CORPUS)

    summary = {
        d.name: (d.model, d.tier, d.computational_complexity, d.commands)
        for d in catalogue.definitions.values()
    }
    assert summary == {
        "audio-engineer": ("haiku", "haiku", "low", ["AUDIO_PRODUCTION", "SCRIPTER_GENERATE"]),
        "data-engineer": ("sonnet", "sonnet", "medium", ["PIPELINE_STATUS"]),
        "project-orchestrator": ("sonnet", "sonnet", "medium", ["ASSIGN"]),
        "security-audit-specialist": ("opus", "opus", "high", ["SECURITY_AUDIT"]),
        "the-synthesist": ("sonnet", "sonnet", "medium", ["SYNTHESIZE"]),
    }


@needs_corpus
def test_data_engineer_reference_file() -> None:
    d = load_definition(CORPUS / "data-engineer.md")

    assert d.color == "green"
    assert d.path == CORPUS / "data-engineer.md"
    assert d.system_prompt.startswith("You are a data engineer")
    assert [(m.line, m.kind, m.in_acp_section) for m in d.messages] == [
        (200, MessageKind.COMMAND, True),
        (216, MessageKind.STATUS, True),
    ]
    command, status = d.messages
    assert command.command == "PIPELINE_STATUS"
    assert command.fields[:2] == ("cmd", "component_id")
    assert command.example["respond_format"] == "STRUCTURED_JSON"
    assert status.fields == ("data_platform", "optimization", "hash")
    assert d.status_updates == [status]
    assert d.examples == [command.example, status.example]


@needs_corpus
def test_orchestrator_malformed_block_is_one_error_and_the_rest_loads() -> None:
    catalogue = load_catalogue(CORPUS)

    error = only_error(catalogue)
    assert error.file == str(CORPUS / "project-orchestrator.md")
    # The fence opens on line 277; the decoder fails on the first content line.
    assert error.line == 278
    assert "277" in error.message
    orchestrator = catalogue.get("project-orchestrator")
    assert len(orchestrator.messages) == 14
    assert orchestrator.acp_messages[0].command == "ASSIGN"
    assert orchestrator.acp_messages[0].example["to"] == "db_spec_01"
    assert {w.example["project"] for w in orchestrator.workflows} == {
        "saas_platform",
        "video_series",
    }


@needs_corpus
def test_load_definition_keeps_the_orchestrator_and_reports_its_block() -> None:
    problems: list[DefinitionError] = []

    d = load_definition(CORPUS / "project-orchestrator.md", problems=problems)

    assert d.name == "project-orchestrator"
    assert [p.line for p in problems] == [278]


@needs_corpus
def test_audio_engineer_stray_fence_still_finds_its_messages() -> None:
    d = load_definition(CORPUS / "audio-engineer.md")

    assert [(m.line, m.kind, m.in_acp_section) for m in d.messages] == [
        (584, MessageKind.COMMAND, True),
        (600, MessageKind.COMMAND, True),
        (616, MessageKind.STATUS, True),
        (654, MessageKind.WORKFLOW, False),
    ]
    assert d.workflows[0].example["workflow"] == "podcast_production"


@needs_corpus
def test_synthesist_contract_metadata_is_reachable() -> None:
    d = load_definition(CORPUS / "the-synthesist.md")

    assert set(d.extra) >= {"triggers", "output_contract", "handoff_rules", "input_requirements"}
    assert "concept_clustering_needed" in d.extra["triggers"]["engage_when"]
    assert d.extra["output_contract"]["type"] == "IDEATION_REPORT"
    # Its ACP heading is a level-1 "SECTION 4" heading in capitals.
    assert [m.command for m in d.acp_messages] == ["SYNTHESIZE", None]
    assert len(d.workflows) == 2


# --- the project's own catalogue ----------------------------------------------------


def test_project_catalogue_validates_cleanly() -> None:
    catalogue = load_catalogue(PROJECT_AGENTS)

    assert catalogue.errors == []
    assert {
        d.name: (d.model, d.computational_complexity) for d in catalogue.definitions.values()
    } == {
        "architecture-reviewer": ("opus", "high"),
        "data-engineer": ("sonnet", "medium"),
        "pipeline-doctor": ("haiku", "low"),
        "pipeline-monitor": ("haiku", "low"),
        "triage-clerk": ("haiku", "low"),
    }
    assert catalogue.get("architecture-reviewer").allowed_tiers == ["opus", "sonnet"]
    assert catalogue.get("pipeline-monitor").entrypoint == "acp.catalogue.pipeline_monitor:agent"


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("data-engineer", "PIPELINE_STATUS"),
        ("pipeline-monitor", "PIPELINE_STATUS"),
        ("triage-clerk", "TRIAGE"),
        ("architecture-reviewer", "ARCH_REVIEW"),
    ],
)
def test_project_agents_declare_a_command_and_a_status_in_their_acp_section(
    name: str, command: str
) -> None:
    d = load_definition(PROJECT_AGENTS / f"{name}.md")

    commands = [m for m in d.acp_messages if m.kind is MessageKind.COMMAND]
    assert command in [m.command for m in commands]
    body = next(m.example for m in commands if m.command == command)
    assert "respond_format" in body
    assert any(key.endswith("_id") for key in body)
    statuses = [m for m in d.acp_messages if m.kind is MessageKind.STATUS]
    assert any(
        key.endswith("_status") and isinstance(m.example[key], dict)
        for m in statuses
        for key in m.fields
    )


def test_data_engineer_publishes_data_platform_updates() -> None:
    d = load_definition(PROJECT_AGENTS / "data-engineer.md")

    assert any("data_platform" in m.fields for m in d.status_updates)


# --- broken files: each reported with file and line, never stopping the rest ----------


def test_missing_frontmatter_is_fatal_at_line_1(tmp_path: Path) -> None:
    path = write(tmp_path, "plain.md", "# Just markdown\n")

    with pytest.raises(DefinitionError) as caught:
        load_definition(path)

    assert (caught.value.file, caught.value.line) == (str(path), 1)
    assert "frontmatter" in caught.value.message


def test_unclosed_frontmatter_is_fatal(tmp_path: Path) -> None:
    path = write(tmp_path, "open.md", "---\nname: open\ndescription: never closed\n")

    with pytest.raises(DefinitionError, match="never closed"):
        load_definition(path)


def test_invalid_yaml_reports_the_file_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad-yaml.md",
        """\
        ---
        name: bad-yaml
        description: broken: here
        ---
        body
        """,
    )

    with pytest.raises(DefinitionError) as caught:
        load_definition(path)

    assert caught.value.line == 3
    assert "invalid YAML" in caught.value.message


@pytest.mark.parametrize(
    ("frontmatter", "got"),
    [("- a\n- b", "got a list"), ("just text", "got a str"), ("", "nothing")],
)
def test_frontmatter_must_be_a_mapping(tmp_path: Path, frontmatter: str, got: str) -> None:
    path = write(tmp_path, "odd.md", f"---\n{frontmatter}\n---\nbody\n")

    with pytest.raises(DefinitionError, match="mapping") as caught:
        load_definition(path)

    assert caught.value.line == 1
    assert got in caught.value.message


def test_bad_model_names_the_field_and_the_allowed_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "wrong-model.md",
        """\
        ---
        name: wrong-model
        description: Uses a model we do not know.
        model: gpt-4
        ---
        """,
    )

    with pytest.raises(DefinitionError) as caught:
        load_definition(path)

    assert caught.value.line == 4
    assert "model" in caught.value.message
    assert "haiku, sonnet, opus, inherit" in caught.value.message
    assert "'gpt-4'" in caught.value.message


def test_bad_complexity_names_the_field_and_the_allowed_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "hard.md",
        "---\nname: hard\ndescription: d\ncomputational_complexity: extreme\n---\n",
    )

    with pytest.raises(DefinitionError) as caught:
        load_definition(path)

    assert caught.value.line == 4
    assert "computational_complexity must be one of low, medium, high" in caught.value.message


def test_every_invalid_field_is_reported(tmp_path: Path) -> None:
    write(
        tmp_path,
        "many.md",
        "---\nname: many\ndescription: d\nmodel: gpt\ncomputational_complexity: huge\n---\n",
    )

    catalogue = load_catalogue(tmp_path)

    assert [e.line for e in catalogue.errors] == [4, 5]
    assert catalogue.definitions == {}


@pytest.mark.parametrize(
    ("frontmatter", "line", "fragment"),
    [
        ("description: no name here", 1, "has no 'name'"),
        ("name: nameless", 1, "has no 'description'"),
        ("name: Bad Name\ndescription: d", 2, "lowercase"),
        ("name: empty\ndescription: '  '", 3, "description must not be empty"),
        ("name: ep\ndescription: d\nentrypoint: not-a-path", 4, "module:attr"),
        ("name: tiers\ndescription: d\nallowed_tiers: [opus, gpt]", 4, "allowed_tiers"),
        ("name: tools\ndescription: d\ntools: [Read, 3]", 4, "tools[1]"),
    ],
)
def test_invalid_fields_are_located(
    tmp_path: Path, frontmatter: str, line: int, fragment: str
) -> None:
    path = write(tmp_path, "agent.md", f"---\n{frontmatter}\n---\nbody\n")

    with pytest.raises(DefinitionError) as caught:
        load_definition(path)

    assert caught.value.line == line
    assert fragment in caught.value.message


def test_malformed_json_block_is_reported_and_the_definition_still_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "chatty.md",
        """\
        ---
        name: chatty
        description: d
        ---

        ```json
        {"cmd": "FIRST",
         "oops": }
        ```

        ```json
        {"cmd": "SECOND"}
        ```
        """,
    )

    catalogue = load_catalogue(path)

    error = only_error(catalogue)
    assert (error.file, error.line) == (str(path), 8)  # the line of the stray "}"
    assert "malformed JSON" in error.message
    assert "line 6" in error.message
    assert catalogue.get("chatty").commands == ["SECOND"]


def test_json_block_that_is_not_an_object_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listy.md",
        "---\nname: listy\ndescription: d\n---\n\n```json\n[1, 2]\n```\n",
    )

    catalogue = load_catalogue(path)

    error = only_error(catalogue)
    assert error.line == 6
    assert "JSON object" in error.message
    assert catalogue.get("listy").messages == ()


def test_nan_is_not_json(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "nan.md",
        '---\nname: nan\ndescription: d\n---\n```json\n{\n  "x": NaN\n}\n```\n',
    )

    error = only_error(load_catalogue(path))

    assert (error.line, error.message) == (7, "NaN is not valid JSON")


def test_name_differing_from_the_file_name_is_reported_but_loaded(tmp_path: Path) -> None:
    good(tmp_path, "declared-name", filename="file-name.md")

    catalogue = load_catalogue(tmp_path)

    error = only_error(catalogue)
    assert (error.file, error.line) == (str(tmp_path / "file-name.md"), 2)
    assert "declared-name" in error.message
    assert "file-name.md" in error.message
    assert catalogue.names == ["declared-name"]


def test_duplicate_names_first_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    good(first, "twin")
    good(second, "twin")

    catalogue = load_catalogue(first, second)

    error = only_error(catalogue)
    assert (error.file, error.line) == (str(second / "twin.md"), 2)
    assert "duplicate" in error.message
    assert catalogue.get("twin").path == first / "twin.md"


def test_a_folder_of_broken_files_never_stops_at_the_first(tmp_path: Path) -> None:
    write(tmp_path, "a-no-frontmatter.md", "no frontmatter\n")
    write(tmp_path, "b-bad-yaml.md", "---\nname: [unclosed\n---\n")
    write(tmp_path, "c-list.md", "---\n- x\n---\n")
    write(tmp_path, "d-model.md", "---\nname: d-model\ndescription: d\nmodel: gpt\n---\n")
    write(tmp_path, "e-json.md", "---\nname: e-json\ndescription: d\n---\n```json\n{,}\n```\n")
    good(tmp_path, "f-renamed", filename="f-file.md")
    good(tmp_path, "ok-agent")
    good(tmp_path, "ok-agent", filename="z-dup.md")
    write(tmp_path, "README.md", "not a definition\n")
    write(tmp_path, "notes.txt", "ignored\n")

    catalogue = load_catalogue(tmp_path)

    located = [(Path(e.file).name, e.line) for e in catalogue.errors]
    assert located == [
        ("a-no-frontmatter.md", 1),
        ("b-bad-yaml.md", 2),
        ("c-list.md", 1),
        ("d-model.md", 4),
        ("e-json.md", 6),
        ("f-file.md", 2),
        ("z-dup.md", 2),  # also differs from its file name, on the same line
        ("z-dup.md", 2),
    ]
    assert sorted(catalogue.names) == ["e-json", "f-renamed", "ok-agent"]
    assert not catalogue.ok


def test_missing_path_is_an_error_not_a_crash(tmp_path: Path) -> None:
    catalogue = load_catalogue(tmp_path / "nowhere")

    assert (only_error(catalogue).line, len(catalogue)) == (0, 0)


def test_the_same_file_twice_loads_once(tmp_path: Path) -> None:
    path = good(tmp_path, "once")

    catalogue = load_catalogue(tmp_path, path)

    assert catalogue.errors == []
    assert catalogue.names == ["once"]


def test_repeated_frontmatter_key_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "rep.md", "---\nname: rep\ndescription: a\ndescription: b\n---\n")

    catalogue = load_catalogue(path)

    assert only_error(catalogue).line == 4
    assert catalogue.get("rep").description == "b"


# --- fields -----------------------------------------------------------------------


def test_extra_keys_and_claude_code_fields_are_reachable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "full.md",
        """\
        ---
        name: full
        description: Everything set.
        model: claude-sonnet-5-5
        computational_complexity: high
        tools: Read, Grep ,Bash
        disallowedTools: [Write]
        permissionMode: plan
        skills: pdf
        hooks:
          PreToolUse: [{matcher: Bash}]
        color: red
        entrypoint: my_pkg.agents:full_agent
        allowed_tiers: sonnet, haiku
        triggers: {engage_when: [always]}
        custom_key: 42
        messages: not the declared messages
        ---
        """,
    )

    d = load_definition(path)

    assert d.tier == "sonnet"
    assert d.computational_complexity == "high"
    assert d.tools == ["Read", "Grep", "Bash"]
    assert d.disallowed_tools == ["Write"]
    assert d.permission_mode == "plan"
    assert d.skills == ["pdf"]
    assert d.hooks == {"PreToolUse": [{"matcher": "Bash"}]}
    assert d.entrypoint == "my_pkg.agents:full_agent"
    assert d.allowed_tiers == ["sonnet", "haiku"]
    assert d.extra == {
        "triggers": {"engage_when": ["always"]},
        "custom_key": 42,
        "messages": "not the declared messages",
    }
    assert d.messages == ()


def test_tools_as_list_and_snake_case_permission_mode(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listed.md",
        "---\nname: listed\ndescription: d\ntools: [Read, Edit]\npermission_mode: acceptEdits\n---\n",
    )

    d = load_definition(path)

    assert d.tools == ["Read", "Edit"]
    assert d.permission_mode == "acceptEdits"


def test_defaults() -> None:
    d = AgentDefinition(name="minimal", description="d")

    assert (d.model, d.tier, d.computational_complexity) == ("inherit", None, "medium")
    assert (d.tools, d.allowed_tiers, d.extra, d.messages) == ([], [], {}, ())


@pytest.mark.parametrize(
    ("model", "tier"),
    [
        ("haiku", "haiku"),
        ("Sonnet", "sonnet"),
        ("opus", "opus"),
        ("inherit", None),
        ("claude-sonnet-5-5", "sonnet"),
        ("claude-opus-4-1-20250805", "opus"),
        ("claude-experimental-1", None),
    ],
)
def test_tier(model: str, tier: str | None) -> None:
    assert AgentDefinition(name="t", description="d", model=model).tier == tier


def test_definitions_are_frozen() -> None:
    d = AgentDefinition(name="frozen", description="d")

    with pytest.raises(ValueError, match="frozen"):
        d.name = "thawed"  # type: ignore[misc]


def test_tiers_agree_with_the_protocol() -> None:
    assert get_args(Tier) == TIERS
    assert [tier_of(t) for t in TIERS] == list(TIERS)


# --- markdown fences (CommonMark) ---------------------------------------------------


def messages_of(tmp_path: Path, body: str) -> tuple[list[DeclaredMessage], list[DefinitionError]]:
    path = write(tmp_path, "md.md", "---\nname: md\ndescription: d\n---\n" + dedent(body))
    problems: list[DefinitionError] = []
    d = load_definition(path, problems=problems)
    return list(d.messages), problems


def test_a_fence_with_an_info_string_never_closes(tmp_path: Path) -> None:
    found, problems = messages_of(
        tmp_path,
        """\
        ```
        ```python
        not closed by the line above
        ```
        ```json
        {"cmd": "AFTER"}
        ```
        """,
    )

    assert problems == []
    assert [(m.command, m.line) for m in found] == [("AFTER", 9)]


def test_closing_fence_must_match_character_and_length(tmp_path: Path) -> None:
    found, problems = messages_of(
        tmp_path,
        """\
        ````markdown
        ```json
        {"cmd": "HIDDEN"}
        ```
        ````
        ~~~text
        ```
        ~~~~
        ~~~JSON
        {"cmd": "TILDE"}
        ~~~
        """,
    )

    assert problems == []
    assert [(m.command, m.line) for m in found] == [("TILDE", 13)]


def test_only_json_info_strings_are_messages(tmp_path: Path) -> None:
    found, problems = messages_of(
        tmp_path,
        """\
        ```jsonc
        {"cmd": "COMMENTED"} // fine here
        ```
        ``` json title="x"
        {"cmd": "SPACED"}
        ```
        """,
    )

    assert problems == []
    assert [m.command for m in found] == ["SPACED"]


def test_acp_section_ends_at_a_heading_of_the_same_level(tmp_path: Path) -> None:
    found, _ = messages_of(
        tmp_path,
        """\
        ```json
        {"before": 1}
        ```
        ## Agent Coordination Protocol (ACP) ##
        ### Sub heading stays inside
        ```json
        {"inside": 1}
        ```
        ```python
        # a comment is not a heading
        ```
        ```json
        {"still_inside": 1}
        ```
        ## Next section
        ```json
        {"after": 1}
        ```
        """,
    )

    assert [(m.fields[0], m.in_acp_section) for m in found] == [
        ("before", False),
        ("inside", True),
        ("still_inside", True),
        ("after", False),
    ]


def test_unclosed_fence_is_reported(tmp_path: Path) -> None:
    found, problems = messages_of(tmp_path, '```json\n{"cmd": "LOST"}\n')

    assert found == []
    assert [(p.line, "never closed" in p.message) for p in problems] == [(5, True)]


# --- catalogue and public surface -----------------------------------------------------


def test_unknown_agent_is_a_typed_key_error_with_a_hint(tmp_path: Path) -> None:
    catalogue = load_catalogue(good(tmp_path, "data-engineer"))

    with pytest.raises(UnknownAgent) as caught:
        catalogue.get("data-enginer")

    assert isinstance(caught.value, KeyError)
    assert isinstance(caught.value, AgentError)
    assert caught.value.name == "data-enginer"
    assert str(caught.value) == "no agent named 'data-enginer'; did you mean 'data-engineer'?"
    assert "data-engineer" in catalogue
    assert "other" not in catalogue


def test_report_shape(tmp_path: Path) -> None:
    good(tmp_path, "one")

    assert load_catalogue(tmp_path).report() == {
        "agents": [
            {
                "name": "one",
                "model": "sonnet",
                "tier": "sonnet",
                "computational_complexity": "medium",
                "commands": ["PING"],
                "examples": 1,
            }
        ],
        "examples": 1,
        "errors": [],
    }


def test_exported_members() -> None:
    exported = set(acp.agents.__all__)

    assert exported == {
        "COMPLEXITIES",
        "FRONTMATTER_KEYS",
        "MODEL_ALIASES",
        "Agent",
        "AgentBase",
        "AgentDefinition",
        "Budgets",
        "Catalogue",
        "ClaudeAgent",
        "Complexity",
        "ComplexityClass",
        "Context",
        "DeclaredMessage",
        "FunctionTool",
        "Handler",
        "McpServerConfig",
        "Price",
        "RateLimitSnapshot",
        "RateLimitWindow",
        "Reply",
        "Results",
        "RuntimeConfig",
        "Tier",
        "TierSpec",
        "Tool",
        "Toolbox",
        "ToolsConfig",
        "Usage",
        "claude_client",
        "load_catalogue",
        "load_config",
        "load_definition",
        "tier_of",
        "tool",
    }
    assert all(hasattr(acp.agents, name) for name in exported)


def test_non_utf8_file_is_located(tmp_path: Path) -> None:
    path = tmp_path / "latin.md"
    path.write_bytes(b"---\nname: latin\ndescription: caf\xe9\n---\n")

    with pytest.raises(DefinitionError, match="UTF-8") as caught:
        load_definition(path)

    assert caught.value.line == 3
