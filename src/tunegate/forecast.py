"""Measured, then forecast: what each stage actually took, and what the rest will take.

A finished stage records its actual figures (`actual`): wall hours, device hours (the arms' training
time on the accelerator), samples and tokens trained, tokens per second, judge calls and dollars,
and its cost at the plan's hourly price. From the training stages measured so far, `forecast`
predicts a later stage from its planned data size: seconds per sample trained (one rate per measured
training run) × the samples the stage will train (× its seeds), plus the measured time a stage
spends outside training (loading, generation, scoring; per seed). The interval spans the slowest
and fastest measured rates, so two measured stages (the original plan's 2 and 3) give an honest
spread; the plan's own estimate is shown next to it.

A stage measured at another batch size (the original plan's micro stage trains at batch 1) brackets
the rate instead: batching never makes a sample slower (the measured rate is the slow end) and at
best costs nothing per extra row (the rate × measured batch / target batch is the fast end). The
point is their geometric mean, and the forecast says it rests on another batch size.
"""

from __future__ import annotations

import math
import statistics

from tunegate.costs import hourly_usd
from tunegate.plan import Plan, Stage
from tunegate.state import Actual, EvaluationCost, Forecast, StageRecord


def budget_need(forecast: Forecast) -> tuple[float, float, str]:
    """(hours, dollars, basis) a budget is checked against: the forecast's upper end; for a
    bracket from another batch size its point, since that upper end assumes batching gains
    nothing and would stop stages that fit. Used by the budget guard and the pre-flight."""
    if forecast.same_batch:
        return forecast.high_hours, forecast.high_usd, "forecast (upper)"
    return forecast.hours, forecast.usd, "forecast (from another batch)"


def samples_per_arm(plan: Plan, stage: Stage, train_items: int) -> int:
    """Samples one arm trains in `stage`: max_steps × effective batch, else items × epochs."""
    t = plan.stage_training(stage)
    batch = t.batch_size * t.gradient_accumulation_steps
    if t.max_steps:
        return t.max_steps * batch
    steps_per_epoch = math.ceil(train_items / batch) if train_items else 0
    return math.ceil(steps_per_epoch * t.epochs) * batch  # as the Trainer rounds its steps


def actual(plan: Plan, stage: Stage, record: StageRecord, train_items: int) -> Actual:
    """A finished stage's figures, from its state record."""
    trains = record.trains
    train_seconds = sum(t.train_seconds for t in trains)
    tokens = sum(t.train_tokens for t in trains)
    cost = record.evaluation_cost or EvaluationCost(seed_calls=0, seed_usd=0.0)
    wall_hours = (record.seconds or 0.0) / 3600
    device_hours = train_seconds / 3600
    return Actual(
        stage=stage.name,
        wall_hours=wall_hours,
        device_hours=device_hours,
        device=trains[0].device if trains else "-",
        samples_trained=samples_per_arm(plan, stage, train_items) * len(trains),
        tokens_trained=tokens,
        tokens_per_second=tokens / train_seconds if train_seconds else None,
        judge_calls=cost.judge_calls,
        judge_usd=cost.judge_usd,
        # The device is held for the whole stage, not only while it trains.
        usd=wall_hours * hourly_usd(plan) + cost.judge_usd,
    )


def _seeds(record: StageRecord) -> int:
    """How many seeds the stage trained each arm with (1 unless it had several)."""
    return len({arm.seed for arm in record.arms.values()}) or 1


def effective_batch(plan: Plan, stage: Stage) -> int:
    t = plan.stage_training(stage)
    return t.batch_size * t.gradient_accumulation_steps


def forecast(
    plan: Plan,
    stage: Stage,
    train_items: int,
    measured: list[tuple[StageRecord, int, int]],
) -> Forecast | None:
    """`stage`'s time and cost from the training stages measured so far: `measured` holds (stage
    record, samples per arm, effective batch) for each. Seconds per sample depend on the batch (the
    original plan's micro stage trains at batch 1), so stages at the target's batch are used when
    there are any. None until one has trained."""
    batch = effective_batch(plan, stage)
    same = [m for m in measured if m[2] == batch]
    used = same or measured
    rates, lows, highs, overheads = [], [], [], []
    for record, per_arm, measured_batch in used:
        trains = record.trains
        # Per-sample time at the target batch lies between the measured rate and the rate with
        # perfect batching (see the module docstring); equal when the batches are the same.
        amortized = measured_batch / batch
        for t in trains:
            if per_arm and t.train_seconds:
                rate = t.train_seconds / per_arm
                ends = sorted((rate, rate * amortized))
                lows.append(ends[0])
                highs.append(ends[1])
                rates.append(rate * math.sqrt(amortized))
        train_total = sum(t.train_seconds for t in trains)
        if record.seconds:
            # Loading, generating and scoring happen once per seed: per seed, then × seeds.
            overheads.append(max(0.0, record.seconds - train_total) / _seeds(record))
    if not rates:
        return None
    arms = len(stage.arms or plan.arms) * stage.seeds
    samples = samples_per_arm(plan, stage, train_items)
    overhead = (statistics.median(overheads) if overheads else 0.0) * stage.seeds

    def hours(rate: float) -> float:
        return (rate * samples * arms + overhead) / 3600

    point, low, high = hours(statistics.median(rates)), hours(min(lows)), hours(max(highs))
    price = hourly_usd(plan)
    return Forecast(
        stage=stage.name,
        hours=point,
        low_hours=low,
        high_hours=high,
        usd=point * price,
        low_usd=low * price,
        high_usd=high * price,
        samples=samples * arms,
        basis=f"{len(rates)} measured arm(s) over {len(used)} stage(s)"
        + ("" if same else f", none at batch {batch}"),
        estimate_hours=stage.estimate.hours * stage.seeds,  # the estimate is per seed
        estimate_usd=stage.estimate.usd * stage.seeds,
        same_batch=bool(same),
    )
