"""``acp codec check`` on definitions and .json files."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from acp.cli import app

AGENTS = Path(__file__).resolve().parents[1] / "acp" / "catalogue" / "agents"
runner = CliRunner()


def test_codec_check_json_figures_for_the_catalogue() -> None:
    result = runner.invoke(app, ["codec", "check", str(AGENTS), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert set(figures) == {
        "messages",
        "mismatches",
        "json_bytes",
        "wire_bytes",
        "ratio",
        "codec_roundtrip_us",
        "stdlib_json_roundtrip_us",
    }
    assert figures["messages"] >= 8
    assert figures["mismatches"] == 0
    assert figures["wire_bytes"] < figures["json_bytes"]


def test_codec_check_reads_json_files_and_reports_broken_ones(tmp_path: Path) -> None:
    (tmp_path / "msgs.json").write_text(
        json.dumps([{"cmd": "A", "v": 1.5}, {"x_status": {"ok": True}}])
    )
    (tmp_path / "broken.json").write_text("{nope")
    result = runner.invoke(app, ["codec", "check", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "messages  2" in result.output
    assert "1 file problems" in result.output


def test_codec_check_with_no_examples_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["codec", "check", str(tmp_path), "--json"])
    assert result.exit_code == 1
