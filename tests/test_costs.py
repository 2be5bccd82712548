"""The seed's cost summary for a plan, before anything runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import run_cli

from tunegate.costs import hourly_usd, summarize
from tunegate.plan import load_plan


def _without_stages(plan_file: Path, extra: str = "") -> Path:
    text = plan_file.read_text()
    text = re.sub(r"^stages:\n(?:  .*\n|\n|    .*\n)*", "", text, flags=re.M)
    plan_file.write_text(text + extra)
    return plan_file


def test_the_seed_ladder_costs_what_the_seed_says(example: Path) -> None:
    summary = summarize(load_plan(_without_stages(example)))
    assert summary.validation_usd == pytest.approx(15.0)  # $0 + $0 + $3 + $12
    assert summary.production_usd == pytest.approx(242.0)
    assert summary.usd_share == pytest.approx(15 / 242)  # the seed's "6% of full budget"
    assert summary.validation_hours == pytest.approx(5 / 60 + 0.5 + 2 + 5)
    assert summary.hours_share == pytest.approx((5 / 60 + 7.5) / 42)  # the seed's "19%"


def test_the_cost_model_prices_stages_without_an_estimate(example: Path) -> None:
    extra = "cost: {gpu_usd_per_hour: 2.5, gpu_watts: 400, usd_per_kwh: 0.25}\n"
    plan = load_plan(_without_stages(example, extra))
    assert hourly_usd(plan) == pytest.approx(2.5 + 0.4 * 0.25)
    plan.stages[2].estimate.usd = 0  # no stated price: the model prices its hours
    costs = summarize(plan).stages
    assert costs[2].usd == pytest.approx(2 * 2.6) and costs[2].source == "cost model"
    assert costs[3].usd == 12 and costs[3].source == "plan estimate"


def test_plan_prints_the_cost_summary(example: Path) -> None:
    result = run_cli("plan", str(_without_stages(example)))
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "Cost Summary by Stage" in out
    assert "Total validation cost: $15.00 (6% of the last stage cost)" in out
