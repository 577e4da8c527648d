"""Gather the ACP example messages that definitions (and plain .json files) show.

Used by ``acp codec check`` to prove the codecs on real messages rather than
on messages written for the codec.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from acp.agents.loader import _definition_files, load_definition
from acp.errors import DefinitionError

__all__ = ["collect_examples"]


def _json_examples(path: Path, errors: list[DefinitionError]) -> list[dict[str, Any]]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(DefinitionError(str(path), 0, f"cannot read: {exc}"))
        return []
    except json.JSONDecodeError as exc:
        errors.append(DefinitionError(str(path), exc.lineno, f"malformed JSON: {exc.msg}"))
        return []
    items = value if isinstance(value, list) else [value]
    found = [item for item in items if isinstance(item, dict)]
    if len(found) != len(items):
        errors.append(DefinitionError(str(path), 1, "expected a JSON object or a list of objects"))
    return found


def collect_examples(
    *paths: str | os.PathLike[str],
) -> tuple[list[dict[str, Any]], list[DefinitionError]]:
    """Every example object under ``paths`` in file order, and what could not be read.

    Unlike a catalogue, this keeps examples from files that share an agent
    name: every message shown anywhere is worth a round trip.
    """
    errors: list[DefinitionError] = []
    examples: list[dict[str, Any]] = []
    for path in _definition_files(paths, errors, suffixes=(".md", ".json")):
        if path.suffix.lower() == ".json":
            examples.extend(_json_examples(path, errors))
            continue
        try:
            definition = load_definition(path, problems=errors)
        except DefinitionError as exc:
            errors.append(exc)
            continue
        examples.extend(definition.examples)
    return examples, errors
