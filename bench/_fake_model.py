"""What the model-backed benchmarks share: the real ``anthropic`` SDK answering from a
script at once (``httpx2.MockTransport``), so that what they measure is the runtime,
and the nearest-rank percentile their figures are read with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx2


def message(
    content: list[dict[str, Any]], stop: str, model: str = "claude-haiku-5-5"
) -> dict[str, Any]:
    """A Messages API response body with ``content`` and a small usage."""
    return {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 20},
    }


def scripted_client(
    answer: Callable[[httpx2.Request], httpx2.Response],
) -> anthropic.AsyncAnthropic:
    """An SDK client whose every request ``answer`` answers, never retried."""
    return anthropic.AsyncAnthropic(
        api_key="sk-ant-bench",
        base_url="http://anthropic.bench",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)),
    )


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 to 1) of ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
