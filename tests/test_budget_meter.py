"""The budget meter prices what renders report as the plan priced their estimate."""

from __future__ import annotations

import pytest

from sparkspec.apply.budget import BudgetMeter, amounts
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


@pytest.mark.parametrize("spent, limit, expected", [
    (0.1250235, 0.125, ("0.12502", "0.12500")),
    (0.1250235, 0.1250234, ("0.125024", "0.125023")),
    (3.5, 2.0, ("3.50", "2.00")),
    (0.53, 0.53, ("0.53", "0.53")),
    (1234.5, 1000, ("1,234.50", "1,000.00")),
])
def test_money_in_a_budget_message_tells_the_two_figures_apart(spent: float, limit: float,
                                                               expected: tuple[str, str]) -> None:
    assert amounts(spent, limit) == expected
