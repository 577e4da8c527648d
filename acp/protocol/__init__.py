"""ACP protocol: pure message models, codecs and integrity; no I/O."""

from acp.protocol.body import MessageKind, classify_body, command_name, is_json_value

__all__ = ["MessageKind", "classify_body", "command_name", "is_json_value"]
