"""The budget meter prices what renders report as the plan priced their estimate."""

from __future__ import annotations

from sparkspec.apply.budget import BudgetMeter
from sparkspec.config.model import Budget


def test_a_flex_render_without_a_reported_cost_is_charged_at_half_price() -> None:
    meter = BudgetMeter(Budget(max_cost=0.13), price_per_million_tokens=4.2)
    assert meter.charge(19_845, None, "flex") is None
    assert meter.charge(19_845, None, "flex") is None  # 0.083 of 0.13: the plan said 3 fit
    assert round(meter.cost, 4) == round(2 * 19_845 / 1e6 * 4.2 / 2, 4)
    assert meter.charge(19_845, None, "default") is not None  # full price: 0.083 + 0.083 > 0.13


def test_a_reported_cost_is_taken_as_it_is_whatever_the_tier() -> None:
    meter = BudgetMeter(Budget(max_cost=1.0), price_per_million_tokens=4.2)
    meter.charge(19_845, 0.3, "flex")
    assert meter.cost == 0.3
