"""A training stage's evaluation: score both arms on the same items (the one pipeline that
`tunegate evaluate` uses too), then the paired comparison the gates read."""

from __future__ import annotations

from typing import Any

from tunegate.analysis import analyze, rows_from_results
from tunegate.evaluate.pipeline import ArmToScore, Generations, Settings, evaluate_arms, metric_gaps
from tunegate.events import ArmScored, Compared
from tunegate.gates import StageEvidence
from tunegate.ladder.arm import ArmJob
from tunegate.ladder.context import Climb, StageRun
from tunegate.plan import JudgeConfig
from tunegate.registry import metric_spec
from tunegate.rundir import atomic_write_json
from tunegate.state import ComparisonRecord, EvaluationCost


def score(
    climb: Climb,
    run: StageRun,
    arms: list[ArmJob],
    generations: dict[str, Generations],
    evidence: StageEvidence,
) -> None:
    ev_cfg = run.stage.evaluation
    settings = Settings.from_config(ev_cfg, climb.plan.seed)
    to_score = [
        ArmToScore(
            a.name, a.role, a.test_items, generations[a.name], seed=a.seed if a.replicated else None
        )
        for a in arms
    ]
    done = evaluate_arms(to_score, settings, _judge(climb), run.stage_dir, climb.bars.ticker)
    rows = done.rows
    for arm in arms:
        arm_rows = [r for r in rows if r["arm"] == arm.name]
        arm_ev = evidence.arms[arm.name]
        arm_ev.expected_items = len(arm.test_items)
        arm_ev.failed = metric_gaps(arm_rows, ev_cfg.metrics, "failed")
        arm_ev.not_applicable = metric_gaps(arm_rows, ev_cfg.metrics, "not_applicable")
        climb.events.emit(ArmScored(arm.name, _means(arm_rows, ev_cfg.metrics), arm.record))
    _say_why_no_value(rows, ev_cfg.metrics, evidence)
    run.record.evaluation_cost = EvaluationCost.model_validate(done.costs)
    _compare(climb, run, rows, evidence)


def _judge(climb: Climb) -> JudgeConfig | None:
    """The plan's judge, capped so that it stops paying once the climb's money is spent."""
    judge, budget = climb.plan.judge, climb.plan.budget.usd
    if judge is None or budget is None:
        return judge
    _, spent = climb.state.spent()
    left = max(budget - spent, 0.0)
    cap = left if judge.budget_usd is None else min(left, judge.budget_usd)
    return judge.model_copy(update={"budget_usd": cap})


def _means(rows: list[dict[str, Any]], metrics: list[str]) -> dict[str, float]:
    """Each metric's mean over the items with a value: a metric with none has no mean (a 0
    there would be made up)."""
    got = {m: [v for r in rows if (v := r["metrics"][m]["value"]) is not None] for m in metrics}
    return {m: sum(vs) / len(vs) for m, vs in got.items() if vs}


def _say_why_no_value(
    rows: list[dict[str, Any]], metrics: list[str], evidence: StageEvidence
) -> None:
    """A metric with a value for no item: why (failed or not applicable, and the reasons)."""
    for m in metrics:
        if any(r["metrics"][m]["value"] is not None for r in rows):
            continue
        arms = evidence.arms.values()
        failed = any(m in a.failed for a in arms)
        gaps = [(a.failed if failed else a.not_applicable).get(m) for a in arms]
        reasons = "; ".join(sorted({g.reasons for g in gaps if g is not None}))
        evidence.no_value[m] = f"{'failed' if failed else 'not applicable'}: {reasons}"


def _compare(
    climb: Climb, run: StageRun, rows: list[dict[str, Any]], evidence: StageEvidence
) -> None:
    """One analysis for the ladder and `tunegate stats`: the same rows give the same numbers."""
    ev_cfg, gates = run.stage.evaluation, run.stage.gates
    analysis = analyze(
        rows_from_results(rows),
        primary=ev_cfg.primary_metric,
        metrics=ev_cfg.metrics,
        binary={m: metric_spec(m).kind == "binary" for m in ev_cfg.metrics},
        tests=dict(ev_cfg.tests),
        seed=climb.plan.seed,
    )
    evidence.primary = analysis.primary
    evidence.per_scenario = analysis.per_scenario
    evidence.secondary = analysis.secondary
    evidence.clustered = analysis.clustered
    evidence.seeds = analysis.seeds
    summary = analysis.to_json()
    summary["no_value"] = dict(evidence.no_value)  # metric → why (the report shows it)
    needed = None
    if analysis.primary.d_z is not None and analysis.primary.d_z != 0:
        # A pilot's observed effect sizes the next stage (optimistic: see docs/power.md).
        from tunegate.power import n_from_pilot

        needed = n_from_pilot(abs(analysis.primary.d_z), gates.max_p_value or 0.05, comparisons=1)
        summary["n_for_observed_effect"] = needed
    atomic_write_json(run.stage_dir / "comparison.json", summary)
    run.record.comparison = ComparisonRecord.model_validate(summary)
    climb.events.emit(
        Compared(
            run.stage.name,
            analysis.primary,
            dict(analysis.secondary),
            dict(evidence.no_value),
            run.record,
            n_for_observed_effect=needed,
            seeds=analysis.seeds,
        )
    )
