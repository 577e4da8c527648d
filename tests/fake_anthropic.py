"""A small Anthropic-compatible HTTP server on loopback, for end-to-end tests.

It answers ``POST /v1/messages`` like the real API would (message JSON, usage
with cache fields, rate-limit headers), replying with a JSON object built from
the command it was sent, so a test can check the whole path. Requests are
recorded for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: ``answer(request_body, call_number)`` -> the reply's text (None: the default
#: answer), or a whole response's ``{"content": [...], "stop_reason": ...}``
Answer = Callable[[dict[str, Any], int], "str | dict[str, Any] | None"]


class FakeAnthropic:
    """``delay`` makes each call take that long; ``max_in_flight`` is the most calls
    seen at once (how a concurrency cap looks from the API's side), and
    ``max_in_flight_by_model`` the same per model. ``answer`` scripts the reply's
    text per call; ``billed`` is the usage of every answered call, as the API bills it."""

    def __init__(
        self, *, delay: float = 0.0, output_tokens: int = 60, answer: Answer | None = None
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.delay = delay
        self.output_tokens = output_tokens
        self.answer = answer
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_by_model: dict[str, int] = {}
        self.max_in_flight_by_model: dict[str, int] = {}
        #: (model, usage) of each answered call
        self.billed: list[tuple[str, dict[str, int]]] = []
        #: (started, answered, request body) of each answered call, monotonic seconds
        self.calls: list[tuple[float, float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(
                    {
                        "path": self.path,
                        "body": request,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                )
                if self.path.rstrip("/") != "/v1/messages":
                    self._send(
                        404,
                        {
                            "type": "error",
                            "error": {"type": "not_found_error", "message": self.path},
                        },
                    )
                    return
                model = str(request.get("model"))
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    now = fake.in_flight_by_model.get(model, 0) + 1
                    fake.in_flight_by_model[model] = now
                    fake.max_in_flight_by_model[model] = max(
                        fake.max_in_flight_by_model.get(model, 0), now
                    )
                    number = len(fake.requests)
                started = time.monotonic()
                try:
                    time.sleep(fake.delay)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1
                        fake.in_flight_by_model[model] -= 1
                command = json.loads(request["messages"][0]["content"])
                answer = {
                    "component_id": command.get("component_id"),
                    "diagnosis": f"{command.get('cmd')} looks degraded",
                    "recommendations": ["add_partition_pruning", "scale_consumers"],
                }
                scripted = fake.answer(request, number) if fake.answer else None
                text = json.dumps(answer) if scripted is None else scripted
                content: list[dict[str, Any]] = [{"type": "text", "text": text}]
                stop = "end_turn"
                if isinstance(scripted, dict):
                    content, stop = scripted["content"], scripted["stop_reason"]
                usage = {
                    "input_tokens": 120,
                    "output_tokens": fake.output_tokens,
                    "cache_creation_input_tokens": 0 if number > 1 else 900,
                    "cache_read_input_tokens": 900 if number > 1 else 0,
                }
                with fake._lock:
                    fake.billed.append((model, usage))
                self._send(
                    200,
                    {
                        "id": f"msg_fake_{len(fake.requests)}",
                        "type": "message",
                        "role": "assistant",
                        "model": request["model"],
                        "content": content,
                        "stop_reason": stop,
                        "stop_sequence": None,
                        "usage": usage,
                    },
                    {
                        "anthropic-ratelimit-requests-limit": "2000",
                        "anthropic-ratelimit-requests-remaining": "1999",
                        "anthropic-ratelimit-requests-reset": "2026-11-26T23:00:00Z",
                    },
                )
                with fake._lock:
                    fake.calls.append((started, time.monotonic(), request))

            def _send(
                self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
