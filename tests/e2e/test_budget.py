"""The budget of one apply: `budget: {max_tokens, max_cost}` and `apply --max-tokens / --max-cost`,
through the spark provider against the fake gateway."""

from __future__ import annotations

import json

import pytest

from fakeapi import FakeSparkAPI

from .conftest import Project

# 480p 16:9 is 864x496 here; 29 frames: 864 * 496 * 29 // 1024 tokens a scene.
PER_SCENE = 864 * 496 * 29 // 1024
SPEC = """\
version: 1
provider:
  type: spark
  parallelism: 1
  poll: {initial: 0.05, max: 0.2}
  price_per_million_tokens: 10
defaults: {resolution: 480p, ratio: "16:9", frames: 29, seed: 9}
scenes:
  a: {prompt: "a paper crane unfolds"}
  b: {prompt: "an origami frog jumps"}
  c: {prompt: "a paper boat floats"}
"""


def estimate(spark: Project) -> int:
    result = spark.run("plan", "--json")
    return int(json.loads(result.out)["summary"]["estimated_tokens"])


@pytest.mark.slow  # renders through the fake gateway
def test_a_plan_over_the_budget_is_refused_before_anything_is_sent(spark: Project, fake_api: FakeSparkAPI) -> None:
    total = estimate(spark)
    refused = spark.run("apply", "--auto-approve", "--max-tokens", str(total - 1))
    assert refused.code == 1
    assert f"estimated {total:,} tokens, over the budget of {total - 1:,} (max_tokens)" in refused.err
    assert "nothing was submitted" in refused.err
    assert fake_api.total_creates == 0
    spark.write(SPEC + "budget: {max_cost: 0.01}\n")
    refused = spark.run("apply", "--auto-approve")
    assert refused.code == 1 and "over the budget of 0.01 (max_cost)" in refused.err
    assert fake_api.total_creates == 0
    # The command line wins over the spec, field by field.
    spark.apply("--max-cost", "100", "--max-tokens", str(total))
    assert fake_api.total_creates == 3


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_apply_json_ends_with_a_done_event_when_the_budget_refuses(spark: Project, fake_api: FakeSparkAPI) -> None:
    total = estimate(spark)
    refused = spark.run("apply", "--auto-approve", "--json", "--max-tokens", str(total - 1))
    assert refused.code == 1 and "over the budget" in refused.err
    events = [json.loads(line) for line in refused.out.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["ok"] is False
    assert "over the budget" in events[-1]["error"] and events[-1]["completed"] == 0
    assert fake_api.total_creates == 0
    spark.write(SPEC.replace('prompt: "a paper boat floats"', 'prompt: "{{ undefined_name }}"'))
    invalid = spark.run("apply", "--auto-approve", "--json")
    (event,) = [json.loads(line) for line in invalid.out.splitlines()]
    assert event["ok"] is False and any("undefined_name" in d for d in event["diagnostics"]), event


def test_a_cost_budget_needs_a_price(spark: Project, fake_api: FakeSparkAPI) -> None:
    spark.write(SPEC.replace("  price_per_million_tokens: 10\n", ""))
    refused = spark.run("apply", "--auto-approve", "--max-cost", "5")
    assert refused.code == 1 and "price_per_million_tokens" in refused.err
    assert fake_api.total_creates == 0


@pytest.mark.slow  # renders through the fake gateway
def test_submissions_stop_when_reported_usage_reaches_the_budget(spark: Project, fake_api: FakeSparkAPI) -> None:
    total = estimate(spark)
    fake_api.usage = {"completion_tokens": total, "total_tokens": total}  # each render reports 3x its estimate
    spark.write(SPEC + f"budget: {{max_tokens: {total}}}\n")
    result = spark.run("apply", "--auto-approve")
    assert result.code == 1
    assert fake_api.total_creates == 1  # one at a time: the first one's usage stops the rest
    assert f"budget reached: renders reported {total:,} tokens of the {total:,} allowed (max_tokens)" in result.err
    assert result.err.count("skipped: budget reached") == 2
    assert len(spark.lock()["scenes"]) == 1  # what was paid for is kept


@pytest.mark.slow  # renders through the fake gateway
def test_running_renders_are_still_collected(spark: Project, fake_api: FakeSparkAPI) -> None:
    total = estimate(spark)
    fake_api.usage = {"completion_tokens": total, "total_tokens": total}
    spark.write(SPEC.replace("parallelism: 1", "parallelism: 2") + f"budget: {{max_tokens: {total}}}\n")
    result = spark.run("apply", "--auto-approve")
    assert result.code == 1
    assert fake_api.total_creates == 2  # both in flight when the first reported
    assert len(spark.lock()["scenes"]) == 2  # the second was collected, not abandoned
    assert result.err.count("skipped: budget reached") == 1


def test_a_bad_budget_is_a_validation_error_at_its_line(spark: Project) -> None:
    spark.write(SPEC + "budget: {max_tokens: -1, max_kost: 3}\n")
    result = spark.run("validate")
    assert result.code == 1
    assert "project.spark.yaml:12:" in result.err and "budget.max_tokens" in result.err
    assert "max_kost" in result.err


def test_a_budget_of_nan_is_refused_not_taken_as_no_budget(spark: Project, fake_api: FakeSparkAPI) -> None:
    # Every comparison with nan is false: taken as given, it would let any plan through.
    refused = spark.run("apply", "--auto-approve", "--max-cost", "nan")
    assert refused.code == 1 and "--max-cost" in refused.err and "nan is not a number" in refused.err
    spark.write(SPEC.replace("price_per_million_tokens: 10", "price_per_million_tokens: .nan")
                + "budget: {max_cost: .nan}\n")
    refused = spark.run("apply", "--auto-approve")
    assert refused.code == 1
    assert "project.spark.yaml:6:29: error: provider.price_per_million_tokens: nan is not a number" in refused.err
    assert "project.spark.yaml:12:20: error: budget.max_cost: nan is not a number" in refused.err
    assert fake_api.total_creates == 0


@pytest.mark.slow  # renders through the fake gateway
@pytest.mark.parametrize("usage", ["price", "reported"])
def test_submissions_stop_when_the_cost_reaches_max_cost(spark: Project, fake_api: FakeSparkAPI,
                                                         usage: str) -> None:
    total = estimate(spark)
    allowed = round(total / 1e6 * 10 * 1.5, 2)  # over the estimate, under what the first render reports
    if usage == "price":  # each render reports tokens, costed at the spec's price (10 a million)
        fake_api.usage = {"completion_tokens": 2 * total, "total_tokens": 2 * total}
        spent = 2 * total / 1e6 * 10
    else:  # the API reports what a render cost (and almost no tokens)
        fake_api.usage = {"completion_tokens": 1, "total_tokens": 1, "cost": str(allowed)}
        spent = allowed
    spark.write(SPEC + f"budget: {{max_cost: {allowed}}}\n")
    result = spark.run("apply", "--auto-approve")
    assert result.code == 1, result.err
    assert fake_api.total_creates == 1
    assert f"budget reached: renders cost {spent:,.2f} of the {allowed:,.2f} allowed (max_cost)" in result.err
    assert result.err.count("skipped: budget reached") == 2
    assert len(spark.lock()["scenes"]) == 1


@pytest.mark.slow  # four applies
def test_a_budget_of_zero_applies_only_what_costs_nothing(project: Project) -> None:
    local = """\
version: 1
provider: {type: local, price_per_million_tokens: 10}
defaults: {resolution: 480p, ratio: "16:9", frames: 29, seed: 9}
scenes:
  a: {prompt: "a paper crane unfolds"}
"""
    project.write(local)
    project.apply()
    (project.root / "renders/a.mp4").unlink()
    project.write(local + '  b: {prompt: "an origami frog jumps"}\n')
    for budget in (["--max-tokens", "0"], ["--max-cost", "0"]):
        refused = project.run("apply", "--auto-approve", *budget)
        assert refused.code == 1 and "nothing was submitted" in refused.err
        assert ("over the budget of 0 (max_tokens)" in refused.err or
                "over the budget of 0.00 (max_cost)" in refused.err), refused.err
    assert not (project.root / "renders/a.mp4").exists()
    project.write(local + "budget: {max_tokens: 0, max_cost: 0}\n")  # a restore is free
    project.apply()
    assert (project.root / "renders/a.mp4").exists()
