"""What each stage is expected to cost, before anything runs: the original plan's "Cost Summary by
Stage".

A stage's time is its `estimate.hours`, times its `seeds` (the estimate is for one training run per
arm). Its money is `estimate.usd` when the plan states one (the
original plan's own figures: $3, $12, $242 include its evaluation calls), else the plan's cost
model: GPU hours × `cost.gpu_usd_per_hour`, plus electricity (`cost.gpu_watts` × hours ×
`cost.usd_per_kwh`) when both are given. Validation is every stage before the last; the last is the
production run the ladder protects.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunegate.plan import Plan, Stage


@dataclass(frozen=True)
class StageCost:
    index: int
    name: str
    purpose: str
    hours: float
    usd: float
    source: str  # "plan estimate" or "cost model"


@dataclass(frozen=True)
class CostSummary:
    stages: list[StageCost]
    validation_hours: float
    validation_usd: float
    production_hours: float
    production_usd: float

    # As the original plan states them: validation against the production run it protects ($15 is 6
    # % of $242; 8 hours is 19 % of 42).
    @property
    def usd_share(self) -> float | None:
        return self.validation_usd / self.production_usd if self.production_usd else None

    @property
    def hours_share(self) -> float | None:
        return self.validation_hours / self.production_hours if self.production_hours else None


def hourly_usd(plan: Plan) -> float:
    """What one hour of the plan's GPU costs: its price, plus electricity when configured."""
    c = plan.cost
    power = (c.gpu_watts / 1000 * c.usd_per_kwh) if c.gpu_watts and c.usd_per_kwh else 0.0
    return c.gpu_usd_per_hour + power


def stage_cost(plan: Plan, index: int, stage: Stage) -> StageCost:
    """A stage's estimate is for one training run per arm; `seeds: N` pays it N times."""
    hours = stage.estimate.hours * stage.seeds
    if stage.estimate.usd > 0:
        usd, source = stage.estimate.usd * stage.seeds, "plan estimate"
    else:
        usd, source = hours * hourly_usd(plan), "cost model"
    if stage.seeds > 1:
        source += f" × {stage.seeds} seeds"
    return StageCost(index, stage.name, stage.description, hours, usd, source)


def summarize(plan: Plan) -> CostSummary:
    costs = [stage_cost(plan, i, s) for i, s in enumerate(plan.stages)]
    validation, production = costs[:-1], costs[-1:]
    return CostSummary(
        stages=costs,
        validation_hours=sum(c.hours for c in validation),
        validation_usd=sum(c.usd for c in validation),
        production_hours=sum(c.hours for c in production),
        production_usd=sum(c.usd for c in production),
    )
