"""Scheduling by complexity and tier: the coordinator's pure policy.

:class:`SchedulingPolicy` decides what runs, where and when, from a tier
table (limits, prices), complexity classes and budgets, driven by an
injected clock; the coordinator daemon applies its :class:`Decisions`
through the bus. Nothing here does I/O.
"""

from acp.runtime.scheduling.buckets import TokenBucket
from acp.runtime.scheduling.budgets import BudgetLedger, BudgetScope
from acp.runtime.scheduling.policy import (
    DAY_S,
    Decisions,
    Dispatch,
    EventKind,
    Job,
    PolicyEvent,
    Rejection,
    RejectionReason,
    SchedulingPolicy,
)

__all__ = [
    "DAY_S",
    "BudgetLedger",
    "BudgetScope",
    "Decisions",
    "Dispatch",
    "EventKind",
    "Job",
    "PolicyEvent",
    "Rejection",
    "RejectionReason",
    "SchedulingPolicy",
    "TokenBucket",
]
