"""Prometheus metrics for workers and coordinators, without a client library.

Counters and histograms are updated where things happen (a message handled, a
reply's tokens and cost); gauges are read from live state when Prometheus
scrapes (queue depth and lag, in-flight work, rate-limit headroom), through
collectors. ``serve_metrics`` answers ``GET /metrics`` in the text format.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import anyio
from anyio.abc import SocketStream, TaskStatus

from acp.logs import get_logger

__all__ = ["Metrics", "Sample", "serve_metrics"]

log = get_logger("acp.metrics")

Labels = tuple[tuple[str, str], ...]
#: seconds: from a millisecond hop to a long model call
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class Sample:
    """One gauge value a collector reports at scrape time."""

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    help: str = ""


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(_BUCKETS))
    total: float = 0.0
    count: int = 0


def _labels(labels: Mapping[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


def _fmt(labels: Labels, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = [*labels, *extra]
    if not pairs:
        return ""
    escaped = (f'{k}="{v}"'.replace("\n", " ") for k, v in pairs)
    return "{" + ",".join(escaped) + "}"


class Metrics:
    """One registry per process; names are prefixed ``acp_``."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, _Histogram]] = {}
        self._help: dict[str, str] = {}
        self._collectors: list[Callable[[], Awaitable[list[Sample]]]] = []

    def inc(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        value: float = 1.0,
        *,
        help: str = "",
    ) -> None:
        series = self._counters.setdefault(name, {})
        key = _labels(labels)
        series[key] = series.get(key, 0.0) + value
        if help:
            self._help.setdefault(name, help)

    def observe(
        self, name: str, value: float, labels: Mapping[str, str] | None = None, *, help: str = ""
    ) -> None:
        hist = self._histograms.setdefault(name, {}).setdefault(_labels(labels), _Histogram())
        index = bisect.bisect_left(_BUCKETS, value)
        if index < len(_BUCKETS):
            hist.counts[index] += 1
        hist.total += value
        hist.count += 1
        if help:
            self._help.setdefault(name, help)

    def collector(self, collect: Callable[[], Awaitable[list[Sample]]]) -> None:
        """Add a source of gauges read at each scrape."""
        self._collectors.append(collect)

    async def render(self) -> str:
        lines: list[str] = []
        for name, series in sorted(self._counters.items()):
            lines += [
                f"# HELP acp_{name} {self._help.get(name, name)}",
                f"# TYPE acp_{name} counter",
            ]
            lines += [
                f"acp_{name}{_fmt(labels)} {value:g}" for labels, value in sorted(series.items())
            ]
        for name, hists in sorted(self._histograms.items()):
            lines += [
                f"# HELP acp_{name} {self._help.get(name, name)}",
                f"# TYPE acp_{name} histogram",
            ]
            for labels, hist in sorted(hists.items()):
                running = 0
                for bound, count in zip(_BUCKETS, hist.counts, strict=True):
                    running += count
                    lines.append(
                        f"acp_{name}_bucket{_fmt(labels, [('le', f'{bound:g}')])} {running}"
                    )
                lines.append(f"acp_{name}_bucket{_fmt(labels, [('le', '+Inf')])} {hist.count}")
                lines.append(f"acp_{name}_sum{_fmt(labels)} {hist.total:g}")
                lines.append(f"acp_{name}_count{_fmt(labels)} {hist.count}")
        gauges: dict[str, list[Sample]] = {}
        for collect in self._collectors:
            try:
                for sample in await collect():
                    gauges.setdefault(sample.name, []).append(sample)
            except Exception:  # a failing source must not take the endpoint down
                log.exception("metrics_collector_failed")
        for name, samples in sorted(gauges.items()):
            help_text = next((s.help for s in samples if s.help), name)
            lines += [f"# HELP acp_{name} {help_text}", f"# TYPE acp_{name} gauge"]
            lines += [f"acp_{name}{_fmt(_labels(s.labels))} {s.value:g}" for s in samples]
        return "\n".join(lines) + "\n"


async def serve_metrics(
    metrics: Metrics,
    port: int,
    *,
    host: str = "127.0.0.1",
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``GET /metrics`` on ``host:port`` (port 0: any free port, reported at start)."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)

    async def answer(client: SocketStream) -> None:
        async with client:
            request = b""
            with anyio.move_on_after(5):
                while b"\r\n\r\n" not in request and len(request) < 8192:
                    request += await client.receive()
            path = request.split(b" ")[1] if request.count(b" ") >= 2 else b""
            if path.split(b"?")[0] == b"/metrics":
                body = (await metrics.render()).encode()
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
            else:
                body = b"not found: try /metrics\n"
                head = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
            await client.send(
                head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )

    async with listener:  # closed on cancellation too
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        log.info("metrics_listening", host=host, port=bound)
        task_status.started(bound)
        await listener.serve(answer)
