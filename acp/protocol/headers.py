"""The envelope extension headers the runtime itself reads and writes.

Extension headers (``Envelope.headers``) are strings, so every transport can
carry them; names starting with ``acp-`` belong to the runtime. They travel
inside the frame, with the message, so whatever a hop decides survives a crash
of the next one.
"""

from __future__ import annotations

__all__ = [
    "H_ANCESTRY",
    "H_CONV",
    "H_JOIN",
    "H_NOT_BEFORE",
    "H_PARENT",
    "H_PART",
    "H_RESERVATION",
    "H_ROOT",
    "H_SINCE",
    "H_SPENT",
    "H_STEP",
    "H_TURN",
    "H_TURNS",
    "RUNTIME_PREFIX",
]

#: names that start with this are the runtime's
RUNTIME_PREFIX = "acp-"

#: a continuation's step: "repair", "escalate" or "retry" (absent on a first attempt)
H_STEP = "acp-step"
#: the id of the message a chain of continuations started from (replies correlate to it)
H_ROOT = "acp-root"
#: JSON list of conversation turns a repair continues after the command
H_TURNS = "acp-turns"
#: JSON of what the chain's earlier calls used and cost (usage, cost_usd, calls, requeues)
H_SPENT = "acp-spent"
#: the conversation an agent loop's step belongs to (its record's name), and the
#: number of model turns it made so far
H_CONV = "acp-conv"
H_TURN = "acp-turn"
#: on a delegated command and its reply: the rendezvous the parent waits at, and
#: the part (the model's tool call id) this reply is
H_JOIN = "acp-join"
H_PART = "acp-part"
#: the agents above a delegated command, root first, comma separated: its depth,
#: and what refuses a cycle; and the id of the step that delegated it
H_ANCESTRY = "acp-ancestry"
H_PARENT = "acp-parent"
#: server time (epoch seconds) before which a continuation must not be dispatched
H_NOT_BEFORE = "acp-not-before"
#: server time (epoch seconds) the chain first reached the coordinator: its age, written
#: when the coordinator dispatches it for model capacity (a Python agent's forward has none)
H_SINCE = "acp-since"
#: JSON of what the coordinator reserved when it dispatched the message (tier, input
#: and output tokens, worst-case USD, budget scopes, leader term): what a new leader
#: rebuilds its in-flight view from
H_RESERVATION = "acp-res"
