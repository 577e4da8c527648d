"""Daily USD budgets: global, per agent and per tenant, with reservations.

A dispatch reserves its worst-case cost in every scope that applies to it and
the completion replaces that reservation with the actual cost, so
``spent + reserved`` is an upper bound on what the day will cost and checking
it before each dispatch is what keeps a budget from ever being overspent.

``per_agent_daily_usd`` and ``per_tenant_daily_usd`` may hold a ``"*"`` entry:
the limit for every agent (tenant) not named explicitly. ``per_request_usd`` is a
scope per request tree (the root's steps and every delegation below it), which
does not reset with the day.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from acp.agents.config import Budgets

__all__ = ["REQUEST_SCOPE", "BudgetLedger", "BudgetScope"]

#: the key in the per-agent / per-tenant tables that applies to every other name
DEFAULT_KEY = "*"
#: how a request tree's scope is named (``request:<root id>``)
REQUEST_SCOPE = "request:"
#: request scopes remembered at once
_MAX_REQUESTS = 10_000


@dataclass(slots=True, eq=False)
class BudgetScope:
    """One budget: ``global``, ``agent:<name>``, ``tenant:<name>`` or ``request:<id>``."""

    name: str
    limit: float
    spent: float = 0.0
    reserved: float = 0.0
    in_flight: int = 0

    @property
    def remaining(self) -> float:
        """What may still be reserved today."""
        return self.limit - self.spent - self.reserved

    def fits(self, cost: float) -> bool:
        return self.spent + self.reserved + cost <= self.limit

    def fits_when_settled(self, cost: float) -> bool:
        """True if ``cost`` could fit once in-flight work settles below its reservation."""
        return self.spent + cost <= self.limit

    def pressured(self, fraction: float) -> bool:
        return self.remaining < fraction * self.limit

    def reserve(self, cost: float) -> None:
        self.reserved += cost
        self.in_flight += 1

    def settle(self, reserved: float, actual: float) -> None:
        self.in_flight -= 1
        # nothing in flight means nothing reserved: drop float residue
        self.reserved = max(0.0, self.reserved - reserved) if self.in_flight else 0.0
        self.spent += actual

    def as_dict(self) -> dict[str, float]:
        return {
            "limit_usd": self.limit,
            "spent_usd": round(self.spent, 6),
            "reserved_usd": round(self.reserved, 6),
            "remaining_usd": round(self.remaining, 6),
        }


class BudgetLedger:
    """Every scope with a limit; scopes for agents and tenants appear on first use."""

    def __init__(self, budgets: Budgets) -> None:
        self._budgets = budgets
        self.global_scope = (
            None if budgets.daily_usd is None else BudgetScope("global", budgets.daily_usd)
        )
        self._agents: dict[str, BudgetScope] = {}
        self._tenants: dict[str, BudgetScope] = {}
        #: one scope per request tree (``per_request_usd``), the oldest forgotten past
        #: ``_MAX_REQUESTS``: a tree lives minutes, not days
        self._requests: OrderedDict[str, BudgetScope] = OrderedDict()

    def _scope(
        self, table: dict[str, BudgetScope], limits: dict[str, float], kind: str, name: str
    ) -> BudgetScope | None:
        scope = table.get(name)
        if scope is None:
            limit = limits.get(name, limits.get(DEFAULT_KEY))
            if limit is None:
                return None
            scope = table[name] = BudgetScope(f"{kind}:{name}", limit)
        return scope

    def scopes_for(
        self, agent: str | None, tenant: str | None, request: str | None = None
    ) -> tuple[BudgetScope, ...]:
        """The budgets a job of ``agent`` for ``tenant`` (in the tree of ``request``)
        draws on: those with a limit."""
        scopes: list[BudgetScope] = []
        limit = self._budgets.per_request_usd
        if request is not None and limit is not None:
            scope = self._requests.get(request)
            if scope is None:
                scope = self._requests[request] = BudgetScope(REQUEST_SCOPE + request, limit)
                while len(self._requests) > _MAX_REQUESTS:
                    self._requests.popitem(last=False)
            scopes.append(scope)
        if self.global_scope is not None:
            scopes.append(self.global_scope)
        if agent is not None:
            found = self._scope(self._agents, self._budgets.per_agent_daily_usd, "agent", agent)
            if found is not None:
                scopes.append(found)
        if tenant is not None:
            found = self._scope(self._tenants, self._budgets.per_tenant_daily_usd, "tenant", tenant)
            if found is not None:
                scopes.append(found)
        return tuple(scopes)

    def all_scopes(self) -> list[BudgetScope]:
        scopes = [] if self.global_scope is None else [self.global_scope]
        return [*scopes, *self._agents.values(), *self._tenants.values(), *self._requests.values()]

    def tight(self, max_cost: float, fraction: float) -> bool:
        """Could any scope refuse a reservation of ``max_cost`` or be under pressure?

        False means every job fits everywhere at its requested tier, which lets
        the policy skip work it knows cannot be moved or held back for budget.
        """
        for scope in self.all_scopes():
            if scope.remaining < max(max_cost, fraction * scope.limit):
                return True
        # a scope not created yet starts with its full default limit
        for limits in (self._budgets.per_agent_daily_usd, self._budgets.per_tenant_daily_usd):
            if any(limit < max(max_cost, fraction * limit) for limit in limits.values()):
                return True
        return False

    def new_day(self) -> None:
        """A budget day began: spend starts again from zero; reservations carry over.
        A request's budget is not daily: it keeps what its tree spent."""
        for scope in self.all_scopes():
            if not scope.name.startswith(REQUEST_SCOPE):
                scope.spent = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "global": None if self.global_scope is None else self.global_scope.as_dict(),
            "agents": {name: s.as_dict() for name, s in sorted(self._agents.items())},
            "tenants": {name: s.as_dict() for name, s in sorted(self._tenants.items())},
        }
