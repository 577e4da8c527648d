"""OpenTelemetry spans for each hop a message takes.

The W3C trace context travels in every envelope (``traceparent``,
``tracestate``). Each hop (the coordinator admitting work, a worker handling
it) opens a span that continues that trace, and the messages it sends carry
the span's own context, so a trace links ``acp send`` to the Claude call.
With no OpenTelemetry SDK configured the spans cost next to nothing and
record nothing; configure one (an exporter) to see them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from acp.protocol.envelope import Envelope

__all__ = ["hop", "outgoing_trace", "record_reply", "record_tool", "tracing"]

_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("acp-runtime")


def tracing() -> bool:
    """Whether a real tracer provider is set (an SDK); asked each time, since one
    may be set after this module is imported. The API's own getter reads the
    environment on every call while none is set: a module attribute is read first
    (falling back to the getter if the API ever moves it)."""
    if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _PROVIDER_FROM_ENV:
        return False
    return not isinstance(trace.get_tracer_provider(), _NO_SDK)


_UNKNOWN = object()
_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
#: auto-instrumentation names its provider here; the API loads it on first use
_PROVIDER_FROM_ENV = bool(os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"))


def hop(name: str, env: Envelope, attributes: Mapping[str, Any]) -> AbstractContextManager[Span]:
    """A consumer span for handling ``env``, child of the trace the envelope carries."""
    if not tracing():  # nothing would be recorded: skip parsing the context
        return _NO_SPAN
    return _span(name, env, attributes)


_NO_SPAN = nullcontext(trace.INVALID_SPAN)


@contextmanager
def _span(name: str, env: Envelope, attributes: Mapping[str, Any]) -> Iterator[Span]:
    carrier = {"traceparent": env.traceparent or "", "tracestate": env.tracestate or ""}
    parent = _propagator.extract(carrier) if env.traceparent else None
    attrs = {
        "acp.msg_id": env.id,
        "acp.sender": env.sender,
        **{k: v for k, v in attributes.items() if v is not None},
    }
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=attrs
    ) as span:
        yield span


def outgoing_trace(env: Envelope) -> tuple[str | None, str | None]:
    """The trace context messages sent from the current hop should carry: the
    current span's when one records, else what ``env`` came with."""
    if not tracing():
        return env.traceparent, env.tracestate
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return env.traceparent, env.tracestate
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", env.traceparent), carrier.get("tracestate") or env.tracestate


def record_reply(span: Span, body: Mapping[str, Any] | None) -> None:
    """Put a Claude reply's model, tokens and cost on the span; mark errors."""
    if body is None:
        return
    meta = body.get("_acp")
    if isinstance(meta, Mapping):
        span.set_attribute("acp.model", str(meta.get("model")))
        span.set_attribute("acp.tier", str(meta.get("tier")))
        span.set_attribute("acp.cost_usd", float(meta.get("cost_usd") or 0.0))
        for kind, tokens in (meta.get("usage") or {}).items():
            span.set_attribute(f"acp.tokens.{kind}", int(tokens))
    if "error" in body:
        span.set_status(Status(StatusCode.ERROR, str(body.get("error"))))


def record_tool(event: Mapping[str, Any]) -> None:
    """A span for a tool call that just ended, under the current hop's span (its
    start placed ``duration_ms`` before now)."""
    if not tracing():
        return
    end = time.time_ns()
    start = end - int(float(event.get("duration_ms") or 0.0) * 1_000_000)
    span = _tracer.start_span(
        f"tool {event.get('tool')}",
        start_time=start,
        attributes={f"acp.{k}": v for k, v in event.items() if isinstance(v, str | int | float)},
    )
    if event.get("outcome") != "ok":
        span.set_status(Status(StatusCode.ERROR, str(event.get("outcome"))))
    span.end(end_time=end)
