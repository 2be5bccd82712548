"""Measured, then forecast: what each stage actually took, and what the rest will take.

A finished stage records its actual figures (`actual`): wall hours, device hours (the arms' training
time on the accelerator), samples and tokens trained, tokens per second, judge calls and dollars,
and its cost at the plan's hourly price. From the training stages measured so far, `forecast`
predicts a later stage from its planned data size: seconds per sample trained (one rate per measured
training run) × the samples the stage will train (× its seeds), plus the measured time a stage
spends outside training (loading, generation, scoring; per seed). The interval spans the slowest
and fastest measured rates, so two measured stages (the original plan's 2 and 3) give an honest
spread; the plan's own estimate is shown next to it.

On an accelerator, a stage measured at another batch size (the original plan's micro stage trains
at batch 1) brackets the rate instead: batching never makes a sample slower (the measured rate is
the slow end) and at best costs nothing per extra row (the rate × measured batch / target batch is
the fast end). The point is their geometric mean, and the forecast says it rests on another batch
size. On a CPU the cores are busy at batch 1 already: a batch costs about its tokens, padding to
its longest row included (`expected_padding`), and decoding costs each row about its own steps,
so the point is the bracket's slow end. Each measured run's recorded steps split the rate into a
fixed cost per step and a cost per token (`step_cost`), so that a tiny model, whose step is mostly
fixed cost, is not forecast as if its tokens cost it all.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from tunegate.costs import hourly_usd
from tunegate.plan import Plan, Stage
from tunegate.state import Actual, EvaluationCost, Forecast, StageRecord
from tunegate.train.qlora import TrainResult


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
        # The device is held for the whole stage, not only while it trains; arms trained at
        # the same time each held one.
        usd=wall_hours * hourly_usd(plan) * record.arms_at_once + cost.judge_usd,
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
    training sample (as the model sees it, chat template included), what padding adds to them
    (`padding`: tokens a sample costs in its batch over its own tokens, `expected_padding`), and
    its generation's work (`generate.generation_steps`: row steps, batch steps). None: not known,
    per-sample rates and the measured time outside training are used instead."""

    tokens_per_sample: float | None = None
    padding: float = 1.0
    generation: tuple[int, int] | None = None


@dataclass(frozen=True)
class Measured:
    """A training stage measured: its record, the samples each arm trained, its effective batch,
    and its padding (as `StageShape.padding`)."""

    record: StageRecord
    samples_per_arm: int
    batch: int
    padding: float = 1.0


def expected_padding(lengths: list[int], batch: int) -> float:
    """Tokens a sample costs in a batch padded to its longest row, over the sample's own tokens:
    E[longest of a random batch] / mean length, exactly, for batches drawn at random (the
    Trainer's sampler). 1 at batch 1."""
    n = len(lengths)
    if n == 0 or batch <= 1:
        return 1.0
    if batch >= n:
        return max(lengths) / statistics.fmean(lengths)
    ordered = sorted(lengths)
    # The k-th shortest (1-based) is a batch's longest when the batch holds it and b - 1 of the
    # k - 1 shorter ones.
    batches = math.comb(n, batch)
    longest = sum(
        length * math.comb(k - 1, batch - 1) for k, length in enumerate(ordered, 1) if k >= batch
    )
    return longest / batches / statistics.fmean(lengths)


@dataclass(frozen=True)
class StepCost:
    """What a training step cost in one measured run: `fixed` seconds whatever its size (the
    optimizer, the Trainer's bookkeeping) plus `per_token` seconds for each token it computed."""

    fixed: float
    per_token: float


def step_cost(train: TrainResult, padding: float = 1.0) -> StepCost | None:
    """A run's step cost, fitted (least squares, neither part negative) to its recorded steps;
    their tokens × `padding` is what the batches computed. None with fewer than 3 steps."""
    seconds = train.step_seconds
    tokens = [t * padding for t in train.step_tokens]
    if len(seconds) < 3 or len(tokens) != len(seconds) or not sum(tokens):
        return None
    proportional = StepCost(0.0, sum(seconds) / sum(tokens))
    try:
        per_token, fixed = statistics.linear_regression(tokens, seconds)
    except statistics.StatisticsError:  # every step the same size: nothing tells them apart
        return proportional
    if per_token < 0:  # the size did not show through the noise: all of it is fixed
        return StepCost(statistics.fmean(seconds), 0.0)
    return StepCost(fixed, per_token) if fixed >= 0 else proportional


def _on_cpu(used: list[Measured]) -> bool:
    """Every measured run trained on a CPU. There the cores are busy already at batch 1: a batch
    costs about its (padded) tokens, and a decoded batch about its rows, so a forecast from
    another batch takes the slow end of its bracket as its point (on the real-model example,
    batch 4 cost 15-20 % less per padded token than batch 1; perfect batching would be 75 %)."""
    return all(t.device == "cpu" for m in used for t in m.record.trains)


def _generation_seconds(
    used: list[Measured], target: tuple[int, int], cpu: bool
) -> tuple[float, float, float] | None:
    """(point, low, high) seconds of one training run's generation, from the measured stages'
    generation records. On an accelerator decoding a batch costs between one row's time (rows
    run side by side for free) and its rows' time (each row costs its own): per measured stage,
    the target's row steps at the measured rate per row step is the high end, its batch steps at
    the rate per batch step the low end, and the point their geometric mean. On a CPU each row
    costs its own: the target's row steps at each measured arm's rate per row step."""
    rows, lows, highs = [], [], []
    for m in used:
        for g in (a.generation for a in m.record.arms.values() if a.generation is not None):
            if not (g.seconds and g.row_steps and g.batch_steps):
                continue
            high = g.seconds / g.row_steps * target[0]
            low = g.seconds / g.batch_steps * target[1]
            low, high = sorted((low, high))
            rows.append(high if cpu else math.sqrt(low * high))
            lows.append(low)
            highs.append(high)
    if not rows:
        return None
    return statistics.median(rows), min(lows), max(highs)


def forecast(
    plan: Plan,
    stage: Stage,
    train_items: int,
    measured: list[Measured],
    shape: StageShape = StageShape(),
) -> Forecast | None:
    """`stage`'s time and cost from the training stages measured so far. Training time scales by
    the tokens it will train, padding included, when `shape` knows them (samples of another
    length cost another time), else by samples. On an accelerator seconds per sample or token
    depend on the batch (the original plan's micro stage trains at batch 1), so stages at the
    target's batch are used when there are any, else the rate is bracketed (module docstring),
    the point at the bracket's slow end on a CPU (`_on_cpu`). Generation is forecast from the
    measured generations when `shape` knows the stage's. None until one has trained."""
    batch = effective_batch(plan, stage)
    same = [m for m in measured if m.batch == batch]
    used = same or measured
    cpu = bool(used) and _on_cpu(used)
    per_token = shape.tokens_per_sample is not None and all(
        t.train_tokens for m in used for t in m.record.trains
    )
    generation = (
        _generation_seconds(used, shape.generation, cpu) if shape.generation is not None else None
    )
    arms = len(stage.arms or plan.arms) * stage.seeds
    samples = samples_per_arm(plan, stage, train_items)
    work = samples * (shape.tokens_per_sample or 1.0) * shape.padding if per_token else samples
    # Measured at another batch, with its steps recorded: each step's fixed cost and per-token
    # cost (`step_cost`) at the target's steps and tokens per step. A tiny model's step is mostly
    # fixed cost, a real model's mostly tokens: a rate per token alone would be wrong for one.
    by_steps = (
        per_token
        and not same
        and all(step_cost(t, m.padding) is not None for m in used for t in m.record.trains)
    )
    runs, lows, highs, overheads = [], [], [], []  # seconds of one training run of the target
    for m in used:
        trains = m.record.trains
        # Per-sample time at the target batch lies between the measured rate and the rate with
        # perfect batching (see the module docstring); equal at the same batch.
        amortized = 1.0 if same else m.batch / batch
        for t in trains:
            if by_steps and (cost := step_cost(t, m.padding)) is not None:
                steps = samples / batch
                # The first step (its warm-up) and the Trainer's set-up: once per run.
                once = max(0.0, t.train_seconds - sum(t.step_seconds)) + steps * cost.fixed
                slow = once + cost.per_token * work
                fast = once + cost.per_token * work * amortized
            else:
                # Per token: per token the batch computed, its padding included.
                done = t.train_tokens * m.padding if per_token else m.samples_per_arm
                if not (done and t.train_seconds):
                    continue
                slow = t.train_seconds / done * work
                fast = slow * amortized
            lows.append(min(slow, fast))
            highs.append(max(slow, fast))
            runs.append(slow if cpu else math.sqrt(slow * fast))
        # Arms trained at the same time overlap: their training took about 1/n of its sum.
        outside = sum(t.train_seconds for t in trains) / m.record.arms_at_once
        if generation is not None:  # forecast on its own: only the rest is overhead
            outside += sum(a.generation.seconds for a in m.record.arms.values() if a.generation)
        if m.record.seconds:
            # Loading, generating and scoring happen once per seed: per seed, then × seeds.
            overheads.append(max(0.0, m.record.seconds - outside) / _seeds(m.record))
    if not runs:
        return None
    overhead = (statistics.median(overheads) if overheads else 0.0) * stage.seeds
    gen_point, gen_low, gen_high = generation or (0.0, 0.0, 0.0)

    # Arms on several towers or GPUs train in waves of `at_once`; generation and scoring stay
    # here, one arm after the other.
    at_once = plan.arms_at_once(stage)
    waves = math.ceil(arms / at_once)

    def hours(run: float, gen: float) -> float:
        return (run * waves + gen * arms + overhead) / 3600

    point = hours(statistics.median(runs), gen_point)
    low, high = hours(min(lows), gen_low), hours(max(highs), gen_high)
    price = hourly_usd(plan) * at_once  # each device is held for the stage's wall time
    basis = f"{len(runs)} measured arm(s) over {len(used)} stage(s)"
    basis += ", per step and token" if by_steps else ", per token" if per_token else ""
    if not same:
        basis += f", none at batch {batch}"
        basis += " (a CPU: little to gain from batching)" if cpu else ""
    basis += ", generation from its measured work" if generation is not None else ""
    basis += f", {at_once} arms at once" if at_once > 1 else ""
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
