"""Every Redis key, stream and group name the runtime uses, in one place.

Keys that one script touches together share a hash tag, ``{<destination>}``,
so they live in one Redis Cluster slot: a destination's work stream, its
send-dedup markers, processed ledger, outbox, delayed retries and dead
letters. Cross-destination effects go through the outbox, never one script.
"""

from __future__ import annotations

import re

from acp.errors import ConfigError
from acp.protocol.patterns import remembering_fullmatch

__all__ = [
    "COORDINATORS",
    "DESTINATIONS",
    "GROUP",
    "INBOX_PREFIX",
    "INTAKE",
    "RESULTS",
    "WORKERS",
    "Keys",
    "check_name",
    "counters_hash",
    "inbox_name",
    "join_hash",
    "lease_keys",
    "presence_hash",
    "record_list",
    "topic_stream",
]

PREFIX = "acp"
#: consumer group every destination's workers read through
GROUP = "workers"
#: set of every destination that ever received work (for status and dlq tools)
DESTINATIONS = f"{PREFIX}:destinations"

_valid_name = remembering_fullmatch(re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"))


def check_name(name: str, what: str = "destination") -> str:
    """Names end up inside keys and hash tags: no braces, spaces or oddities."""
    if not _valid_name(name):
        raise ConfigError(
            f"{what} name {name!r} must be 1-128 characters of letters, digits and ._:@- "
            "starting with a letter or digit"
        )
    return name


class Keys:
    """The keys of one destination (an agent, or a client's reply inbox)."""

    __slots__ = ("dead", "delayed", "dest", "done", "outbox", "sent", "stream")

    def __init__(self, dest: str) -> None:
        check_name(dest)
        tag = f"{PREFIX}:{{{dest}}}"
        self.dest = dest
        #: the work queue (stream; consumer group ``GROUP``)
        self.stream = f"{tag}:in"
        #: message ids sent recently (sorted set scored by time): idempotent sends
        self.sent = f"{tag}:sent"
        #: message ids processed recently (sorted set scored by time): the ledger
        self.done = f"{tag}:done"
        #: effects committed but not yet delivered to their destinations (stream)
        self.outbox = f"{tag}:out"
        #: retries waiting for their time (sorted set scored by due time)
        self.delayed = f"{tag}:delayed"
        #: dead letters (stream)
        self.dead = f"{tag}:dead"


#: the destination work for agents is sent to when a coordinator runs
INTAKE = "coordinator"
#: presence group of live coordinators
COORDINATORS = "coordinators"
#: presence group of live workers (one member per worker and agent)
WORKERS = "workers"

#: destinations that are a client's reply inbox start with this
INBOX_PREFIX = "inbox."


#: the destination whose entries are result records, one per tracked message (the
#: latest wins), kept for a bounded time and count instead of queued; the dot keeps
#: it apart from agent names, which cannot have one
RESULTS = "acp.results"
#: the result records (hash: message id -> record) and their age index (sorted set)
RESULT_RECORDS = f"{PREFIX}:{{{RESULTS}}}:records"
RESULT_INDEX = f"{PREFIX}:{{{RESULTS}}}:index"


def inbox_name(client_id: str) -> str:
    """The destination a requester reads its replies from."""
    return INBOX_PREFIX + client_id


def presence_hash(group: str) -> str:
    """Live members of a group (workers, coordinators), each with an expiry."""
    check_name(group, "presence group")
    return f"{PREFIX}:{{presence:{group}}}"


def lease_keys(name: str) -> tuple[str, str]:
    """A lease and its fencing-token counter (one slot)."""
    check_name(name, "lease")
    return f"{PREFIX}:{{lease:{name}}}", f"{PREFIX}:{{lease:{name}}}:token"


def counters_hash(name: str) -> str:
    check_name(name, "counters")
    return f"{PREFIX}:{{counters:{name}}}"


def record_list(name: str) -> str:
    """An append-only record (a conversation, turn by turn): one list."""
    check_name(name, "record")
    return f"{PREFIX}:{{record:{name}}}"


def join_hash(name: str) -> str:
    """A rendezvous of parts arriving from anywhere (replies a suspended step waits
    for), with what to send once all are in: one hash."""
    check_name(name, "join")
    return f"{PREFIX}:{{join:{name}}}"


def topic_stream(topic: str) -> str:
    check_name(topic, "topic")
    return f"{PREFIX}:{{topic:{topic}}}:events"
