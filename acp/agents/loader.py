"""Read definition files into ``AgentDefinition`` and folders into a ``Catalogue``.

Every problem names its file and line so an author can jump straight to it.
A problem that leaves no usable definition (no frontmatter, broken YAML, a
missing name, an unknown model ...) is fatal for that file only. Problems in
the examples (a malformed ```json block, a name that differs from the file
name, a duplicate name) are collected while the definition still loads, and a
catalogue never stops at the first broken file: one bad example must not take
an agent, or a fleet, offline.

Code fences follow CommonMark: a fence closes only with the same character, at
least as long, and without an info string. A stray bare fence therefore hides
everything up to the next bare one, exactly as a markdown renderer shows it.
Fences are accepted at any indentation (list items indent them); container
blocks are not modelled further than that. Sections are found from ATX
(``#``) headings outside code; setext underlines are not treated as headings.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from acp.agents.definition import FRONTMATTER_KEYS, AgentDefinition, DeclaredMessage
from acp.errors import DefinitionError, UnknownAgent

__all__ = ["Catalogue", "load_catalogue", "load_definition"]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEADING = re.compile(r"^ {0,3}(?P<level>#{1,6})(?:[ \t]+(?P<text>.*?))?(?:[ \t]+#+)?[ \t]*$")
_ACP_TITLE = "agent coordination protocol (acp)"
#: the frontmatter's first line is line 2 (line 1 is the opening ``---``)
_FRONTMATTER_LINE = 2


# --- markdown ------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    line: int
    info: str
    content: str
    closed: bool
    in_acp: bool
    #: the heading the block sits under and the line of text just before it
    context: str = ""

    @property
    def language(self) -> str:
        words = self.info.split(maxsplit=1)
        return words[0].lower() if words else ""


@dataclass
class _Opener:
    line: int
    fence: str
    info: str
    indent: int
    in_acp: bool
    context: str = ""
    content: list[str] = field(default_factory=list)

    def closed_by(self, match: re.Match[str]) -> bool:
        fence = match["fence"]
        return (
            fence[0] == self.fence[0]
            and len(fence) >= len(self.fence)
            and not match["info"].strip()
            and _width(match["indent"]) <= self.indent + 3
        )

    def block(self, *, closed: bool) -> _Block:
        text = "\n".join(self.content)
        return _Block(self.line, self.info, text, closed, self.in_acp, self.context)


def _width(indent: str) -> int:
    return len(indent.expandtabs(4))


def _code_blocks(lines: list[str], first_line: int) -> list[_Block]:
    """Fenced code blocks of a markdown text, each marked inside the ACP section or not.

    Headings are only seen outside code, so a ``# comment`` in a snippet does
    not end the section.
    """
    blocks: list[_Block] = []
    acp_level: int | None = None
    opener: _Opener | None = None
    heading_text, last_text = "", ""
    for number, text in enumerate(lines, start=first_line):
        fence = _FENCE.match(text)
        if opener is not None:
            if fence and opener.closed_by(fence):
                blocks.append(opener.block(closed=True))
                opener = None
                last_text = ""
            else:
                opener.content.append(text)
            continue
        # An info string with a backtick makes a backtick line inline code, not a fence.
        if fence and not (fence["fence"][0] == "`" and "`" in fence["info"]):
            info = fence["info"].strip()
            indent = _width(fence["indent"])
            context = " / ".join(part for part in (heading_text, last_text) if part)
            opener = _Opener(number, fence["fence"], info, indent, acp_level is not None, context)
            continue
        heading = _HEADING.match(text)
        if heading:
            level = len(heading["level"])
            if acp_level is not None and level <= acp_level:
                acp_level = None
            if _ACP_TITLE in (heading["text"] or "").lower():
                acp_level = level
            heading_text, last_text = (heading["text"] or "").strip(), ""
        elif text.strip():
            last_text = text.strip()
    if opener is not None:
        blocks.append(opener.block(closed=False))
    return blocks


class _NonStandardConstant(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonStandardConstant(name)


def _parse_example(block: _Block, file: str, problems: list[DefinitionError]) -> Any:
    try:
        return json.loads(block.content, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        problems.append(
            DefinitionError(
                file,
                block.line + exc.lineno,
                f"malformed JSON in the ```json block opened on line {block.line}: "
                f"{exc.msg} (column {exc.colno})",
            )
        )
    except _NonStandardConstant as exc:
        offset = next(
            (i for i, text in enumerate(block.content.split("\n")) if str(exc) in text), 0
        )
        problems.append(DefinitionError(file, block.line + 1 + offset, f"{exc} is not valid JSON"))
    return None


def _declared_messages(
    lines: list[str], first_line: int, file: str, problems: list[DefinitionError]
) -> list[DeclaredMessage]:
    messages: list[DeclaredMessage] = []
    for block in _code_blocks(lines, first_line):
        if not block.closed:
            problems.append(
                DefinitionError(
                    file,
                    block.line,
                    "code fence is never closed; the rest of the file reads as code",
                )
            )
            continue
        if block.language != "json":
            continue
        value = _parse_example(block, file, problems)
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(
                DefinitionError(
                    file,
                    block.line,
                    f"```json block holds a JSON {type(value).__name__}; "
                    "an ACP message must be a JSON object",
                )
            )
            continue
        messages.append(
            DeclaredMessage.from_example(
                value, line=block.line, in_acp_section=block.in_acp, context=block.context
            )
        )
    return messages


# --- frontmatter ---------------------------------------------------------------


def _read_text(path: Path, file: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DefinitionError(file, 0, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DefinitionError(file, line, f"not UTF-8 text: {exc.reason}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _split_frontmatter(lines: list[str], file: str) -> int:
    """Index of the closing ``---``; the frontmatter is ``lines[1:index]``."""
    if not lines or lines[0].rstrip() != "---":
        raise DefinitionError(
            file, 1, "missing YAML frontmatter: the file must start with a '---' line"
        )
    for index in range(1, len(lines)):
        if lines[index].rstrip() == "---":
            return index
    raise DefinitionError(file, 1, "the frontmatter opened on line 1 is never closed by '---'")


def _parse_yaml(
    text: str, file: str, problems: list[DefinitionError]
) -> tuple[dict[Any, Any], dict[str, int]]:
    """The frontmatter mapping and the file line of each top-level key."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = _FRONTMATTER_LINE + mark.line if mark is not None else 1
        context = f" ({exc.context})" if exc.context else ""
        raise DefinitionError(
            file, line, f"invalid YAML in the frontmatter: {exc.problem}{context}"
        ) from None
    except yaml.YAMLError as exc:
        raise DefinitionError(file, 1, f"invalid YAML in the frontmatter: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        got = "nothing" if data is None else f"a {type(data).__name__}"
        raise DefinitionError(
            file, 1, f"the frontmatter must be a YAML mapping of keys to values; got {got}"
        )
    lines: dict[str, int] = {}
    pairs = node.value if isinstance(node, yaml.MappingNode) else []
    for key_node, _ in pairs:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        key, line = str(key_node.value), _FRONTMATTER_LINE + key_node.start_mark.line
        if key in lines:
            problems.append(
                DefinitionError(
                    file, line, f"{key!r} is set twice (first on line {lines[key]}); the last wins"
                )
            )
        lines[key] = line
    return data, lines


def _sort_keys(
    data: dict[Any, Any], lines: dict[str, int], file: str, problems: list[DefinitionError]
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Typed fields (by field name), how each was spelled, and everything else."""
    typed: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            problems.append(
                DefinitionError(
                    file, lines.get(str(key), 1), f"key {key!r} is not a string; ignored"
                )
            )
            continue
        name = FRONTMATTER_KEYS.get(key)
        if name is None:
            extra[key] = value
        elif name in typed:
            problems.append(
                DefinitionError(
                    file,
                    lines.get(key, 1),
                    f"{key!r} repeats {spelled[name]!r}; the first one is used",
                )
            )
        else:
            typed[name] = value
            spelled[name] = key
    return typed, spelled, extra


def _field_error(
    error: ErrorDetails, file: str, spelled: dict[str, str], lines: dict[str, int]
) -> DefinitionError:
    name = str(error["loc"][0]) if error["loc"] else ""
    key = spelled.get(name, name)
    where = key + "".join(f"[{part}]" for part in error["loc"][1:])
    line = lines.get(key, 1)
    if error["type"] == "missing":
        return DefinitionError(file, line, f"the frontmatter has no {key!r}; it is required")
    if error["type"] == "value_error" and "ctx" in error:
        return DefinitionError(file, line, str(error["ctx"]["error"]))
    shown = repr(error["input"])
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return DefinitionError(file, line, f"{where}: {error['msg']}; got {shown}")


# --- loading -------------------------------------------------------------------


def _load(path: Path, problems: list[DefinitionError]) -> tuple[AgentDefinition, int]:
    """The definition and the line of its ``name``; non-fatal problems go to ``problems``."""
    file = str(path)
    lines = _read_text(path, file).split("\n")
    end = _split_frontmatter(lines, file)
    data, key_lines = _parse_yaml("\n".join(lines[1:end]), file, problems)
    typed, spelled, extra = _sort_keys(data, key_lines, file, problems)
    body = lines[end + 1 :]
    messages = _declared_messages(body, end + 2, file, problems)
    try:
        definition = AgentDefinition.model_validate(
            {
                **typed,
                "extra": extra,
                "system_prompt": "\n".join(body).strip(),
                "path": path,
                "messages": tuple(messages),
            }
        )
    except ValidationError as exc:
        errors = [_field_error(e, file, spelled, key_lines) for e in exc.errors()]
        problems.extend(errors[1:])
        raise errors[0] from None
    name_line = key_lines.get("name", 1)
    if definition.name != path.stem:
        problems.append(
            DefinitionError(
                file,
                name_line,
                f"name {definition.name!r} differs from the file name {path.name!r}; "
                f"the agent is registered as {definition.name!r}",
            )
        )
    return definition, name_line


def load_definition(
    path: str | os.PathLike[str], *, problems: list[DefinitionError] | None = None
) -> AgentDefinition:
    """Load one definition file.

    Raises ``DefinitionError`` when the file cannot give a definition at all.
    Problems that still leave a usable definition (a malformed example, a name
    that differs from the file name) are appended to ``problems`` when given,
    and ignored otherwise; if the file is rejected, further reasons beyond the
    raised one are appended there too.
    """
    sink: list[DefinitionError] = [] if problems is None else problems
    definition, _ = _load(Path(path), sink)
    return definition


@dataclass(frozen=True)
class Catalogue:
    """The definitions that loaded, by name, and every problem met on the way."""

    definitions: dict[str, AgentDefinition] = field(default_factory=dict)
    errors: list[DefinitionError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def names(self) -> list[str]:
        return list(self.definitions)

    def __contains__(self, name: object) -> bool:
        return name in self.definitions

    def __len__(self) -> int:
        return len(self.definitions)

    def get(self, name: str) -> AgentDefinition:
        """The definition called ``name``; ``UnknownAgent`` (a ``KeyError``) if none."""
        try:
            return self.definitions[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.definitions, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownAgent(name, f"no agent named {name!r}{hint}") from None

    def report(self) -> dict[str, Any]:
        """A JSON-ready summary: what loaded, how many examples, what is wrong."""
        agents = [
            {
                "name": d.name,
                "model": d.model,
                "tier": d.tier,
                "computational_complexity": d.computational_complexity,
                "commands": d.commands,
                "examples": len(d.messages),
            }
            for d in self.definitions.values()
        ]
        return {
            "agents": agents,
            "examples": sum(len(d.messages) for d in self.definitions.values()),
            "errors": [{"file": e.file, "line": e.line, "message": e.message} for e in self.errors],
        }


def _definition_files(
    paths: Iterable[str | os.PathLike[str]],
    errors: list[DefinitionError],
    suffixes: tuple[str, ...] = (".md",),
) -> list[Path]:
    """Files named directly, plus the files of each directory with one of
    ``suffixes`` (not README.md)."""
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            try:
                children = sorted(path.iterdir())
            except OSError as exc:
                errors.append(DefinitionError(str(path), 0, f"cannot list: {exc.strerror or exc}"))
                continue
            files.extend(
                child
                for child in children
                if child.suffix.lower() in suffixes
                and child.name.lower() != "readme.md"
                and not child.name.startswith(".")
                and child.is_file()
            )
        elif path.exists():
            files.append(path)
        else:
            errors.append(DefinitionError(str(path), 0, "no such file or directory"))
    return files


def load_catalogue(*paths: str | os.PathLike[str]) -> Catalogue:
    """Load every definition under ``paths`` (files or folders, not recursive).

    Broken files are reported in ``errors`` and skipped; the first definition
    of a name wins and later ones are reported as duplicates.
    """
    definitions: dict[str, AgentDefinition] = {}
    errors: list[DefinitionError] = []
    seen: set[Path] = set()
    for path in _definition_files(paths, errors):
        if (key := path.resolve()) in seen:
            continue
        seen.add(key)
        problems: list[DefinitionError] = []
        try:
            definition, name_line = _load(path, problems)
        except DefinitionError as exc:
            problems.append(exc)
        else:
            first = definitions.setdefault(definition.name, definition)
            if first is not definition:
                problems.append(
                    DefinitionError(
                        str(path),
                        name_line,
                        f"duplicate agent name {definition.name!r}, already defined in "
                        f"{first.path}; this file is ignored",
                    )
                )
        errors.extend(sorted(problems, key=lambda e: e.line))
    return Catalogue(definitions, errors)
