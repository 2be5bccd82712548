"""Whether a stage may start: the stage before passed (or this one is forced, and that is
recorded), the last stage's pre-flight checklist is ticked, the budget holds, and what the stage
writes fits on its disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tunegate.events import PreflightChecked
from tunegate.ladder.context import Climb
from tunegate.ladder.forecasting import forecast_stage
from tunegate.ladder.selection import RunOptions, stage_passed
from tunegate.render import duration


@dataclass
class Admission:
    forced: bool = False  # started although the stage before did not pass
    refused: str | None = None  # why it did not start
    # The health gate a refused stage FAILs on (recorded); None: not started, nothing recorded.
    gate: Literal["preflight", "budget", "disk"] | None = None


def admit(climb: Climb, index: int, opts: RunOptions) -> Admission:
    """May stage `index` start? Says why not, or what was overridden."""
    admission = _after_previous(climb, index, opts)
    if admission.refused:
        return admission
    if index == len(climb.plan.stages) - 1 and index > 0:
        unticked = _preflight(climb, index)
        if unticked and index not in opts.force:
            climb.events.say(
                f"the pre-flight checklist has {len(unticked)} unticked box(es). Fix them, or "
                f"pass --force-stage {index} to override (recorded).",
                "error",
                headline=_not_started(climb, index),
            )
            admission.refused, admission.gate = "pre-flight: " + "; ".join(unticked), "preflight"
            return admission
        if unticked:
            climb.events.say(f"pre-flight boxes unticked: {unticked}", "warning", "Override:")
    over = over_budget(climb, index)
    if over is not None:
        headline = _not_started(climb, index).removesuffix(":") + ", over budget:"
        climb.events.say(over, "error", headline)
        admission.refused, admission.gate = over, "budget"
        return admission
    short = out_of_disk(climb, index)
    if short is not None:
        headline = _not_started(climb, index).removesuffix(":") + ", not enough disk:"
        climb.events.say(short, "error", headline)
        admission.refused, admission.gate = short, "disk"
    return admission


def refused_at_once(climb: Climb, index: int, opts: RunOptions) -> bool:
    """The climb's first stage refused because the one before has not passed (and it is not
    forced): said before the climb opens anything (torch, tracking, the report), so such a
    refusal answers in a blink and writes nothing. The other refusals (pre-flight, budget, disk)
    need the forecasts and the machine, and stay with `admit`."""
    return index not in opts.force and _after_previous(climb, index, opts).refused is not None


def _not_started(climb: Climb, index: int) -> str:
    return f"Stage {index} ({climb.plan.stages[index].name}) not started:"


def _after_previous(climb: Climb, index: int, opts: RunOptions) -> Admission:
    if index == 0 or stage_passed(climb.plan, climb.state, index - 1, climb.run):
        return Admission()
    prev = climb.plan.stages[index - 1].name
    prev_verdict = climb.state.verdict(prev) or "not run"
    if index not in opts.force:
        climb.events.say(
            f"stage {index - 1} ({prev}) is {prev_verdict}. Fix it, or pass "
            f"--force-stage {index} to override (recorded).",
            "error",
            _not_started(climb, index),
        )
        return Admission(refused=f"stage {index - 1} ({prev}) is {prev_verdict}")
    climb.events.say(
        f"stage {index} forced although stage {index - 1} ({prev}) is {prev_verdict}.",
        "warning",
        "Override:",
    )
    return Admission(forced=True)


def _preflight(climb: Climb, index: int) -> list[str]:
    """The original plan's pre-flight checklist for the last stage; its unticked boxes."""
    from tunegate.preflight import checklist

    boxes = checklist(climb.plan, climb.state, forecast_stage(climb, index))
    climb.state.preflight = boxes
    climb.save()
    climb.events.emit(PreflightChecked(index, climb.plan.stages[index].name, boxes))
    return [b.label for b in boxes if not b.ticked]


def over_budget(climb: Climb, index: int) -> str | None:
    """Why stage `index` must not start: what is spent plus its forecast (or, before any
    measurement, its plan estimate) crosses the plan's budget. None when it fits."""
    budget = climb.plan.budget
    if budget.usd is None and budget.hours is None:
        return None
    from tunegate.costs import stage_cost
    from tunegate.forecast import budget_need

    spent_hours, spent_usd = climb.state.spent()
    predicted = forecast_stage(climb, index)
    if predicted is not None:
        hours, usd, basis = budget_need(predicted)
    else:
        c = stage_cost(climb.plan, index, climb.plan.stages[index])
        usd, hours, basis = c.usd, c.hours, "plan estimate"
    if budget.usd is not None and spent_usd + usd > budget.usd:
        return (
            f"${spent_usd:,.2f} spent + ${usd:,.2f} {basis} for this stage "
            f"> ${budget.usd:,.2f} budget"
        )
    if budget.hours is not None and spent_hours + hours > budget.hours:
        return (
            f"{duration(spent_hours)} spent + {duration(hours)} {basis} for this "
            f"stage > {duration(budget.hours)} budget"
        )
    return None


def out_of_disk(climb: Climb, index: int) -> str | None:
    """Why train stage `index` must not start: its checkpoints, adapters, data and tracking
    (`doctor.stage_disk_need`) do not fit in the free space where they go. A stage that runs
    out of disk half-way has spent its time for nothing. None when it fits."""
    stage = climb.plan.stages[index]
    if stage.kind != "train":
        return None
    from tunegate.doctor import stage_disk_problem

    return stage_disk_problem(climb.plan, index, climb.run.stage_dir(index, stage.name))
