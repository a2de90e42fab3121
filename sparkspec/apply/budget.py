"""The budget of one apply (DESIGN section 10): `budget: {max_tokens, max_cost}` in the spec,
`apply --max-tokens N --max-cost X` on the command line (the command line wins, field by field).

Two checks: the plan's estimate, before anything is submitted; and the usage renders report
as they finish, after which no new render is submitted (running ones are still collected).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sparkspec import apifacts
from sparkspec.config.model import Budget
from sparkspec.errors import BudgetError
from sparkspec.plan.model import Plan


def effective(spec: Budget, max_tokens: int | None, max_cost: float | None) -> Budget:
    budget = spec
    if max_tokens is not None:
        budget = replace(budget, max_tokens=max_tokens)
    if max_cost is not None:
        budget = replace(budget, max_cost=max_cost)
    return budget


def amounts(spent: float, limit: float) -> tuple[str, str]:
    """Two sums of money for one message, with as many decimals (2 to 6) as it takes to write
    the limit as given and to tell the two apart: "0.12502 over the budget of 0.12500", never
    "0.13 over the budget of 0.13"."""
    digits = 2
    while digits < 6 and ((spent != limit and f"{spent:.{digits}f}" == f"{limit:.{digits}f}")
                          or float(f"{limit:.{digits}f}") != limit):
        digits += 1
    return f"{spent:,.{digits}f}", f"{limit:,.{digits}f}"


def check_plan(budget: Budget, plan: Plan) -> None:
    """Refuse a plan whose estimate is over the budget, with the figures."""
    renders = [c for c in plan.changes if c.action.renders]
    if not renders:
        return
    tokens = plan.estimated_tokens
    scenes = len({c.id for c in renders})
    takes = len(renders)
    # Takes counted as well whenever one is not a scene's first: one new take of a rendered
    # scene is not a whole scene's render.
    what = f"{scenes} scene(s)" + (f" ({takes} take{'s' if takes != 1 else ''})"
                                   if takes != scenes or any(c.take != 1 for c in renders) else "")
    if budget.max_tokens is not None and tokens > budget.max_tokens:
        raise BudgetError(f"the plan renders {what} for an estimated {tokens:,} tokens, over "
                          f"the budget of {budget.max_tokens:,} (max_tokens); nothing was submitted. Raise "
                          "--max-tokens or budget.max_tokens, or apply part of it with --target")
    if budget.max_cost is not None:
        cost = plan.estimated_cost
        if cost is None:
            raise BudgetError("a cost budget (max_cost) needs provider.price_per_million_tokens to estimate "
                              "the plan's cost; nothing was submitted")
        if cost > budget.max_cost:
            spent, limit = amounts(cost, budget.max_cost)
            raise BudgetError(f"the plan renders {what} for an estimated cost of {spent}, "
                              f"over the budget of {limit} (max_cost); nothing was submitted. "
                              "Raise --max-cost or budget.max_cost, or apply part of it with --target")


@dataclass
class BudgetMeter:
    """Usage reported by the renders of this apply, against the budget."""

    budget: Budget
    price_per_million_tokens: float | None = None
    tokens: int = 0
    cost: float = 0.0
    planned_tokens: int = 0  # the plan's estimate, and the unplanned renders let through since
    planned_cost: float = 0.0

    def unplanned(self, tokens: int, cost: float | None, why: str) -> str | None:
        """A render the plan did not count (it waited on another machine's claim, which ended
        without the render; or it was to collect an earlier apply's task, which did not render):
        why submitting it would go over the budget with the plan's own estimate; else None, and
        it counts from now on. `why`: the reason it is rendered here after all."""
        limit, spent = self.budget.max_tokens, self.planned_tokens + tokens
        what = f"rendering it here ({why}) would cost an estimated {tokens:,} tokens the plan did not count"
        if limit is not None and spent > limit:
            return (f"{what}; with the plan's {self.planned_tokens:,} that is over the budget of {limit:,} "
                    "(max_tokens), so nothing was submitted")
        if self.budget.max_cost is not None:
            if cost is None:
                return f"{what}, and without provider.price_per_million_tokens its cost is unknown; nothing was submitted"
            if self.planned_cost + cost > self.budget.max_cost:
                planned, allowed = amounts(self.planned_cost, self.budget.max_cost)
                return (f"{what}; with the plan's {planned} its cost is over the budget of "
                        f"{allowed} (max_cost), so nothing was submitted")
        self.planned_tokens = spent
        self.planned_cost += cost or 0.0
        return None

    def charge(self, tokens: int, cost: float | None, service_tier: str | None = None) -> str | None:
        """Count a finished render's reported usage (its cost, or its tokens at the spec's price,
        halved for `flex` as the plan counts it); the reason to stop submitting once the budget
        is reached."""
        self.tokens += tokens
        if cost is not None:
            self.cost += cost
        elif self.price_per_million_tokens is not None:
            self.cost += apifacts.tokens_cost(tokens, self.price_per_million_tokens, service_tier)
        if self.budget.max_tokens is not None and self.tokens >= self.budget.max_tokens:
            return (f"budget reached: renders reported {self.tokens:,} tokens of the "
                    f"{self.budget.max_tokens:,} allowed (max_tokens)")
        if self.budget.max_cost is not None and self.cost >= self.budget.max_cost:
            spent, limit = amounts(self.cost, self.budget.max_cost)
            return f"budget reached: renders cost {spent} of the {limit} allowed (max_cost)"
        return None
