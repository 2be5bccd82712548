"""The original plan's cost summary for a plan, before anything runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import run_cli

from tunegate.costs import hourly_usd, summarize
from tunegate.plan import load_plan
from tunegate.state import ArmRecord, StageRecord
from tunegate.train.qlora import TrainResult


def _without_stages(plan_file: Path, extra: str = "") -> Path:
    text = plan_file.read_text()
    text = re.sub(r"^stages:\n(?:  .*\n|\n|    .*\n)*", "", text, flags=re.M)
    for key in re.findall(r"^(\w+):", extra, flags=re.M):  # replaced, not given twice
        text = re.sub(rf"^{key}:.*\n", "", text, flags=re.M)
    plan_file.write_text(text + extra)
    return plan_file


def test_the_seed_ladder_costs_what_the_seed_says(example: Path) -> None:
    summary = summarize(load_plan(_without_stages(example)))
    assert summary.validation_usd == pytest.approx(15.0)  # $0 + $0 + $3 + $12
    assert summary.production_usd == pytest.approx(242.0)
    assert summary.usd_share == pytest.approx(15 / 242)  # the original plan's "6% of full budget"
    assert summary.validation_hours == pytest.approx(5 / 60 + 0.5 + 2 + 5)
    assert summary.hours_share == pytest.approx((5 / 60 + 7.5) / 42)  # the original plan's "19%"


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


def _record(seconds: float, train_seconds: list[float]) -> StageRecord:
    def trained(seconds: float) -> TrainResult:
        return TrainResult("adapter", 10, [], None, None, 0, 0, 1000, seconds, None, seconds)

    return StageRecord(
        index=2,
        hash="h",
        seconds=seconds,
        arms={f"a{i}": ArmRecord(train=trained(t)) for i, t in enumerate(train_seconds)},
    )


def test_forecast_scales_measured_seconds_per_sample(example: Path) -> None:
    from tunegate.forecast import forecast, samples_per_arm

    plan = load_plan(example)
    small, pilot = plan.stages[2], plan.stages[3]
    per_arm = samples_per_arm(plan, small, 40)  # 40 items, batch 4, 30 epochs
    assert per_arm == 10 * 30 * 4
    # Arms took 60 s and 80 s of training, the stage 200 s in all: 60 s outside training.
    measured = [(_record(200, [60, 80]), per_arm, 4)]
    f = forecast(plan, pilot, 84, measured)
    assert f is not None
    samples = samples_per_arm(plan, pilot, 84) * 2
    assert f.samples == samples
    overhead = 200 - 140
    assert f.hours * 3600 == pytest.approx(70 / per_arm * samples + overhead)
    assert f.low_hours * 3600 == pytest.approx(60 / per_arm * samples + overhead)
    assert f.high_hours * 3600 == pytest.approx(80 / per_arm * samples + overhead)
    # A stage at another batch size does not set the rate when one at the target's exists.
    micro = (_record(30, [1, 1]), 10, 1)
    assert forecast(plan, pilot, 84, [micro, *measured]) == f
    assert "none at batch 4" in forecast(plan, pilot, 84, [micro]).basis  # type: ignore[union-attr]
    assert forecast(plan, pilot, 84, []) is None


def test_a_stage_over_budget_does_not_start(example: Path) -> None:
    # $100 an hour: the micro stage's estimate ($1) fits $1.20, and what it measures forecasts
    # the small stage at several dollars (a bracket from batch 1; its point decides).
    text = example.read_text()
    text = text.replace("cost: {gpu_usd_per_hour: 0}", "cost: {gpu_usd_per_hour: 100}")
    text = text.replace("budget: {hours: 1, approved: true}", "budget: {usd: 1.2}")
    example.write_text(text)
    result = run_cli("run", str(example), "--until", "3")
    assert result.returncode == 1
    out = " ".join(result.stdout.split())
    assert "forecast stage 2 (small)" in out
    assert "Stage 2 (small) not started, over budget:" in out
    state = (example.parent / "runs" / "metadata-experiment" / "state.json").read_text()
    small = json.loads(state)["stages"]["small"]
    assert small["verdict"] == "FAIL" and small["gates"][0]["name"] == "budget"
    assert "arms" not in small or not small["arms"]  # nothing trained
    # The measured stage's actuals and the forecasts are in MLflow too.
    from mlflow.tracking import MlflowClient

    runs = json.loads(state)
    client = MlflowClient(f"sqlite:///{example.parent / 'runs' / 'mlflow.db'}")
    micro = client.get_run(runs["stages"]["micro"]["mlflow_run"]).data.metrics
    assert micro["actual.wall_hours"] > 0 and "actual.tokens_trained" in micro
    parent = client.get_run(runs["mlflow_parent"]).data.metrics
    assert parent["forecast.small.hours"] > 0


def test_a_stage_measured_at_another_batch_brackets_the_forecast(example: Path) -> None:
    """Batch 1 measured, batch 4 forecast: per-sample time between the measured rate (batching
    gains nothing) and a quarter of it (batching is free), the point their geometric mean."""
    from tunegate.forecast import forecast, samples_per_arm

    plan = load_plan(example)
    pilot = plan.stages[3]
    micro = (_record(30, [10, 10]), 10, 1)  # 1 s per sample at batch 1; 10 s outside training
    f = forecast(plan, pilot, 84, [micro])
    assert f is not None and not f.same_batch
    samples = samples_per_arm(plan, pilot, 84) * 2
    assert f.high_hours * 3600 == pytest.approx(1.0 * samples + 10)
    assert f.low_hours * 3600 == pytest.approx(0.25 * samples + 10)
    assert f.hours * 3600 == pytest.approx(0.5 * samples + 10)


def test_forecast_scales_by_tokens_and_forecasts_generation_from_its_work(example: Path) -> None:
    """Samples of another length cost another time: with the stage's tokens per sample known,
    training scales by tokens. Generation is forecast apart, between the measured rate per batch
    step (rows decode side by side for free) and per row step (each row costs its own)."""
    from tunegate.forecast import StageShape, forecast, samples_per_arm
    from tunegate.state import GenerationRecord

    plan = load_plan(example)
    small, pilot = plan.stages[2], plan.stages[3]
    per_arm = samples_per_arm(plan, small, 40)
    record = _record(300, [60, 80])  # 1000 tokens trained per arm (see _record)
    for arm in record.arms.values():  # 20 s generating, over 10 rows of 100 steps, one batch
        arm.generation = GenerationRecord(seconds=20, row_steps=1000, batch_steps=100)
    shape = StageShape(tokens_per_sample=50.0, generation=(4000, 200))
    f = forecast(plan, pilot, 84, [(record, per_arm, 4)], shape)
    assert f is not None and "per token" in f.basis and "generation" in f.basis
    tokens = samples_per_arm(plan, pilot, 84) * 50.0
    overhead = 300 - 140 - 40  # what is neither training nor generation
    low_gen, high_gen = 20 / 100 * 200, 20 / 1000 * 4000  # per batch step, per row step
    assert f.low_hours * 3600 == pytest.approx((60 / 1000 * tokens + low_gen) * 2 + overhead)
    assert f.high_hours * 3600 == pytest.approx((80 / 1000 * tokens + high_gen) * 2 + overhead)
    point_gen = (low_gen * high_gen) ** 0.5
    assert f.hours * 3600 == pytest.approx((70 / 1000 * tokens + point_gen) * 2 + overhead)


def test_status_shows_the_forecast_of_the_stages_ahead(micro_climb: Path) -> None:
    result = run_cli("status", "--plan", str(micro_climb), cwd=micro_climb.parent)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    for i, name in ((2, "small"), (3, "pilot"), (4, "production")):
        assert f"forecast stage {i} ({name}), after micro:" in out
    assert "forecast stage 1" not in out  # measured, not forecast
