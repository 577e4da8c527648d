"""The envelope: routing and bookkeeping around an open ACP body.

Immutable, so a message handed to several handlers or retried cannot drift;
``evolve`` makes the changed copy a retry or a reply needs.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from acp.protocol.body import MessageKind, classify_body
from acp.protocol.headers import H_JOIN, H_PART, H_ROOT
from acp.protocol.ids import new_id

__all__ = ["TIERS", "Envelope"]

#: model tiers the runtime schedules by; an explicit model id is accepted too
TIERS = ("haiku", "sonnet", "opus")


class Envelope(BaseModel):
    """One ACP message. ``body`` is the ACP JSON object exactly as its sender wrote it."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    id: str = Field(default_factory=new_id)
    kind: MessageKind
    sender: str
    recipient: str
    body: dict[str, Any]
    correlation_id: str | None = None
    reply_to: str | None = None
    created_at: float = Field(default_factory=time.time, ge=0, lt=1e11, allow_inf_nan=False)
    deadline: float | None = Field(default=None, ge=0, lt=1e11, allow_inf_nan=False)
    #: 0 (background) .. 9 (urgent)
    priority: int = Field(default=5, ge=0, le=9)
    attempt: int = Field(default=1, ge=1)
    traceparent: str | None = None
    tracestate: str | None = None
    #: per-message tier override: haiku | sonnet | opus | a model id
    tier: str | None = None
    tenant: str | None = None
    #: integrity tag over the packed body and the routing, cost and identity headers
    #: (see ``acp.protocol.integrity``)
    hash: str | None = None
    #: extension headers; values are strings so every transport can carry them
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("sender", "recipient")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @classmethod
    def _trusted(cls, values: dict[str, Any]) -> Envelope:
        """Build from values the caller has fully checked (the wire decoder), every
        field present: skips pydantic's validation and ``model_construct``'s
        default filling on the hot path."""
        env = _new(cls)
        _set_dict(env, values)
        # One set shared by every such envelope: a frozen model never changes it in
        # place (``model_copy`` copies it before adding to it), and it saves a set
        # built and freed per message.
        _set_fields_set(env, _EVERY_FIELD)
        _set_extra(env, None)
        _set_private(env, None)
        return env

    @classmethod
    def for_body(
        cls, body: dict[str, Any], *, sender: str, recipient: str, **fields: Any
    ) -> Envelope:
        """An envelope whose kind is read from the body itself."""
        kind = classify_body(body)
        return cls._plain(kind, body, sender, recipient, fields) or cls(
            kind=kind, body=body, sender=sender, recipient=recipient, **fields
        )

    @classmethod
    def _plain(
        cls,
        kind: MessageKind,
        body: dict[str, Any],
        sender: str,
        recipient: str,
        fields: dict[str, Any],
    ) -> Envelope | None:
        """The envelope built without pydantic when every value is plainly valid
        (checked right here, at a quarter of the cost), else None."""
        if not (
            (not fields or _plain_text_fields(fields))
            and type(body) is dict
            and type(sender) is str
            and sender
            and type(recipient) is str
            and recipient
            and all(map(_is_str, body))
        ):
            return None
        values = dict(_TEMPLATE)
        values["id"] = new_id()
        values["kind"] = kind
        values["sender"] = sender
        values["recipient"] = recipient
        values["body"] = dict(body)
        values["created_at"] = time.time()
        values["headers"] = {}
        if fields:
            values.update(fields)
        return cls._trusted(values)

    @property
    def command(self) -> str | None:
        cmd = self.body.get("cmd")
        return cmd if isinstance(cmd, str) else None

    def expired(self, now: float | None = None) -> bool:
        return self.deadline is not None and (time.time() if now is None else now) >= self.deadline

    def evolve(self, **changes: Any) -> Envelope:
        """A copy with ``changes`` applied; the integrity tag is dropped when a field it
        covers changes (anything but ``attempt`` and the trace context), so the next
        encoder seals it again.

        Like ``model_copy(update=...)`` the changes are not validated (callers pass
        values they hold as valid), at a third of its cost: the hot paths evolve an
        envelope or two per message."""
        if "hash" not in changes and not changes.keys() <= _UNSEALED:
            changes["hash"] = None
        unknown = changes.keys() - _EVERY_FIELD
        if unknown:
            raise TypeError(f"Envelope has no field(s) {', '.join(sorted(unknown))}")
        values = dict(self.__dict__)
        values.update(changes)
        return Envelope._trusted(values)

    def reply(
        self, body: dict[str, Any], *, kind: MessageKind = MessageKind.REPLY, **fields: Any
    ) -> Envelope:
        """The answer to this message, addressed to its reply-to (or sender), same trace."""
        kept = {
            "correlation_id": self.correlation_id or self.id,
            "traceparent": self.traceparent,
            "tracestate": self.tracestate,
            "tenant": self.tenant,
        }
        sender, recipient = self.recipient, self.reply_to or self.sender
        if self.headers and H_JOIN in self.headers:
            # a delegated command: its answer carries the rendezvous it is awaited at
            # (and the tree it belongs to)
            back = {k: self.headers[k] for k in (H_JOIN, H_PART, H_ROOT) if k in self.headers}
            fields = {**fields, "headers": {**back, **fields.get("headers", {})}}
        if not fields or _plain_text_fields(fields):
            kept.update(fields)
            plain = Envelope._plain(MessageKind(kind), body, sender, recipient, kept)
            if plain is not None:
                return plain
            fields = {}
        return Envelope(kind=kind, body=body, sender=sender, recipient=recipient, **kept, **fields)


_EVERY_FIELD = set(Envelope.model_fields)
#: fields the integrity tag leaves out: they change at every hop
_UNSEALED = frozenset(("attempt", "traceparent", "tracestate"))
# pydantic's own slots, set through their descriptors: a third cheaper than
# object.__setattr__, which looks each one up by name
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_is_str = str.__instancecheck__
#: optional string fields a caller often sets; they need no check beyond their type
_TEXT_FIELDS = frozenset(
    ("correlation_id", "reply_to", "traceparent", "tracestate", "tier", "tenant")
)


def _plain_text_fields(fields: dict[str, Any]) -> bool:
    """Every value is one the model would accept unchanged (so validation can be
    skipped): optional strings, and the few other fields a client sets per message."""
    for name, value in fields.items():
        if name in _TEXT_FIELDS:
            if value is not None and type(value) is not str:
                return False
        else:
            check = _CHECKS.get(name)
            if check is None or not check(value):
                return False
    return True


def _str_map(value: Any) -> bool:
    return type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items())


_CHECKS: dict[str, Any] = {
    "created_at": lambda v: type(v) is float and 0.0 <= v < 1e11,
    "priority": lambda v: type(v) is int and 0 <= v <= 9,
    "deadline": lambda v: v is None or (type(v) is float and 0.0 <= v < 1e11),
    "headers": _str_map,
    "id": lambda v: type(v) is str and bool(v),
}


#: every field in declaration order, optional ones at their static defaults
_TEMPLATE: dict[str, Any] = {
    name: None if info.is_required() or info.default_factory else info.default
    for name, info in Envelope.model_fields.items()
}
