"""Claude Code's file and shell tools (Read, Grep, Glob, Write, Edit, MultiEdit, Bash),
confined to one workspace directory.

A definition written for Claude Code asks for these by name in ``tools:``; here each
is a :class:`~acp.agents.tools.FunctionTool` over a :class:`Workspace`, and the
configuration's ``[tools]`` decides which exist at all: none without a workspace,
the writing ones only when it is ``writable``, ``Bash`` only when ``bash`` is on.

Every path the model gives is resolved (symlinks followed) and must land inside
the workspace; a ``..`` component is refused outright, so is a NUL byte. Reads are
capped (``read_max``); ``Bash`` runs ``/bin/sh -c`` in the workspace with a timeout,
in its own process group (killed whole on timeout), with an environment of a few
harmless variables and none of the worker's (no API key, Redis password or HMAC key
can leak through it).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import anyio
from pydantic import BaseModel, Field

from acp.agents.tools import FunctionTool, tool
from acp.errors import ConfigError, ToolError

__all__ = ["READ_ONLY", "SHELL", "WRITERS", "Workspace"]

READ_ONLY = ("Read", "Grep", "Glob")
WRITERS = ("Write", "Edit", "MultiEdit")
SHELL = "Bash"
#: what a Bash command's environment holds of the worker's (nothing secret)
_SAFE_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
#: matches listed at most, by Grep and Glob
_MAX_MATCHES = 1000


class EditSpec(BaseModel):
    """One replacement of a MultiEdit."""

    old_string: str = Field(min_length=1)
    new_string: str
    replace_all: bool = False


class Workspace:
    """One directory the file tools work in, and what they may do there."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        writable: bool = False,
        bash: bool = False,
        bash_timeout: float = 30.0,
        read_max: int = 1024 * 1024,
        output_max: int = 32 * 1024,
    ) -> None:
        try:
            self.root = Path(root).resolve(strict=True)
        except OSError as exc:
            raise ConfigError(f"tools workspace {root}: {exc.strerror or exc}") from None
        if not self.root.is_dir():
            raise ConfigError(f"tools workspace {root} is not a directory")
        self.writable = writable
        self.bash = bash
        self.bash_timeout = bash_timeout
        self.read_max = read_max
        self.output_max = output_max

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r}, writable={self.writable}, bash={self.bash})"

    # -- confinement -----------------------------------------------------------------------

    def path(self, given: str) -> Path:
        """The file ``given`` names, inside the workspace (symlinks followed)."""
        if not given or "\x00" in given:
            raise ToolError(f"{given!r} is not a path")
        candidate = Path(given)
        if ".." in candidate.parts:
            raise ToolError(f"{given}: '..' is not allowed; give a path in the workspace")
        resolved = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if not resolved.is_relative_to(self.root):
            raise ToolError(f"{given} is outside the workspace {self.root}")
        return resolved

    def show(self, path: Path) -> str:
        """A path as the model should see it: relative to the workspace."""
        return str(path.relative_to(self.root)) if path != self.root else "."

    def _files(self, start: Path, pattern: str | None) -> Iterator[Path]:
        """Files below ``start`` (links out of the workspace skipped; the walk itself
        does not enter linked folders, so only a linked file needs resolving)."""
        if start.is_file():
            yield start
            return
        for folder, dirs, files in os.walk(start):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                path = Path(folder, name)
                if os.path.islink(path) and not path.resolve().is_relative_to(self.root):
                    continue
                if (
                    pattern is None
                    or fnmatch.fnmatch(name, pattern)
                    or fnmatch.fnmatch(self.show(path), pattern)
                ):
                    yield path

    def _text(self, path: Path) -> str:
        try:
            info = path.stat()
        except OSError:
            raise ToolError(f"{self.show(path)}: no such file") from None
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block a read forever
            raise ToolError(f"{self.show(path)} is not a regular file")
        if info.st_size > self.read_max:
            raise ToolError(
                f"{self.show(path)} is {info.st_size:,} bytes, over the "
                f"{self.read_max:,}-byte read cap; Grep it or read a smaller file"
            )
        data = path.read_bytes()
        if b"\x00" in data[:8192]:
            raise ToolError(f"{self.show(path)} is a binary file")
        return data.decode("utf-8", errors="replace")

    def _writable(self, given: str) -> Path:
        if not self.writable:
            raise ToolError("the workspace is read-only")
        path = self.path(given)
        if path == self.root or path.is_dir():
            raise ToolError(f"{given} is a directory")
        return path

    # -- the tools ---------------------------------------------------------------------------

    def tools(self) -> list[FunctionTool]:
        """The tools this workspace allows, by Claude Code's names."""
        offered = [self._read(), self._grep(), self._glob()]
        if self.writable:
            offered += [self._write(), self._edit(), self._multi_edit()]
        if self.bash:
            offered.append(self._bash())
        return offered

    def _read(self) -> FunctionTool:
        @tool(name="Read", idempotent=True)
        def read(
            file_path: str, offset: Annotated[int, Field(ge=1)] = 1,
            limit: Annotated[int, Field(ge=1)] = 2000,
        ) -> str:  # fmt: skip
            """Read a text file of the workspace, numbered lines from ``offset`` (1-based).

            Paths are relative to the workspace (or absolute inside it)."""
            lines = self._text(self.path(file_path)).splitlines()
            shown = lines[offset - 1 : offset - 1 + limit]
            body = "\n".join(f"{n:>6}\t{line}" for n, line in enumerate(shown, start=offset))
            rest = len(lines) - (offset - 1 + len(shown))
            return body + (f"\n({rest} more lines; read on with offset)" if rest > 0 else "")

        return read

    def _grep(self) -> FunctionTool:
        @tool(name="Grep", idempotent=True)
        async def grep(
            pattern: str,
            path: str = ".",
            glob: str | None = None,
            output_mode: Literal["files_with_matches", "content", "count"] = "files_with_matches",
            case_insensitive: bool = False,
        ) -> str:
            """Search the workspace's text files for a regular expression (Python syntax).

            output_mode: files_with_matches (default), content (path:line:text) or count."""
            try:
                regex = re.compile(pattern, re.IGNORECASE if case_insensitive else 0)
            except re.error as exc:
                raise ToolError(f"bad pattern {pattern!r}: {exc}") from None
            start = self.path(path)
            return await anyio.to_thread.run_sync(self._search, regex, start, glob, output_mode)

        return grep

    def _search(self, regex: re.Pattern[str], start: Path, glob: str | None, mode: str) -> str:
        out: list[str] = []
        for file in self._files(start, glob):
            try:
                text = self._text(file)
            except ToolError:
                continue  # too big or binary: not searched
            hits = [(n, line) for n, line in enumerate(text.splitlines(), 1) if regex.search(line)]
            if not hits:
                continue
            name = self.show(file)
            if mode == "content":
                out += [f"{name}:{n}:{line}" for n, line in hits]
            else:
                out.append(f"{name}:{len(hits)}" if mode == "count" else name)
            if len(out) >= _MAX_MATCHES:
                out = [*out[:_MAX_MATCHES], f"(stopped at {_MAX_MATCHES} matches)"]
                break
        return "\n".join(out) or "no matches"

    def _glob(self) -> FunctionTool:
        @tool(name="Glob", idempotent=True)
        async def glob(pattern: str, path: str = ".") -> str:
            """List the workspace's files matching a glob pattern (``**/*.py``), newest first."""
            if ".." in Path(pattern).parts or Path(pattern).is_absolute():
                raise ToolError(f"{pattern}: patterns are relative to the workspace")
            start = self.path(path)

            def match() -> list[Path]:
                found = {p.resolve() for p in start.glob(pattern)}
                inside = [p for p in found if p.is_relative_to(self.root) and p.is_file()]
                return sorted(inside, key=lambda p: p.stat().st_mtime, reverse=True)

            files = await anyio.to_thread.run_sync(match)
            shown = [self.show(p) for p in files[:_MAX_MATCHES]]
            more = len(files) - len(shown)
            return "\n".join(shown + ([f"({more} more)"] if more > 0 else [])) or "no files"

        return glob

    def _write(self) -> FunctionTool:
        # the same content written twice leaves the same file: safe to run again
        @tool(name="Write", idempotent=True)
        def write(file_path: str, content: str) -> str:
            """Write a whole file in the workspace (created, or replaced)."""
            path = self._writable(file_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            return f"wrote {len(content.encode()):,} bytes to {self.show(path)}"

        return write

    def _replace(self, path: Path, edits: list[EditSpec]) -> str:
        """All ``edits`` applied in order, or none (the file is written once)."""
        text = self._text(path)
        for n, edit in enumerate(edits, 1):
            where = f"edit {n}: " if len(edits) > 1 else ""
            count = text.count(edit.old_string)
            if count == 0:
                raise ToolError(f"{where}old_string not found in {self.show(path)}")
            if count > 1 and not edit.replace_all:
                raise ToolError(
                    f"{where}old_string occurs {count} times in {self.show(path)}; give more "
                    "context to make it unique, or set replace_all"
                )
            text = text.replace(edit.old_string, edit.new_string)
        path.write_text(text, encoding="utf-8")
        return f"edited {self.show(path)} ({len(edits)} change{'s' if len(edits) > 1 else ''})"

    def _edit(self) -> FunctionTool:
        @tool(name="Edit")
        def edit(
            file_path: str, old_string: Annotated[str, Field(min_length=1)], new_string: str = "",
            replace_all: bool = False,
        ) -> str:  # fmt: skip
            """Replace text in a workspace file: old_string must occur once, unless replace_all."""
            spec = EditSpec(old_string=old_string, new_string=new_string, replace_all=replace_all)
            return self._replace(self._writable(file_path), [spec])

        return edit

    def _multi_edit(self) -> FunctionTool:
        @tool(name="MultiEdit")
        def multi_edit(
            file_path: str, edits: Annotated[list[EditSpec], Field(min_length=1)]
        ) -> str:
            """Several Edit replacements on one workspace file, in order: all apply, or none."""
            return self._replace(self._writable(file_path), edits)

        return multi_edit

    def _bash(self) -> FunctionTool:
        @tool(name="Bash")
        async def bash(
            command: str,
            timeout: Annotated[float | None, Field(gt=0)] = None,  # noqa: ASYNC109
        ) -> dict[str, object]:
            """Run a shell command in the workspace (``/bin/sh -c``); output is stdout and
            stderr together, cut at a cap; timeout in seconds, at most the deployment's.
            No secrets are in its environment."""
            return await self.run(command, limit_s=timeout)

        return bash

    def environment(self) -> dict[str, str]:
        """A command's whole environment: harmless variables only."""
        env = {k: os.environ[k] for k in _SAFE_ENV if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        return {**env, "HOME": str(self.root), "PWD": str(self.root), "TERM": "dumb"}

    async def run(self, command: str, *, limit_s: float | None = None) -> dict[str, object]:
        """Run ``command``: exit code, output (capped) and whether it timed out."""
        if not self.bash:
            raise ToolError("Bash is not enabled in this deployment")
        limit = min(limit_s or self.bash_timeout, self.bash_timeout)
        output = bytearray()
        timed_out = False
        async with await anyio.open_process(
            ["/bin/sh", "-c", command], cwd=self.root, env=self.environment(),
            stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        ) as process:  # fmt: skip
            assert process.stdout is not None
            with anyio.move_on_after(limit) as scope:
                async for chunk in process.stdout:
                    if len(output) <= self.output_max:
                        output += chunk
                await process.wait()
            if scope.cancelled_caught:
                timed_out = True
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    await process.wait()
        text = output[: self.output_max].decode("utf-8", errors="replace")
        if len(output) > self.output_max:
            text += f"\n[output cut at {self.output_max:,} bytes]"
        result: dict[str, object] = {"exit_code": process.returncode, "output": text}
        if timed_out:
            result["timed_out"] = f"killed after {limit:g} s"
        return result
