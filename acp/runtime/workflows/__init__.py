"""Workflows: phases of steps run by the coordinator (``runner``), their state kept
where every coordinator of a deployment sees it (``store``; a bus provides one)."""

from acp.runtime.workflows.runner import (
    STEP_COMMAND,
    FailurePolicy,
    SendStep,
    WorkflowRunner,
    send_via,
    step_id,
)
from acp.runtime.workflows.store import MemoryWorkflowStore, RedisWorkflowStore, WorkflowStore

__all__ = [
    "STEP_COMMAND",
    "FailurePolicy",
    "MemoryWorkflowStore",
    "RedisWorkflowStore",
    "SendStep",
    "WorkflowRunner",
    "WorkflowStore",
    "send_via",
    "step_id",
]
