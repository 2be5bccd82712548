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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class StageShape:
    """What a stage will do per training run, beyond its samples: the tokens of an average
    training sample (as the model sees it, chat template included) and its generation's work
    (`generate.generation_steps`: row steps, batch steps). None: not known, per-sample rates and
    the measured time outside training are used instead."""

    tokens_per_sample: float | None = None
    generation: tuple[int, int] | None = None


def _span(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _generation_seconds(
    used: list[tuple[StageRecord, int, int]], target: tuple[int, int]
) -> tuple[float, float, float] | None:
    """(point, low, high) seconds of one training run's generation, from the measured stages'
    generation records. Decoding a batch costs between one row's time (rows run side by side for
    free) and its rows' time (each row costs its own): per measured stage, the target's row steps
    at the measured rate per row step is the high end, its batch steps at the rate per batch step
    the low end, and the point their geometric mean."""
    rows, lows, highs = [], [], []
    for record, _, _ in used:
        gens = [a.generation for a in record.arms.values() if a.generation is not None]
        seconds = sum(g.seconds for g in gens)
        if not gens or not seconds:
            continue
        high = seconds / sum(g.row_steps for g in gens) * target[0]
        low = seconds / sum(g.batch_steps for g in gens) * target[1]
        low, high = sorted((low, high))
        rows.append(math.sqrt(low * high))
        lows.append(low)
        highs.append(high)
    if not rows:
        return None
    return statistics.median(rows), min(lows), max(highs)


def forecast(
    plan: Plan,
    stage: Stage,
    train_items: int,
    measured: list[tuple[StageRecord, int, int]],
    shape: StageShape = StageShape(),
) -> Forecast | None:
    """`stage`'s time and cost from the training stages measured so far: `measured` holds (stage
    record, samples per arm, effective batch) for each. Training time scales by the tokens it
    will train when `shape` knows them (samples of another length cost another time), else by
    samples. Seconds per sample or token depend on the batch on an accelerator (the original
    plan's micro stage trains at batch 1), so stages at the target's batch are used when there
    are any. Generation is forecast from the
    measured generations when `shape` knows the stage's. None until one has trained."""
    batch = effective_batch(plan, stage)
    same = [m for m in measured if m[2] == batch]
    used = same or measured
    per_token = shape.tokens_per_sample is not None and all(
        t.train_tokens for m in used for t in m[0].trains
    )
    generation = (
        _generation_seconds(measured, shape.generation) if shape.generation is not None else None
    )
    rates, lows, highs, overheads = [], [], [], []
    for record, per_arm, measured_batch in used:
        trains = record.trains
        # Per-sample time at the target batch lies between the measured rate and the rate with
        # perfect batching (see the module docstring); equal when the batches are the same.
        amortized = measured_batch / batch
        for t in trains:
            done = t.train_tokens if per_token else per_arm
            if done and t.train_seconds:
                rate = t.train_seconds / done
                ends = sorted((rate, rate * amortized))
                lows.append(ends[0])
                highs.append(ends[1])
                rates.append(rate * math.sqrt(amortized))
        outside = sum(t.train_seconds for t in trains)
        if generation is not None:  # forecast on its own: only the rest is overhead
            outside += sum(a.generation.seconds for a in record.arms.values() if a.generation)
        if record.seconds:
            # Loading, generating and scoring happen once per seed: per seed, then × seeds.
            overheads.append(max(0.0, record.seconds - outside) / _seeds(record))
    if not rates:
        return None
    arms = len(stage.arms or plan.arms) * stage.seeds
    samples = samples_per_arm(plan, stage, train_items)
    work = samples * (shape.tokens_per_sample or 1.0) if per_token else samples
    overhead = (statistics.median(overheads) if overheads else 0.0) * stage.seeds
    gen_point, gen_low, gen_high = generation or (0.0, 0.0, 0.0)

    def hours(rate: float, gen: float) -> float:
        return (rate * work * arms + gen * arms + overhead) / 3600

    point = hours(statistics.median(rates), gen_point)
    low, high = hours(min(lows), gen_low), hours(max(highs), gen_high)
    price = hourly_usd(plan)
    basis = f"{len(rates)} measured arm(s) over {len(used)} stage(s)"
    basis += ", per token" if per_token else ""
    basis += "" if same else f", none at batch {batch}"
    basis += ", generation from its measured work" if generation is not None else ""
    return Forecast(
        stage=stage.name,
        hours=point,
        low_hours=low,
        high_hours=high,
        usd=point * price,
        low_usd=low * price,
        high_usd=high * price,
        samples=samples * arms,
        basis=basis,
        estimate_hours=stage.estimate.hours * stage.seeds,  # the estimate is per seed
        estimate_usd=stage.estimate.usd * stage.seeds,
        same_batch=bool(same),
    )
