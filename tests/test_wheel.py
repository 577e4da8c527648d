"""The installed wheel runs its own main job from any directory, as a new user meets it.

The wheel is built from this checkout, installed with its ``embedded`` extra into
a fresh virtual environment outside the checkout (dependencies from the package
index, as a user's ``pip install`` gets them), and run from an empty directory:
nothing of the checkout is importable or readable there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``acp`` script of a fresh venv holding only the built wheel and its deps."""
    where = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = where.glob("acp_runtime-*.whl")
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[embedded]"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return venv / "bin" / "acp"


def _user_env(home: Path) -> dict[str, str]:
    """A user's environment: no key, no server, nothing of this checkout on the path."""
    drop = ("ANTHROPIC_API_KEY", "ACP_REDIS_URL", "ACP_AGENTS", "ACP_CONFIG", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["HOME"] = str(home)
    return env


@pytest.mark.timeout(900)
def test_the_wheel_runs_acp_demo_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        [str(installed), "demo", "--messages", "40"],
        cwd=empty,
        env=_user_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "shipped catalogue" in done.stdout + done.stderr
    assert "Sent 40 PIPELINE_STATUS commands" in done.stdout
    assert "Summary:" in done.stdout
    assert list(empty.iterdir()) == [], "the demo must leave nothing in the user's directory"


@pytest.mark.timeout(900)
def test_the_wheel_runs_acp_up_until_interrupted(installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.Popen(
        [str(installed), "up"],
        cwd=empty,
        env=_user_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(6)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert "shipped catalogue" in out + err
    assert "agents running:" in out
    assert "pipeline-doctor" in out
    assert "pipeline-monitor" in out
    assert "stopping" in out
