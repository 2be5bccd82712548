"""The original plan's pre-flight checklist before the last stage, each box ticked from recorded
evidence.

The original plan ticks its ten boxes by hand before committing 42 GPU-hours; here each one is read
from the run's state: stage verdicts and their gates, arm errors, the tracking check, the forecast
of the last stage against the plan's budget. Any box left unticked stops the climb (a recorded
`--force-stage` overrides it, as for any blocked stage).
"""

from __future__ import annotations

from tunegate.costs import stage_cost
from tunegate.forecast import budget_need
from tunegate.plan import Plan, Stage
from tunegate.state import Box, Forecast, LadderState


def checklist(plan: Plan, state: LadderState, forecast: Forecast | None) -> list[Box]:
    """The boxes for the plan's last stage, from `state` and the last stage's `forecast`."""
    before = plan.stages[:-1]
    return [
        *_stage_boxes(before, state),
        *_pilot_boxes(before, state),
        _crash_box(state),
        _tracking_box(before, state),
        *_budget_boxes(plan, state, forecast),
    ]


def _stage_boxes(before: list[Stage], state: LadderState) -> list[Box]:
    boxes = []
    for i, stage in enumerate(before):
        verdict = state.verdict(stage.name)
        boxes.append(
            Box(f"Stage {i} passed ({stage.name})", verdict == "PASS", f"verdict: {verdict}")
        )
    return boxes


def _pilot_boxes(before: list[Stage], state: LadderState) -> list[Box]:
    # The last stage before the final one that gates on the effect: the original plan's stage 3.
    pilot = next((s for s in reversed(before) if s.gates.min_improvement is not None), None)
    if pilot is None:
        return []
    rec = state.stages.get(pilot.name)
    boxes = []
    for name, label in (
        ("min_improvement", f"{pilot.name}: improvement > {pilot.gates.min_improvement:.0%}"),
        ("max_p_value", f"{pilot.name}: statistically significant (p < "
         f"{pilot.gates.max_p_value or 0.05:g})"),
        ("evaluation_ran", f"{pilot.name}: evaluation pipeline validated"),
    ):  # fmt: skip
        gate = rec.gate(name) if rec else None
        boxes.append(
            Box(
                label,
                bool(gate and gate.passed),
                gate.evidence if gate else "this gate is not in the plan",
            )
        )
    return boxes


def _crash_box(state: LadderState) -> Box:
    errors = [
        f"{s}/{a}: {arm.error}"
        for s, rec in state.stages.items()
        for a, arm in rec.arms.items()
        if arm.error
    ]
    return Box(
        "No crashes or OOM errors", not errors, "; ".join(errors) or "no arm recorded an error"
    )


def _tracking_box(before: list[Stage], state: LadderState) -> Box:
    records = state.stages
    env = next((records.get(s.name) for s in before if s.kind == "environment"), None)
    tracking = next((c for c in (env and env.checks) or [] if c.name == "tracking"), None)
    return Box(
        "MLflow logging works",
        bool(state.mlflow_parent) and (tracking is None or tracking.status != "FAIL"),
        f"parent run {state.mlflow_parent}" + (f"; {tracking.value}" if tracking else ""),
    )


def _budget_boxes(plan: Plan, state: LadderState, forecast: Forecast | None) -> list[Box]:
    """Time and money for the last stage, against what the budget has left."""
    budget = plan.budget
    spent_h, spent_usd = state.spent()
    last = plan.stages[-1]
    if forecast:  # as the budget guard reads it
        need_h, need_usd, basis = budget_need(forecast)
    else:
        estimate = stage_cost(plan, len(plan.stages) - 1, last)  # × its seeds
        need_h, need_usd, basis = estimate.hours, estimate.usd, "plan estimate"
    if budget.hours is None:
        time_box = Box(
            f"{need_h:.2f} h of time available for {last.name}",
            False,
            f"{basis} {need_h:.2f} h; set budget.hours to the time you have",
        )
    else:
        left = budget.hours - spent_h
        time_box = Box(
            f"{need_h:.2f} h of time available for {last.name}",
            need_h <= left,
            f"{basis} {need_h:.2f} h; {left:.2f} h left of budget.hours {budget.hours:g}",
        )
    fits = budget.usd is None or spent_usd + need_usd <= budget.usd
    money_box = Box(
        f"Budget ${need_usd:,.2f} for {last.name} approved",
        budget.approved and fits,
        ("budget.approved is true" if budget.approved else "set budget.approved: true")
        + ("" if fits else f"; ${spent_usd:,.2f} spent + ${need_usd:,.2f} > ${budget.usd:,.2f}"),
    )
    return [time_box, money_box]
