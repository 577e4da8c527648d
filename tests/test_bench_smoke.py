"""Smoke test for the bus benchmark harness (``bench/bus.py``).

The harness is the yardstick for the runtime's message path, so a broken
harness must fail CI rather than quietly print nonsense. It runs as a
subprocess, exactly as people run it, with its own embedded server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BUS = Path(__file__).resolve().parent.parent / "bench" / "bus.py"
MESSAGES = 2000

REQUIRED = {
    "messages",
    "acp_msgs_per_s",
    "raw_msgs_per_s",
    "ratio",
    "acp_rtt_p50_ms",
    "acp_rtt_p99_ms",
    "raw_rtt_p50_ms",
    "lost",
    "duplicates",
    "dramatiq_msgs_per_s",
    "arq_msgs_per_s",
    "server",
    "python",
    "redis_py",
    "hiredis",
}


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(BUS), "--messages", str(MESSAGES), "--json", "--no-peers"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"stdout must be exactly one JSON object, got:\n{proc.stdout}"
    parsed: dict[str, Any] = json.loads(lines[0])
    return parsed


@pytest.mark.timeout(130)
def test_json_has_every_key(result: dict[str, Any]) -> None:
    assert not REQUIRED - result.keys(), "missing keys"
    assert result["messages"] == MESSAGES
    assert isinstance(result["hiredis"], bool)


@pytest.mark.timeout(130)
def test_raw_figures_are_positive_and_exact(result: dict[str, Any]) -> None:
    assert result["raw_msgs_per_s"] > 0
    assert 0 < result["raw_rtt_p50_ms"] <= result["raw_rtt_p99_ms"]
    assert result["raw_lost"] == 0
    assert result["raw_duplicates"] == 0
    assert result["raw_unacked"] == 0


@pytest.mark.timeout(130)
def test_peers_are_skipped_with_a_reason(result: dict[str, Any]) -> None:
    assert result["dramatiq_msgs_per_s"] is None
    assert result["arq_msgs_per_s"] is None
    assert set(result["peers_skipped"]) == {"dramatiq", "arq"}


@pytest.mark.timeout(130)
def test_the_acp_row_is_measured(result: dict[str, Any]) -> None:
    """The row the harness exists for: a skipped one is a failure, whatever reason
    it gives (the runtime is in this repository; nothing excuses not measuring it)."""
    assert result["acp_msgs_per_s"] is not None, result.get("acp_skipped")
    assert result["acp_msgs_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["acp_msgs_per_s"] / result["raw_msgs_per_s"], rel=0.01
    )
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    assert 0 < result["acp_rtt_p50_ms"] <= result["acp_rtt_p99_ms"]


def test_dictionary_bench_reports_both_dictionaries_and_remakes_the_frozen_tables() -> None:
    """``bench/dictionary.py`` is how dictionary 2 was made: its figures come out,
    and ``--make-entropy`` still prints the header frozen in the vocabulary."""
    from acp.protocol.vocabulary import dictionary, dictionary_bytes

    script = BUS.parent / "dictionary.py"
    run = [sys.executable, str(script)]
    figures = subprocess.run(
        [*run, "--json"], capture_output=True, text=True, timeout=60, check=True
    )
    parsed = json.loads(figures.stdout)
    assert parsed["messages"] > 0
    for dict_id in ("dict1", "dict2"):
        assert 0 < parsed[dict_id]["ratio"] < 1
        assert parsed[dict_id]["compress_us"] > 0
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef]
    if zstd.zstd_version_info[:2] != (1, 5):
        pytest.skip(f"dictionary 2 was made with libzstd 1.5.7; this is {zstd.zstd_version}")
    entropy = subprocess.run(
        [*run, "--make-entropy"], capture_output=True, text=True, timeout=60, check=True
    )
    full, _ = dictionary(2)
    assert bytes.fromhex(entropy.stdout.strip()) + dictionary_bytes() == full


def test_delegation_bench_measures_both_kinds_in_one_run() -> None:
    """``bench/delegation.py`` runs its tree end to end and reports what a hop adds."""
    script = BUS.parent / "delegation.py"
    done = subprocess.run(
        [sys.executable, str(script), "--requests", "5", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout)
    for kind in ("direct", "delegating"):
        assert 0 < result[kind]["p50_ms"] <= result[kind]["p95_ms"]
    assert result["delegating"]["p50_ms"] > result["direct"]["p50_ms"], "a hop costs something"


def test_tools_bench_measures_every_kind_the_loop_and_the_cache() -> None:
    """``bench/tools.py`` times each tool kind against direct code, the durable loop's
    cost per call end to end, and the cached share of a second call's prompt."""
    script = BUS.parent / "tools.py"
    done = subprocess.run(
        [sys.executable, str(script), "--calls", "20", "--requests", "3", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout.splitlines()[-1])
    assert set(result["kinds"]) == {"python function", "Read (2 KB file)", "Grep (200 files)",
                                    "Glob (200 files)", "Bash (true)", "MCP stdio (stock)"}  # fmt: skip
    for row in result["kinds"].values():
        assert 0 < row["p50_us"] <= row["p95_us"]
        assert row["baseline_p50_us"] > 0
    assert result["loop"]["nine_calls_p50_ms"] > result["loop"]["one_call_p50_ms"]
    cache = result["cache"]
    assert cache["same_prefix"]
    assert cache["marks"] == 2
    assert 0.5 < cache["cached_share"] < 1


def test_request_budget_bench_sets_the_protocol_work_against_the_goals() -> None:
    """``bench/request_budget.py`` measures the three in-flight paths in one run and
    the protocol work per request step by step, and says what each goal allows."""
    script = BUS.parent / "request_budget.py"
    done = subprocess.run(
        [sys.executable, str(script), "--requests", "300", "--rounds", "1", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout)
    assert set(result["paths"]) == {"raw", "direct", "coordinator"}
    assert all(m["per_s"] > 0 and m["cpu_us"] > 0 for m in result["paths"].values())
    steps = result["steps_us"]
    assert len(steps) == 8
    assert all(us > 0 for us in steps.values())
    for path, goal in (("direct", 0.6), ("coordinator", 0.4)):
        row = result[path]
        assert row["goal"] == goal
        # the steps alone, on a warm cache, cost less than a whole request does, and
        # their compiled calls alone less than the steps
        assert 0 < row["compiled_floor_us"] < row["protocol_us"] < result["paths"][path]["cpu_us"]
        assert row["ratio_at_best"] > 0
    assert result["coordinator"]["protocol_us"] > result["direct"]["protocol_us"]
