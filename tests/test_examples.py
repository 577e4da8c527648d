"""The examples run as the README says."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_embedding_example_runs_in_memory_and_on_redis(backend: str) -> None:
    done = subprocess.run(
        [sys.executable, "examples/embedded.py", backend],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        f"{backend}: stock-keeper says {{'sku': 'A-113', 'reorder': True, 'weeks_left': 1.3}}"
    )
    assert "is done: {'error': 'schema'" in lines[1]
    # the host program's output is its own: the library configures no logging, and
    # an unconfigured program hears only warnings, on stderr
    assert len(lines) == 2
    assert "[info" not in done.stderr
    assert "worker_started" not in done.stderr + done.stdout


def test_the_python_agent_example_is_under_25_lines() -> None:
    tree = ast.parse((ROOT / "acp" / "catalogue" / "pipeline_doctor.py").read_text())
    code = [
        n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
    ]
    assert code[-1].end_lineno is not None
    assert code[-1].end_lineno - code[0].lineno + 1 < 25


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_the_delegation_example_runs_a_tree(backend: str) -> None:
    """examples/delegation.py: an opus orchestrator asks a sonnet and a haiku agent
    (the definitions in examples/delegation/) and decides; its tree is printed."""
    done = subprocess.run(
        [sys.executable, "examples/delegation.py", backend],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(
        f'{backend}: release-orchestrator says {{"version": "4.2.0", "decision": "ship"'
    )
    assert lines[1].startswith("release-orchestrator  opus  claude-opus-5-5  2 turns")
    assert lines[2].startswith("├─ pipeline-engineer  sonnet")
    assert lines[3].startswith("└─ incident-triage  haiku")
    assert lines[4].startswith("tree cost $")


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_the_tools_example_calls_a_python_tool_and_an_mcp_server(backend: str) -> None:
    """examples/tools.py: the stock-keeper calls its Python tool and its MCP server's
    tool in one turn and answers from both; one server process serves both requests."""
    done = subprocess.run(
        [sys.executable, "examples/tools.py", backend],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "[info" not in line]
    assert lines[0] == (
        f'{backend}: stock-keeper says {{"sku": "A1", "units": 12, "reorder_point": 20, '
        '"reorder": true}'
    )
    assert lines[1].startswith("stock-keeper  haiku  claude-haiku-5-5  2 turns")
    assert lines[2].startswith("  · mcp__inventory__stock  ok")
    assert lines[3].startswith("  · reorder_point  ok")
    assert '"reorder": false' in lines[4]
    assert lines[-1] == "MCP server started 1 time(s) for both requests"
