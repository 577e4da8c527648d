"""Remembered regex checks answer exactly as the regex does, within bounded memory."""

from __future__ import annotations

import re

import pytest

from acp.errors import ConfigError
from acp.protocol import command_name
from acp.protocol.patterns import remembering_fullmatch
from acp.runtime.keys import check_name


def test_a_remembered_check_agrees_with_the_regex_and_forgets_past_its_limit() -> None:
    calls = 0
    pattern = re.compile(r"[a-z]+")

    class Counting:
        def fullmatch(self, text: str) -> re.Match[str] | None:
            nonlocal calls
            calls += 1
            return pattern.fullmatch(text)

    matches = remembering_fullmatch(Counting(), limit=2)  # type: ignore[arg-type]
    assert [matches(t) for t in ("abc", "abc", "ABC", "ABC")] == [True, True, False, False]
    assert calls == 3  # the second "abc" was remembered; a mismatch never is
    matches("def")
    matches("ghi")  # over the limit: memory starts again
    calls = 0
    matches("abc")
    assert calls == 1


@pytest.mark.parametrize("text", ["PING\n", "ping", "", "1PING", "PI NG"])
def test_only_whole_upper_snake_names_are_commands(text: str) -> None:
    assert command_name({"cmd": text}) is None
    assert command_name({"cmd": "PIPELINE_STATUS"}) == "PIPELINE_STATUS"


@pytest.mark.parametrize("name", ["agent\n", "agent{x}", "-agent", "a" * 129, "", "a b"])
def test_destination_names_are_checked_whole(name: str) -> None:
    with pytest.raises(ConfigError, match="must be 1-128 characters"):
        check_name(name)
    assert check_name("inbox.ab12:x@y-z") == "inbox.ab12:x@y-z"
