"""Every error the runtime raises, under one root, so callers can catch ``ACPError``.

::

    ACPError
    ├── ConfigError                 bad settings, URL or environment
    │   └── MissingAPIKey           no ANTHROPIC_API_KEY (names the variable)
    ├── ProtocolError               a message that cannot be trusted or understood
    │   ├── DecodeError             bytes that are not a valid message (``reason`` says why)
    │   │   ├── FrameTooLarge       refused before any decompression
    │   │   └── IntegrityError      tag missing or wrong (names the key id)
    │   └── SchemaError             a body that does not fit its typed model (field path)
    ├── DefinitionError             a broken agent definition file (file, line)
    ├── BusError                    transport trouble, translated from redis
    │   ├── BusClosed               used outside ``async with``
    │   ├── ConnectionLost          the server went away and did not come back in time
    │   ├── AccessDenied            wrong credentials, or the server's ACL forbids it (no retry)
    │   ├── RequestTimeout          no reply before the deadline
    │   └── CommandRefused          the server refused a command (out of memory, read-only...)
    ├── Stalled                     something waited for did not happen in time (says what, why)
    ├── ServerError                 the embedded Redis-protocol server
    │   └── ServerNotFound          no server binary available
    └── AgentError                  raised by or about agent handlers
        ├── RetryableError          a handler asks for a retry with backoff
        ├── Continue                the work needs another paid call, admitted as new work
        │   └── Suspend             ... once the agents it delegated to have answered
        ├── Rejected                dead-letter this message now, with a reason
        │   └── SpendLimitReached   the model API refused on a spend limit (names the tier)
        ├── UnknownCommand          no handler for this command
        ├── UnknownAgent            no definition by that name (also a ``KeyError``)
        └── ToolError               a tool refused or failed a call (the model reads why)

Errors carry structured fields besides their message so that dead letters and
CLI output can say *what* and *where* without parsing strings.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ACPError",
    "AccessDenied",
    "AgentError",
    "BusClosed",
    "BusError",
    "CommandRefused",
    "ConfigError",
    "ConnectionLost",
    "Continue",
    "DecodeError",
    "DefinitionError",
    "FrameTooLarge",
    "IntegrityError",
    "MissingAPIKey",
    "ProtocolError",
    "Rejected",
    "RequestTimeout",
    "RetryableError",
    "SchemaError",
    "ServerError",
    "ServerNotFound",
    "SpendLimitReached",
    "Stalled",
    "Suspend",
    "ToolError",
    "UnknownAgent",
    "UnknownCommand",
]


class ACPError(Exception):
    """Root of every error raised by acp-runtime."""

    #: short machine-readable code: the ``error`` of the reply a sender gets when its
    #: command fails this way (dead letters carry a ``reason`` of their own)
    code: str = "acp_error"


class ConfigError(ACPError):
    code = "config"


class MissingAPIKey(ConfigError):
    """No API key for a model provider: fail at start-up, naming the variable to set."""

    code = "missing_api_key"

    def __init__(self, variable: str, message: str | None = None) -> None:
        super().__init__(message or f"{variable} is not set: export it or pass api_key=")
        self.variable = variable


class ProtocolError(ACPError):
    code = "protocol"


class DecodeError(ProtocolError):
    """Bytes that do not decode into a message; ``reason`` is a stable code."""

    code = "decode"

    def __init__(self, reason: str, detail: str, *, offset: int | None = None) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{reason}{where}: {detail}")
        self.reason = reason
        self.detail = detail
        self.offset = offset


class FrameTooLarge(DecodeError):
    code = "frame_too_large"

    def __init__(self, size: int, limit: int, *, what: str = "frame") -> None:
        super().__init__("too_large", f"{what} of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class SchemaError(ProtocolError):
    """A body that does not fit its model; ``errors`` lists ``(path, message)``."""

    code = "schema"

    def __init__(self, model: str, errors: list[tuple[str, str]]) -> None:
        shown = "; ".join(f"{path or '<root>'}: {msg}" for path, msg in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{model}: {shown}{more}")
        self.model = model
        self.errors = errors


class IntegrityError(DecodeError):
    """A decoded body whose tag is missing or wrong: not a message we may act on."""

    code = "integrity"

    def __init__(self, message: str, *, key_id: str | None = None) -> None:
        super().__init__("integrity", message)
        self.key_id = key_id


class DefinitionError(ACPError):
    """A problem in an agent definition file, located by file and line."""

    code = "definition"

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


class BusError(ACPError):
    code = "bus"


class BusClosed(BusError):
    code = "bus_closed"


class ConnectionLost(BusError):
    code = "connection_lost"


class AccessDenied(BusError):
    """The server refused who we are or what we asked: retrying cannot help, so it is
    raised at once, naming the user and what was denied (never the password)."""

    code = "access_denied"


class RequestTimeout(BusError):
    code = "timeout"


class CommandRefused(BusError):
    """The server answered a command with an error no retry cures: out of memory
    (``maxmemory``), a read-only replica, a command it does not know. ``reason``
    says which (``out_of_memory``, ``read_only``, ``error``)."""

    code = "refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Stalled(ACPError):
    """A step that was waited for did not happen in time; the message says what
    did not answer and, as far as the runtime can tell, why."""

    code = "stalled"


class ServerError(ACPError):
    code = "server"


class ServerNotFound(ServerError):
    code = "server_not_found"


class AgentError(ACPError):
    code = "agent"


class RetryableError(AgentError):
    """Raised by a handler to ask for another delivery after a backoff."""

    code = "retryable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Continue(AgentError):
    """Raised by an agent whose work needs another paid call: a repair of an invalid
    answer, the same question one tier up, a retry after the model API asked to wait.

    The runtime ends this message as handled (its call is settled like any other)
    and sends the next step as a new message, under an id derived from this one, to
    wherever work is scheduled: every paid call is admitted like new work, and the
    step is as durable as the commit that carries it. ``state`` becomes the next
    message's extension headers; ``meta`` describes the call just made."""

    code = "continue"

    def __init__(
        self,
        step: str,
        *,
        tier: str | None = None,
        state: dict[str, str] | None = None,
        delay: float = 0.0,
        meta: dict[str, object] | None = None,
    ) -> None:
        super().__init__(f"continue with a {step}" + (f" on {tier}" if tier else ""))
        self.step = step
        self.tier = tier
        self.state = dict(state or {})
        self.delay = delay
        self.meta = dict(meta or {})


class Suspend(Continue):
    """Raised by an agent whose next step waits for other agents: ``children`` (ACP
    commands, as envelopes) leave with this message's commit, nothing holds a worker
    or a model slot meanwhile, and the next step is sent by whichever worker brings
    the last reply to the rendezvous ``join`` (the answers the step already has are
    ``done``, by part)."""

    code = "suspend"

    def __init__(
        self,
        step: str,
        *,
        join: str,
        children: Sequence[object],
        done: dict[str, bytes] | None = None,
        state: dict[str, str] | None = None,
        meta: dict[str, object] | None = None,
    ) -> None:
        super().__init__(step, state=state, meta=meta)
        self.join = join
        self.children = list(children)
        self.done = dict(done or {})


class Rejected(AgentError):
    """Raised by a handler (or the runtime) to send a message straight to the dead letters."""

    code = "rejected"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SpendLimitReached(Rejected):
    """The model API refused because a spend limit is reached: retrying cannot help
    until someone raises the limit, so the message is dead-lettered (reason
    ``spend_limit``) and ``tier`` should be paused rather than retried."""

    code = "spend_limit"

    def __init__(
        self, message: str, *, tier: str, model: str | None = None, error_code: str | None = None
    ) -> None:
        super().__init__("spend_limit", message)
        self.tier = tier
        self.model = model
        self.error_code = error_code


class UnknownCommand(AgentError):
    code = "unknown_command"


class UnknownAgent(AgentError, KeyError):
    """No agent definition with this name; a ``KeyError`` too, for mapping-style callers."""

    code = "unknown_agent"

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f"no agent named {name!r}")
        self.name = name

    def __str__(self) -> str:
        # KeyError would show the repr of the message; keep it readable.
        return str(self.args[0])


class ToolError(AgentError):
    """A tool call refused (a path outside the workspace, a disabled tool) or failed
    (an MCP server that died or timed out): an answer the model reads, not a crash."""

    code = "tool_error"
