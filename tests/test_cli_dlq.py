"""``acp dlq`` against a real server: dead letters made through the bus API.

Plain sync tests: the CLI runs ``anyio.run`` itself, so the setup does too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import anyio
import pytest
from typer.testing import CliRunner, Result

from acp.cli import app
from acp.protocol import Envelope, WireCodec, new_id
from acp.runtime.bus import BusOptions, Delivery, Outgoing, QueueStats, RedisBus

runner = CliRunner()
DEST = "data-engineer"
OTHER = "billing"
OPTIONS = BusOptions(reclaim_interval=0.02, retry_base=0.01, retry_cap=0.02)


@dataclass(frozen=True)
class Letters:
    """Entry ids of the dead letters made for a test, by what they hold."""

    url: str
    envelope: str
    garbage: str
    plain: str
    other: str
    msg_id: str


def run(url: str, *args: str, input: str | None = None) -> Result:
    return runner.invoke(app, ["dlq", *args], env={"ACP_REDIS_URL": url}, input=input)


def stats(url: str, dest: str = DEST) -> QueueStats:
    async def main() -> QueueStats:
        async with RedisBus.from_url(url) as bus:
            return await bus.stats(dest)

    return anyio.run(main)


async def _take(bus: RedisBus, dest: str, n: int) -> list[Delivery]:
    got: list[Delivery] = []
    with anyio.fail_after(10):
        while len(got) < n:
            got += await bus.consume(dest, "w1", block=0.1)
    return got


@pytest.fixture
def letters(redis_url: str) -> Letters:
    env = Envelope.for_body(
        {"cmd": "BUILD_PIPELINE", "pipeline_id": "p-7", "sources": ["s3://raw/events"]},
        sender="project-orchestrator",
        recipient=DEST,
    )
    garbage_id, plain_id, other_id = new_id(), new_id(), new_id()

    async def main() -> dict[str, str]:
        async with RedisBus.from_url(redis_url, OPTIONS) as bus:
            await bus.send_many(
                [
                    Outgoing(DEST, env.id, WireCodec().encode(env), {"trace": "t-1"}),
                    Outgoing(DEST, garbage_id, b"\x00not a frame at all"),
                    Outgoing(DEST, plain_id, b"\xa2\x03oops"),
                    Outgoing(OTHER, other_id, b"\x00x"),
                ]
            )
            first = {d.msg_id: d for d in await _take(bus, DEST, 3)}
            # one failed attempt first, so the envelope's history has two entries
            assert await bus.retry(first[env.id], "w1", error="upstream timeout", delay=0)
            (again,) = await _take(bus, DEST, 1)
            error = (
                "ValueError: source s3://raw/events is empty\nTraceback (most recent call last):"
            )
            await bus.dead_letter(again, "w1", reason="handler_error", error=error)
            await bus.dead_letter(
                first[garbage_id], "w1", reason="decode:bad_magic", error="first byte 0x00"
            )
            await bus.dead_letter(first[plain_id], "w1", reason="decode:bad_start", error="bad")
            (other,) = await _take(bus, OTHER, 1)
            await bus.dead_letter(other, "w1", reason="decode:bad_magic", error="first byte 0x00")
            return {
                d.msg_id: d.entry_id for dest in (DEST, OTHER) for d in await bus.dead_letters(dest)
            }

    ids = anyio.run(main)
    return Letters(redis_url, ids[env.id], ids[garbage_id], ids[plain_id], ids[other_id], env.id)


# -- list -----------------------------------------------------------------------------


def test_list_json_covers_every_destination_with_decoded_commands(letters: Letters) -> None:
    result = run(letters.url, "list", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)["dead_letters"]
    assert {tuple(r) for r in records} == {
        (
            "dest",
            "entry_id",
            "msg_id",
            "reason",
            "error",
            "deliveries",
            "history",
            "dead_at",
            "command",
            "kind",
        )
    }
    # entry ids are per stream: two dead-letter streams can hold the same one
    by_entry = {(r["dest"], r["entry_id"]): r for r in records}
    assert set(by_entry) == {
        (DEST, letters.envelope),
        (DEST, letters.garbage),
        (DEST, letters.plain),
        (OTHER, letters.other),
    }
    good = by_entry[DEST, letters.envelope]
    assert (good["dest"], good["msg_id"], good["reason"]) == (
        DEST,
        letters.msg_id,
        "handler_error",
    )
    assert (good["command"], good["kind"], good["deliveries"]) == ("BUILD_PIPELINE", "command", 2)
    assert good["history"] == ["upstream timeout", good["error"]]
    assert isinstance(good["dead_at"], float)
    bad = by_entry[DEST, letters.garbage]
    assert (bad["command"], bad["kind"], bad["reason"]) == (None, None, "decode:bad_magic")
    assert by_entry[OTHER, letters.other]["reason"] == "decode:bad_magic"


def test_list_table_for_named_destinations(letters: Letters) -> None:
    result = run(letters.url, "list", OTHER)
    assert result.exit_code == 0, result.output
    assert "billing: 1 dead letter" in result.stdout
    assert letters.other in result.stdout
    assert letters.envelope not in result.stdout

    wide = {"COLUMNS": "200"}  # table cells would wrap at the runner's default 80
    result = runner.invoke(
        app, ["dlq", "list", DEST, "--count", "1", "--redis", letters.url], env=wide
    )
    assert result.exit_code == 0, result.output
    assert letters.envelope in result.stdout
    assert "handler_error" in result.stdout
    assert "Traceback" not in result.stdout  # only the first line of the error
    assert "showing 1 of 3 dead letters in data-engineer" in result.stderr


def test_list_says_when_there_is_nothing(redis_url: str) -> None:
    result = run(redis_url, "list")
    assert (result.exit_code, result.stdout.strip()) == (0, "no dead letters")
    result = run(redis_url, "list", "no-such-agent", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"dead_letters": []}
    assert "no destination 'no-such-agent'" in result.stderr


# -- show -----------------------------------------------------------------------------


def test_show_renders_the_message_for_a_person(letters: Letters) -> None:
    result = run(letters.url, "show", DEST, letters.envelope)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"dead letter {letters.envelope} in {DEST}" in out
    assert "reason      handler_error" in out
    assert "  Traceback (most recent call last):" in out  # the whole error
    assert "  1. upstream timeout" in out
    assert "  2. ValueError: source s3://raw/events is empty" in out
    assert "  trace: t-1" in out
    assert "command project-orchestrator -> data-engineer" in out
    assert "BUILD_PIPELINE for p-7" in out

    result = run(letters.url, "show", DEST, letters.envelope, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["headers"] == {"trace": "t-1"}
    assert record["message"]["body"]["cmd"] == "BUILD_PIPELINE"
    assert (record["decode_error"], record["frame_hex"]) == (None, None)


def test_show_an_undecodable_frame_as_hex(letters: Letters) -> None:
    result = run(letters.url, "show", DEST, letters.garbage)
    assert result.exit_code == 0, result.output
    assert "message: cannot be decoded: bad_magic" in result.stdout
    assert "frame: 19 bytes; first 19 in hex:" in result.stdout
    assert "0000  00 6e 6f 74 20 61 20 66 72 61 6d 65 20 61 74 20  |.not a frame at |" in (
        result.stdout
    )
    record = json.loads(run(letters.url, "show", DEST, letters.garbage, "--json").stdout)
    assert record["message"] is None
    assert record["decode_error"].startswith("bad_magic")
    assert bytes.fromhex(record["frame_hex"]) == b"\x00not a frame at all"


def test_show_missing_destination_or_entry_exits_1(letters: Letters) -> None:
    result = run(letters.url, "show", "nobody", letters.envelope)
    assert result.exit_code == 1
    assert "no destination 'nobody'" in result.stderr
    result = run(letters.url, "show", DEST, "1-0")
    assert result.exit_code == 1
    assert "no dead letter 1-0 in data-engineer" in result.stderr
    assert run(letters.url, "show", DEST, "not-an-id").exit_code == 2


# -- replay ---------------------------------------------------------------------------


def test_replay_by_id_then_all_puts_entries_back_on_the_queue(letters: Letters) -> None:
    before = stats(letters.url)
    assert (before.ready, before.dead) == (0, 3)

    result = run(letters.url, "replay", DEST, letters.envelope, letters.envelope)
    assert result.exit_code == 0, result.output
    assert "replayed 1 dead letter to data-engineer" in result.stdout
    assert (stats(letters.url).ready, stats(letters.url).dead) == (1, 2)

    result = run(letters.url, "replay", DEST, "--all")
    assert result.exit_code == 0, result.output
    assert "replayed 2 dead letters" in result.stdout
    after = stats(letters.url)
    assert (after.ready, after.dead) == (3, 0)
    assert stats(letters.url, OTHER).dead == 1  # other destinations untouched


def test_replay_needs_ids_or_all_and_reports_unknown_ids(letters: Letters) -> None:
    result = run(letters.url, "replay", DEST)
    assert result.exit_code == 2
    assert "--all" in result.output
    assert run(letters.url, "replay", DEST, letters.plain, "--all").exit_code == 2
    result = run(letters.url, "replay", DEST, letters.plain, "1-0")
    assert result.exit_code == 1
    assert "replayed 1 dead letter" in result.stdout
    assert "1 of the given entry ids are not dead letters" in result.stderr
    result = run(letters.url, "replay", "typo-agent", "--all")
    assert result.exit_code == 1
    assert stats(letters.url, "typo-agent").ready == 0


# -- purge ----------------------------------------------------------------------------


def test_purge_with_yes_deletes(letters: Letters) -> None:
    result = run(letters.url, "purge", DEST, letters.garbage, "--yes")
    assert result.exit_code == 0, result.output
    assert "purged 1 dead letter from data-engineer" in result.stdout
    assert stats(letters.url).dead == 2
    result = run(letters.url, "purge", DEST, "--all", "--yes")
    assert result.exit_code == 0, result.output
    assert "purged 2 dead letters" in result.stdout
    assert (stats(letters.url).dead, stats(letters.url).ready) == (0, 0)
    assert stats(letters.url, OTHER).dead == 1
    result = run(letters.url, "purge", DEST, "--all", "--yes")
    assert (result.exit_code, result.stdout.strip()) == (0, "no dead letters in data-engineer")


def test_purge_asks_first_and_no_keeps_everything(letters: Letters) -> None:
    result = run(letters.url, "purge", DEST, "--all", input="n\n")
    assert result.exit_code == 1
    assert "Delete all 3 dead letters of data-engineer?" in result.stdout
    assert "nothing deleted" in result.stderr
    assert stats(letters.url).dead == 3
    result = run(letters.url, "purge", DEST, letters.plain, input="y\n")
    assert result.exit_code == 0, result.output
    assert stats(letters.url).dead == 2


# -- configuration and errors -----------------------------------------------------------


def test_no_server_named_is_a_clear_error_not_an_embedded_server() -> None:
    result = runner.invoke(app, ["dlq", "list"], env={"ACP_REDIS_URL": None})
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "pass --redis URL or --redis-url-file FILE, or set ACP_REDIS_URL" in result.stderr
    assert "Traceback" not in result.output


def test_unreachable_server_never_shows_the_password() -> None:
    url = "redis://admin:s3cret-pw@127.0.0.1:1/0"
    # one command only: redis-py spends a few seconds retrying the connect
    result = runner.invoke(
        app, ["dlq", "purge", DEST, "--all", "--yes", "--redis", url], env={"ACP_REDIS_URL": None}
    )
    assert result.exit_code == 1, result.output
    assert "s3cret" not in result.output
    assert result.stderr.startswith("error: Redis at redis://admin:***@127.0.0.1:1/0")
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
    bad = runner.invoke(app, ["dlq", "list", "--redis", "http://u:s3cret@host/0"])
    assert bad.exit_code == 1
    assert "s3cret" not in bad.output
    assert "unsupported Redis URL" in bad.stderr


@pytest.mark.parametrize("command", ["list", "show", "replay", "purge"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = runner.invoke(
        app, ["dlq", command, "--help"], env={"ACP_REDIS_URL": "redis://:hidden@127.0.0.1:6379"}
    )
    assert result.exit_code == 0
    assert "Example: acp dlq " + command in result.stdout
    assert "hidden" not in result.stdout
