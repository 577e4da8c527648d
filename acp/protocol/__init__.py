"""ACP protocol: pure message models, codecs, integrity and rendering; no I/O."""

from acp.protocol.body import MessageKind, classify_body, command_name, is_json_value
from acp.protocol.codec import DEFAULT_MAX_FRAME, WireCodec
from acp.protocol.commands import (
    AssignCommand,
    CommandModel,
    CommandRegistry,
    DataFlow,
    PipelineStatusCommand,
)
from acp.protocol.envelope import TIERS, Envelope
from acp.protocol.ids import id_time, new_id
from acp.protocol.integrity import KeyRing, body_bytes, digest_tag, make_tag, verify_tag
from acp.protocol.render import render_body, render_envelope
from acp.protocol.text import body_from_text, body_to_text, envelope_from_text, envelope_to_text
from acp.protocol.workflow import Phase, Step, WorkflowSpec, parse_workflow

__all__ = [
    "DEFAULT_MAX_FRAME",
    "TIERS",
    "AssignCommand",
    "CommandModel",
    "CommandRegistry",
    "DataFlow",
    "Envelope",
    "KeyRing",
    "MessageKind",
    "Phase",
    "PipelineStatusCommand",
    "Step",
    "WireCodec",
    "WorkflowSpec",
    "body_bytes",
    "body_from_text",
    "body_to_text",
    "classify_body",
    "command_name",
    "digest_tag",
    "envelope_from_text",
    "envelope_to_text",
    "id_time",
    "is_json_value",
    "make_tag",
    "new_id",
    "parse_workflow",
    "render_body",
    "render_envelope",
    "verify_tag",
]
