"""The examples run as the README says."""

from __future__ import annotations

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
    assert f"{backend}: pipeline-doctor says" in done.stdout
    assert "'healthy': False" in done.stdout
    assert "quality score 72% is below 90%" in done.stdout


def test_the_python_agent_example_is_under_25_lines() -> None:
    import ast

    tree = ast.parse((ROOT / "examples" / "pipeline_doctor.py").read_text())
    code = [
        n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
    ]
    assert code[-1].end_lineno is not None
    assert code[-1].end_lineno - code[0].lineno + 1 < 25
