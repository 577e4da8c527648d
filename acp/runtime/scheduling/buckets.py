"""Token buckets that mirror the model API's per-minute limits.

The API enforces requests, input tokens and output tokens per minute as token
buckets (FACTS.md): capacity is the per-minute limit and it refills
continuously at ``limit / 60`` per second. The policy keeps its own copy of
each bucket, charged *before* the API would charge it, so the API's bucket is
never lower than ours and a dispatch the policy allows is one the API accepts.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]

#: seconds added to every computed ready time, so rounding in the refill arithmetic
#: can never leave the level a few ulps short of the need when the daemon wakes up
MARGIN_S = 1e-6


class TokenBucket:
    """A bucket of ``capacity`` tokens refilled at ``capacity / 60`` per second.

    The level may go negative: when a reply reports more tokens than were
    reserved, the difference is a debt that refill must pay back before the
    next dispatch, exactly as the API's own bucket would see it.
    """

    __slots__ = ("capacity", "level", "rate", "updated_at")

    def __init__(self, per_minute: float, *, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60.0
        self.level = self.capacity  # the API starts a quiet minute full
        self.updated_at = now

    def refill(self, now: float) -> None:
        """Add what flowed in since the last update (never above capacity)."""
        if now > self.updated_at:
            self.level = min(self.capacity, self.level + self.rate * (now - self.updated_at))
            self.updated_at = now

    def can_take(self, amount: float) -> bool:
        """True when ``amount`` fits now (call :meth:`refill` first)."""
        return self.level >= amount

    def take(self, amount: float) -> None:
        self.level -= amount

    def give(self, amount: float) -> None:
        """Credit ``amount`` back (negative: a debit); the level stays at most the capacity."""
        self.level = min(self.capacity, self.level + amount)

    def ready_at(self, amount: float, now: float) -> float:
        """Earliest time at which ``amount`` will fit, assuming nothing else is taken."""
        deficit = amount - self.level
        return now if deficit <= 0 else now + deficit / self.rate + MARGIN_S

    def set_limit(self, per_minute: float) -> None:
        """Adopt a new per-minute limit; the level never exceeds the new capacity."""
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60.0
        self.level = min(self.level, self.capacity)

    def clamp(self, remaining: float) -> bool:
        """Lower the level to ``remaining`` if that is less; True when it changed."""
        if remaining < self.level:
            self.level = float(remaining)
            return True
        return False
