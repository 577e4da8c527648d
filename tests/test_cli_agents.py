"""``acp agents list|show|validate``: output shape and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from acp.cli import app

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
PROJECT_AGENTS = Path(__file__).resolve().parents[1] / "acp" / "catalogue" / "agents"

needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"shared agent corpus not found at {CORPUS}"
)

runner = CliRunner()
WIDE = {"COLUMNS": "250", "NO_COLOR": "1"}


def invoke(*args: str | Path) -> Any:
    return runner.invoke(app, ["agents", *map(str, args)], env=WIDE)


def validate_json(*paths: str | Path) -> tuple[int, dict[str, Any]]:
    result = invoke("validate", *paths, "--json")
    return result.exit_code, json.loads(result.stdout)


@needs_corpus
def test_validate_corpus_json_reports_the_one_malformed_block() -> None:
    code, report = validate_json(CORPUS)

    assert code == 1
    assert set(report) == {"agents", "examples", "errors", "warnings"}
    assert report["warnings"] == [], "no tools: lines, nothing unknown"
    assert [a["name"] for a in report["agents"]] == [
        "audio-engineer",
        "data-engineer",
        "project-orchestrator",
        "security-audit-specialist",
        "the-synthesist",
    ]
    data_engineer = report["agents"][1]
    assert data_engineer == {
        "name": "data-engineer",
        "model": "sonnet",
        "tier": "sonnet",
        "computational_complexity": "medium",
        "commands": ["PIPELINE_STATUS"],
        "examples": 2,
    }
    assert report["examples"] == sum(a["examples"] for a in report["agents"])
    [error] = report["errors"]
    assert error["file"] == str(CORPUS / "project-orchestrator.md")
    assert error["line"] == 278
    assert set(error) == {"file", "line", "message"}


def test_validate_project_agents_exits_0() -> None:
    code, report = validate_json(PROJECT_AGENTS)

    assert code == 0
    assert report["errors"] == []
    assert len(report["agents"]) == 5
    assert all(a["commands"] for a in report["agents"])


def test_validate_broken_file_exits_1_with_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.md"
    broken.write_text("---\nname: broken\ndescription: d\nmodel: gpt-4\n---\n", encoding="utf-8")

    code, report = validate_json(tmp_path)

    assert code == 1
    assert report["agents"] == []
    assert report["errors"][0]["file"] == str(broken)
    assert report["errors"][0]["line"] == 4


def test_validate_summary_without_json(tmp_path: Path) -> None:
    (tmp_path / "bad.md").write_text("no frontmatter\n", encoding="utf-8")

    failing = invoke("validate", tmp_path)
    passing = invoke("validate", PROJECT_AGENTS)

    assert failing.exit_code == 1
    assert f"{tmp_path / 'bad.md'}:1: missing YAML frontmatter" in failing.stdout
    assert "1 problem" in failing.stdout
    assert passing.exit_code == 0
    assert "ok  data-engineer" in passing.stdout
    assert "5 agents" in passing.stdout


def test_list_shows_a_table() -> None:
    result = invoke("list", PROJECT_AGENTS)

    assert result.exit_code == 0
    for name in ("data-engineer", "pipeline-monitor", "triage-clerk", "architecture-reviewer"):
        assert name in result.stdout
    assert "ARCH_REVIEW" in result.stdout


def test_show_one_agent() -> None:
    result = invoke("show", "architecture-reviewer", "--from", PROJECT_AGENTS, "--lines", "2")

    assert result.exit_code == 0
    out = result.stdout
    for expected in ("opus", "high", "Read, Grep, Glob", "input_requirements", "ARCH_REVIEW"):
        assert expected in out
    assert "You are the architecture reviewer" in out
    assert "## Method" not in out  # only the first two prompt lines


@needs_corpus
def test_show_lists_problems_of_the_shown_file() -> None:
    result = invoke("show", "project-orchestrator", "--from", CORPUS)

    assert result.exit_code == 0
    assert "project-orchestrator.md:278:" in result.stdout


def test_show_unknown_agent_exits_1_with_a_hint() -> None:
    result = invoke("show", "data-enginer", "--from", PROJECT_AGENTS)

    assert result.exit_code == 1
    assert "did you mean 'data-engineer'?" in result.stderr


@pytest.mark.parametrize("command", ["list", "show", "validate"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = invoke(command, "--help")

    assert result.exit_code == 0
    assert f"Example: acp agents {command}" in result.stdout


def test_without_paths_every_command_uses_and_names_the_same_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$ACP_AGENTS if set, else ./agents if present, else the shipped catalogue; always said."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ACP_AGENTS", raising=False)
    shipped = invoke("list")
    assert shipped.exit_code == 0
    assert "agents: the shipped catalogue (acp.catalogue, 5 definitions)" in shipped.stderr
    assert "pipeline-doctor" in shipped.stdout

    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "solo.md").write_text(
        "---\nname: solo\ndescription: Works alone.\nmodel: haiku\n---\nYou work alone.\n"
    )
    local = invoke("validate")
    assert local.exit_code == 0
    assert "agents: ./agents (1 definition)" in local.stderr
    assert "ok  solo" in local.stdout
    shown = invoke("show", "solo")
    assert shown.exit_code == 0
    assert "agents: ./agents" in shown.stderr

    monkeypatch.setenv("ACP_AGENTS", str(PROJECT_AGENTS))
    from_env = invoke("list")
    assert f"agents: {PROJECT_AGENTS} (from ACP_AGENTS)" in from_env.stderr
