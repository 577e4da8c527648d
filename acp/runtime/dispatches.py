"""What the coordinator has dispatched and not yet settled, recorded in the messages.

A dispatched message carries its reservation in the ``acp-res`` header: tier,
input and output tokens, worst-case USD, the leader's term. It stays in its
agent's queue until the worker's commit removes it, atomically with the reply,
so "in an agent's queue with a reservation" is exactly "dispatched and not yet
done". A new leader reads the queues before it dispatches anything and counts
each such message as in flight (its slot, its tokens, its budget hold): a
failover neither runs past a cap nor forgets a charge.

Input tokens are known before dispatch as far as bytes tell: a token is never
shorter than a byte, so the request's UTF-8 size bounds what the model will be
charged for. :class:`InputSizer` tightens that bound per agent with the largest
tokens-per-byte ratio replies have shown, so big prompts get big reservations
without every prompt paying the byte bound.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from acp.agents.prompt import PROMPT_OVERHEAD_TOKENS
from acp.protocol.envelope import Envelope
from acp.protocol.headers import H_RESERVATION

__all__ = ["InputSizer", "Reservation"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one dispatch holds until its completion settles it."""

    tier: str
    input_tokens: int
    max_tokens: int
    cost_usd: float
    #: the leader's fencing token when it dispatched
    term: int
    #: the request's size in bytes (to learn tokens per byte), 0 when unknown
    prompt_bytes: int = 0

    def header(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def of(cls, env: Envelope) -> Reservation | None:
        """The reservation a dispatched message carries, if it carries a readable one."""
        raw = env.headers.get(H_RESERVATION) if env.headers else None
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(
                tier=str(data["tier"]),
                input_tokens=int(data["input_tokens"]),
                max_tokens=int(data["max_tokens"]),
                cost_usd=float(data["cost_usd"]),
                term=int(data["term"]),
                prompt_bytes=int(data.get("prompt_bytes", 0)),
            )
        except (ValueError, KeyError, TypeError):
            return None


class InputSizer:
    """Input tokens to reserve for a request of a known size, per agent.

    Before any reply the byte bound itself (plus the request's framing); after,
    the largest tokens-per-byte ratio this agent's replies showed, with
    ``margin``, never above the bound. Conservative on purpose: a reservation
    below what the API charges is what would let a dispatch meet a 429."""

    def __init__(self, *, margin: float = 1.15) -> None:
        self.margin = margin
        self._ratio: dict[str, float] = {}

    def estimate(self, agent: str, prompt_bytes: int) -> int:
        bound = prompt_bytes + PROMPT_OVERHEAD_TOKENS
        ratio = self._ratio.get(agent)
        if ratio is None:
            return bound
        return min(bound, math.ceil(prompt_bytes * ratio * self.margin) + PROMPT_OVERHEAD_TOKENS)

    def observe(self, agent: str, prompt_bytes: int, input_tokens: int) -> None:
        """A reply reported ``input_tokens`` for a request of ``prompt_bytes``."""
        if prompt_bytes <= 0 or input_tokens <= 0:
            return
        ratio = min(1.0, max(0.0, input_tokens - PROMPT_OVERHEAD_TOKENS) / prompt_bytes)
        self._ratio[agent] = max(self._ratio.get(agent, 0.0), ratio)
