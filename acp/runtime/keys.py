"""Every Redis key, stream, group, topic, lease and counter name the runtime uses,
in one place.

Two spellings name two things each, in separate key spaces that never meet:
``workers`` (the consumer group of every queue, ``GROUP``, and the workers' presence
group, ``WORKERS``), ``coordinator`` (its intake queue, ``INTAKE``, and the leader's
lease, ``LEADER_LEASE``). They stay as they are: each is state a running deployment
holds (pending entries of the group, the lease a leader holds), and renaming one
would strand it during a rolling upgrade (old workers unseen, two leaders). Use the
constants, never the strings. Topics carry no state: the workflow events were
renamed apart from the workflows' intake.

Keys that one script touches together share a hash tag, ``{<destination>}``,
so they live in one Redis Cluster slot: a destination's work stream, its
send-dedup markers, processed ledger, outbox, delayed retries and dead
letters. Cross-destination effects go through the outbox, never one script.
"""

from __future__ import annotations

import re
import zlib

from acp.errors import ConfigError
from acp.protocol.patterns import remembering_fullmatch

__all__ = [
    "CANCELLED_ROOTS",
    "COMPLETIONS_TOPIC",
    "CONTROL_TOPIC",
    "COORDINATORS",
    "COORDINATOR_EVENTS_TOPIC",
    "DESTINATIONS",
    "GROUP",
    "INBOX_PREFIX",
    "INTAKE",
    "LEADER_LEASE",
    "PLATFORM_TOPIC",
    "PROGRESS_TOPIC",
    "RATE_LIMIT_TOPIC",
    "RESULTS",
    "STATUS_TOPIC",
    "TOOLS_TOPIC",
    "WORKERS",
    "WORKFLOWS_ACTIVE",
    "WORKFLOW_INTAKE",
    "WORKFLOW_REPLIES",
    "WORKFLOW_STEPS",
    "WORKFLOW_TOPIC",
    "Keys",
    "check_name",
    "counters_hash",
    "inbox_name",
    "intake_queue",
    "intake_queues",
    "is_intake",
    "join_hash",
    "lease_keys",
    "marks_set",
    "presence_hash",
    "record_list",
    "topic_stream",
    "workflow_key",
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


#: the destination work for agents is sent to when a coordinator runs (with one
#: partition; see ``intake_queue``)
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


#: the lease the leading coordinator holds (a lease key, apart from the intake stream)
LEADER_LEASE = "coordinator"
#: where workflow messages are sent to be started (``acp run``)
WORKFLOW_INTAKE = "workflows"
#: where workflow step replies come back to the runner
WORKFLOW_REPLIES = "coordinator.workflows"
#: ids of workflows not finished yet (resumed when a runner starts)
WORKFLOWS_ACTIVE = f"{PREFIX}:workflows:active"
#: step message id -> "<workflow id> <step path>", for routing replies
WORKFLOW_STEPS = f"{PREFIX}:workflows:steps"
#: the roots of delegation trees cancelled (marks, each kept as long as the ledger)
CANCELLED_ROOTS = "cancelled-roots"

# Topics: fan-out streams (``topic_stream``); a topic's name lives in its own key
# space, apart from destinations of the same spelling.
#: status updates agents publish
STATUS_TOPIC = "status"
#: progress reports of in-flight messages
PROGRESS_TOPIC = "progress"
#: cancellations workers listen for
CONTROL_TOPIC = "control"
#: the rate-limit headers Claude calls report, for the coordinator
RATE_LIMIT_TOPIC = "ratelimits"
#: finished messages (usage, cost, outcome), for the coordinator
COMPLETIONS_TOPIC = "completions"
#: tool calls made in agent loops (agent, tool, duration, outcome)
TOOLS_TOPIC = "tools"
#: platform health the coordinator publishes
PLATFORM_TOPIC = "platform"
#: the coordinator's decisions (deferrals, refusals, ...)
COORDINATOR_EVENTS_TOPIC = "coordinator.events"
#: workflow events (started, each step's result, finished); not "workflows", the
#: name of the workflows' intake
WORKFLOW_TOPIC = "workflow-events"


def workflow_key(workflow_id: str) -> str:
    """The hash holding one workflow (its id becomes a hash tag: checked like a name)."""
    check_name(workflow_id, "workflow id")
    return f"{PREFIX}:{{workflow:{workflow_id}}}"


def intake_queue(agent: str, partitions: int) -> str:
    """The intake partition work for ``agent`` goes to: with one partition ``INTAKE``,
    with N ``coordinator.<k>`` for k = crc32(agent) mod N, so that on a cluster the
    intake spreads over the shards instead of loading one slot. The leading
    coordinator consumes every partition (and any left from another N)."""
    if partitions <= 1:
        return INTAKE
    return f"{INTAKE}.{zlib.crc32(agent.encode()) % partitions}"


def intake_queues(partitions: int) -> list[str]:
    """Every partition of the intake, for ``partitions`` of them."""
    return [INTAKE] if partitions <= 1 else [f"{INTAKE}.{k}" for k in range(partitions)]


def is_intake(dest: str) -> bool:
    """``INTAKE`` or one of its partitions (``coordinator.workflows`` is not one)."""
    return dest == INTAKE or (dest.startswith(INTAKE + ".") and dest[len(INTAKE) + 1 :].isdigit())


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


def marks_set(name: str) -> str:
    """A set whose members expire one by one (``Bus.mark``): a sorted set scored by
    each member's expiry."""
    check_name(name, "marks")
    return f"{PREFIX}:{{marks:{name}}}"


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
