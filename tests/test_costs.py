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


def _record(seconds: float, train_seconds: list[float], device: str = "cpu") -> StageRecord:
    def trained(seconds: float) -> TrainResult:
        return TrainResult(
            "adapter", 10, [], None, None, 0, 0, 1000, seconds, None, seconds, device=device
        )

    return StageRecord(
        index=2,
        hash="h",
        seconds=seconds,
        arms={f"a{i}": ArmRecord(train=trained(t)) for i, t in enumerate(train_seconds)},
    )


def test_forecast_scales_measured_seconds_per_sample(example: Path) -> None:
    from tunegate.forecast import Measured, forecast, samples_per_arm

    plan = load_plan(example)
    small, pilot = plan.stages[2], plan.stages[3]
    per_arm = samples_per_arm(plan, small, 40)  # 40 items, batch 4, 30 epochs
    assert per_arm == 10 * 30 * 4
    # Arms took 60 s and 80 s of training, the stage 200 s in all: 60 s outside training.
    measured = [Measured(_record(200, [60, 80]), per_arm, 4)]
    f = forecast(plan, pilot, 84, measured)
    assert f is not None
    samples = samples_per_arm(plan, pilot, 84) * 2
    assert f.samples == samples
    overhead = 200 - 140
    assert f.hours * 3600 == pytest.approx(70 / per_arm * samples + overhead)
    assert f.low_hours * 3600 == pytest.approx(60 / per_arm * samples + overhead)
    assert f.high_hours * 3600 == pytest.approx(80 / per_arm * samples + overhead)
    # A stage at another batch size does not set the rate when one at the target's exists.
    micro = Measured(_record(30, [1, 1]), 10, 1)
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
    """On an accelerator, batch 1 measured, batch 4 forecast: per-sample time between the
    measured rate (batching gains nothing) and a quarter of it (batching is free), the point
    their geometric mean."""
    from tunegate.forecast import Measured, forecast, samples_per_arm

    plan = load_plan(example)
    pilot = plan.stages[3]
    # 1 s per sample at batch 1; 10 s outside training.
    micro = Measured(_record(30, [10, 10], device="cuda:0 (NVIDIA H100)"), 10, 1)
    f = forecast(plan, pilot, 84, [micro])
    assert f is not None and not f.same_batch
    samples = samples_per_arm(plan, pilot, 84) * 2
    assert f.high_hours * 3600 == pytest.approx(1.0 * samples + 10)
    assert f.low_hours * 3600 == pytest.approx(0.25 * samples + 10)
    assert f.hours * 3600 == pytest.approx(0.5 * samples + 10)


def test_on_a_cpu_another_batch_is_forecast_at_the_slow_end(example: Path) -> None:
    """On a CPU the cores are busy at batch 1 already: a batch-4 stage costs about its tokens at
    the measured rate, padding to each batch's longest row included, and each decoded row about
    its own steps. The bracket down to perfect batching stays; its slow end is the point."""
    from tunegate.forecast import Measured, StageShape, forecast, samples_per_arm
    from tunegate.state import GenerationRecord

    plan = load_plan(example)
    pilot = plan.stages[3]
    micro = _record(40, [10, 12])  # 1000 tokens each at batch 1: 10 and 12 ms a token
    for arm, seconds in zip(micro.arms.values(), (1.0, 1.5), strict=True):
        arm.generation = GenerationRecord(seconds=seconds, row_steps=100, batch_steps=100)
    shape = StageShape(tokens_per_sample=50.0, padding=1.5, generation=(4000, 200))
    f = forecast(plan, pilot, 84, [Measured(micro, 10, 1)], shape)
    assert f is not None and not f.same_batch  # the budget guard reads its point
    assert "a CPU: little to gain from batching" in f.basis
    tokens = samples_per_arm(plan, pilot, 84) * 50.0 * 1.5
    overhead = 40 - 22 - 2.5
    assert f.hours * 3600 == pytest.approx((0.011 * tokens + 50) * 2 + overhead)
    assert f.low_hours * 3600 == pytest.approx((0.0025 * tokens + 2) * 2 + overhead)
    assert f.high_hours * 3600 == pytest.approx((0.012 * tokens + 60) * 2 + overhead)


def test_expected_padding_is_the_mean_longest_row_of_a_random_batch() -> None:
    import itertools
    import statistics

    from tunegate.forecast import expected_padding

    lengths = [40, 90, 100, 180, 250, 300, 700]
    for batch in (2, 3, 4):
        longest = [max(b) for b in itertools.combinations(lengths, batch)]
        want = statistics.fmean(longest) / statistics.fmean(lengths)
        assert expected_padding(lengths, batch) == pytest.approx(want)
    assert expected_padding(lengths, 1) == 1.0
    assert expected_padding(lengths, 10) == pytest.approx(700 / statistics.fmean(lengths))
    assert expected_padding([], 4) == 1.0


def test_forecast_scales_by_tokens_and_forecasts_generation_from_its_work(example: Path) -> None:
    """Samples of another length cost another time: with the stage's tokens per sample known,
    training scales by tokens. Generation is forecast apart, between the measured rate per batch
    step (rows decode side by side for free) and per row step (each row costs its own)."""
    from tunegate.forecast import Measured, StageShape, forecast, samples_per_arm
    from tunegate.state import GenerationRecord

    plan = load_plan(example)
    small, pilot = plan.stages[2], plan.stages[3]
    per_arm = samples_per_arm(plan, small, 40)
    record = _record(300, [60, 80], device="cuda:0")  # 1000 tokens trained per arm (see _record)
    for arm in record.arms.values():  # 20 s generating, over 10 rows of 100 steps, one batch
        arm.generation = GenerationRecord(seconds=20, row_steps=1000, batch_steps=100)
    shape = StageShape(tokens_per_sample=50.0, generation=(4000, 200))
    f = forecast(plan, pilot, 84, [Measured(record, per_arm, 4)], shape)
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


def test_a_step_costs_a_fixed_part_and_a_part_per_token() -> None:
    """Fitted to a run's recorded steps: a tiny model's step is mostly fixed cost, a real
    model's mostly tokens; a fit that cannot tell them apart falls back to one of the two."""
    from tunegate.forecast import StepCost, step_cost

    def run(seconds: list[float], tokens: list[int]) -> TrainResult:
        return TrainResult(
            "adapter", 10, [], None, None, 0, 0, sum(tokens), sum(seconds), None, sum(seconds),
            step_seconds=seconds, step_tokens=tokens,
        )  # fmt: skip

    tokens = [40, 55, 70, 48, 62, 35]
    fitted = step_cost(run([0.05 + 0.002 * t for t in tokens], tokens))
    assert fitted is not None
    assert fitted.fixed == pytest.approx(0.05) and fitted.per_token == pytest.approx(0.002)
    # Padding: the batches computed more tokens than they trained.
    padded = step_cost(run([0.05 + 0.002 * t * 1.5 for t in tokens], tokens), padding=1.5)
    assert padded is not None and padded.per_token == pytest.approx(0.002)
    assert step_cost(run([1.0, 1.0, 1.0], [50, 50, 50])) == StepCost(0.0, 1.0 / 50)
    noisy = step_cost(run([0.03, 0.01, 0.02], [10, 60, 40]))  # longer steps took less time
    assert noisy == StepCost(pytest.approx(0.02), 0.0)
    assert step_cost(run([1.0, 2.0], [10, 20])) is None  # too few steps to fit


def test_another_batch_is_forecast_per_step_and_token_when_steps_were_recorded(
    example: Path,
) -> None:
    from tunegate.forecast import Measured, StageShape, forecast, samples_per_arm

    plan = load_plan(example)
    pilot = plan.stages[3]
    micro = _record(40, [10, 10])
    for train in micro.trains:  # 9 steps of 0.5 s fixed + 10 ms a token; 1.9 s before them
        train.step_tokens = [30, 60, 45, 50, 40, 55, 35, 65, 70]
        train.step_seconds = [0.5 + 0.01 * t for t in train.step_tokens]
        train.train_seconds = 1.9 + sum(train.step_seconds)
    f = forecast(plan, pilot, 84, [Measured(micro, 10, 1)], StageShape(tokens_per_sample=50.0))
    assert f is not None and "per step and token" in f.basis
    samples = samples_per_arm(plan, pilot, 84)
    steps = samples / 4
    run = 1.9 + steps * 0.5 + 0.01 * samples * 50.0
    overhead = 40 - 2 * micro.trains[0].train_seconds
    assert f.hours * 3600 == pytest.approx(2 * run + overhead)


def test_arms_on_two_towers_train_at_once_and_each_tower_is_paid(example: Path) -> None:
    from tunegate.forecast import Measured, forecast, samples_per_arm

    plan = load_plan(example)
    small, pilot = plan.stages[2], plan.stages[3]
    per_arm = samples_per_arm(plan, small, 40)
    # Measured in sequence: 60 s + 80 s of training in a 200 s stage.
    measured = [Measured(_record(200, [60, 80]), per_arm, 4)]
    one = forecast(plan, pilot, 84, measured)
    towers = {"kind": "docker", "host": "ssh://tower-a", "hosts": ["ssh://tower-b"]}
    two_plan = plan.model_copy(update={"executor": plan.executor.model_validate(towers)})
    assert two_plan.arms_at_once(pilot) == 2
    two = forecast(two_plan, pilot, 84, measured)
    assert one is not None and two is not None
    samples = samples_per_arm(plan, pilot, 84)
    overhead = 200 - 140
    # Both arms' training in one wave, not two; two devices held for the stage's wall time.
    assert one.hours * 3600 == pytest.approx(70 / per_arm * samples * 2 + overhead)
    assert two.hours * 3600 == pytest.approx(70 / per_arm * samples + overhead)
    assert two.usd == pytest.approx(two.hours * hourly_usd(plan) * 2)
    assert "2 arms at once" in two.basis and "at once" not in one.basis
    # A stage measured with its arms at once: their training overlapped (140 s in 70 s).
    overlapped = _record(130, [60, 80])
    overlapped.arms_at_once = 2
    again = forecast(two_plan, pilot, 84, [Measured(overlapped, per_arm, 4)])
    assert again is not None
    assert again.hours * 3600 == pytest.approx(70 / per_arm * samples + 130 - 70)
