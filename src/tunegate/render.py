"""Rich tables shared by `tunegate plan`, `run` and `status`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rich.table import Table

from tunegate.costs import stage_cost, summarize
from tunegate.plan import Plan, Stage
from tunegate.registry import metric_spec

if TYPE_CHECKING:
    from tunegate.state import LadderState

COLORS = {"PASS": "green", "INVESTIGATE": "yellow", "FAIL": "red"}


def _hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def describe_data(stage: Stage) -> str:
    d = stage.data
    if stage.kind == "environment":
        return "–"
    scen = (
        ", ".join(d.scenarios)
        if d.scenarios
        else ("all scenarios" if d.selection == "all" else "pilot scenario")
    )
    if d.selection == "micro":
        return "original plan's 5 built-in samples (val = train)"
    if d.selection == "head":
        return f"first {d.n or 20} ({scen}), val first {d.val_n or 5}, test next {d.test_n or 5}"
    split = "/".join(f"{x:.0%}" for x in d.split)
    cap = f", ≤{d.test_per_scenario} test/scenario" if d.test_per_scenario else ""
    return f"{split} split of {scen}{cap}"


def describe_training(plan: Plan, stage: Stage) -> str:
    if stage.kind == "environment":
        return "–"
    t = plan.stage_training(stage)
    length = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epochs"
    seeds = f", {stage.seeds} seeds per arm" if stage.seeds > 1 else ""
    return (
        f"{plan.quantization.method}, {length}, batch {t.batch_size}, lr {t.learning_rate:g}{seeds}"
    )


def describe_gates(stage: Stage) -> str:
    parts = []
    for name, value in stage.gates.model_dump(exclude_none=True).items():
        if value is True:
            parts.append(name)
        elif name == "min_improvement":
            scale = "points" if stage.gates.improvement == "absolute" else "relative"
            parts.append(f"improvement > {value:.0%} {scale}")
        elif name == "max_p_value":
            parts.append(f"p < {value:g}")
        elif name == "improves":
            parts.append("improves " + ", ".join(value))
    return ", ".join(parts)


def plan_table(plan: Plan, warnings: dict[int, list[str]] | None = None) -> Table:
    table = Table(title=f"Ladder: {plan.name}", show_lines=True)
    for col in ("#", "stage", "data", "train", "evaluate", "gates", "est. time", "est. cost"):
        table.add_column(col)
    total_h = total_usd = 0.0
    for i, stage in enumerate(plan.stages):
        ev = stage.evaluation
        evaluate = {"none": "–", "smoke": "generate once"}.get(
            ev.mode, f"{ev.limit or 'all'} test items: {', '.join(ev.metrics)}"
        )
        gates = describe_gates(stage)
        for w in (warnings or {}).get(i, []):
            gates += f"\n[yellow]⚠ {w}[/]"
        cost = stage_cost(plan, i, stage)  # × seeds: the estimate is for one run per arm
        table.add_row(
            str(i),
            stage.name,
            describe_data(stage),
            describe_training(plan, stage),
            evaluate,
            gates,
            _hours(cost.hours),
            f"${cost.usd:,.2f}",
        )
        if i < len(plan.stages) - 1:
            total_h += cost.hours
            total_usd += cost.usd
    last = stage_cost(plan, len(plan.stages) - 1, plan.stages[-1])
    share = f" ({total_usd / last.usd:.0%} of the last stage)" if last.usd else ""
    table.caption = (
        f"Validation before the last stage: {_hours(total_h)}, ${total_usd:,.2f}"
        f"{share}; last stage: {_hours(last.hours)}, ${last.usd:,.2f}"
    )
    return table


def cost_table(plan: Plan) -> Table:
    """The original plan's "Cost Summary by Stage", for this plan, before anything runs."""
    summary = summarize(plan)
    table = Table(title="Cost Summary by Stage", title_justify="left")
    for col in ("stage", "time", "cost", "purpose", "from"):
        table.add_column(col)
    for c in summary.stages[:-1]:
        table.add_row(f"{c.index} {c.name}", _hours(c.hours), f"${c.usd:,.2f}", c.purpose, c.source)
    table.add_row(
        "[bold]validation total[/]",
        f"[bold]{_hours(summary.validation_hours)}[/]",
        f"[bold]${summary.validation_usd:,.2f}[/]",
        "",
        "",
        end_section=True,
    )
    last = summary.stages[-1]
    table.add_row(
        f"{last.index} {last.name}",
        _hours(last.hours),
        f"${last.usd:,.2f}",
        last.purpose,
        last.source,
    )

    def share(value: float | None, of: str) -> str:
        return f" ({value:.0%} of the {of})" if value is not None else ""

    table.caption = (
        f"Total validation cost: ${summary.validation_usd:,.2f}"
        f"{share(summary.usd_share, 'last stage cost')}; total validation time: "
        f"{_hours(summary.validation_hours)}{share(summary.hours_share, 'last stage time')}. "
        "If a stage finds a problem, fixing it costs the validation, not the last stage."
    )
    table.caption_justify = "left"
    return table


def verdict_table(plan: Plan, state: LadderState) -> Table:
    table = Table(title=f"Verdicts: {plan.name}")
    for col in ("#", "stage", "verdict", "evidence", "time"):
        table.add_column(col)
    for i, stage in enumerate(plan.stages):
        rec = state.stage(stage.name)
        if rec is None or rec.verdict is None:
            status = (rec.status or "not run") if rec else "not run"
            table.add_row(str(i), stage.name, f"[dim]{status}[/]", "", "")
            continue
        verdict = rec.verdict
        stale = rec.hash != plan.stage_hash(i)
        label = f"[{COLORS[verdict]}]{verdict}[/]" + (" (forced)" if rec.forced else "")
        if stale:
            label += " [dim](plan changed since)[/]"
        failing = [g for g in rec.gates if not g.passed]
        shown = failing or rec.gates[-1:]
        evidence = "\n".join(f"{'✓' if g.passed else '✗'} {g.name}: {g.evidence}" for g in shown)
        table.add_row(str(i), stage.name, label, evidence, f"{rec.seconds or 0:.1f} s")
    return table


@dataclass(frozen=True)
class Answer:
    """The climb's answer, as the original plan's decision tree gives it, and why. `word` is
    what scripts (`run --json`) and MLflow (`tunegate.answer`) read."""

    word: Literal["GO", "GO so far", "INVESTIGATE", "FIX", "NOT A GO", "NOT RUN"]
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.word} — {self.reason}" if self.reason else self.word


def answer(plan: Plan, state: LadderState, missing: Mapping[str, str] | None = None) -> Answer:
    """GO only when every stage up to the furthest that ran has a PASS of its own: run, not
    forced past a stage that did not pass, judged on the plan as it is now, and with its
    artifacts still there (`missing`: stage name → what is gone, from
    `artifacts.missing_artifacts`). A FAIL is FIX and an INVESTIGATE is INVESTIGATE, whatever
    comes after; a stage that never ran, was forced, whose plan changed since its verdict or
    whose artifacts are gone makes it NOT A GO, said in words."""
    records = [(i, stage, state.stage(stage.name)) for i, stage in enumerate(plan.stages)]
    ran = [i for i, _, rec in records if rec is not None and rec.verdict is not None]
    if not ran:
        return Answer("NOT RUN")
    gaps: list[str] = []  # stages whose PASS is not their own
    for i, stage, rec in records[: max(ran) + 1]:
        label = f"stage {i} ({stage.name})"
        if rec is None or rec.verdict is None:
            gaps.append(f"{label} never ran")
            continue
        also = f" (and {'; '.join(gaps)})" if gaps else ""
        if rec.verdict == "FAIL":
            return Answer("FIX", f"stage '{stage.name}' failed{also}")
        if rec.verdict == "INVESTIGATE":
            return Answer(
                "INVESTIGATE", f"stage '{stage.name}' ran, but its effect gates did not pass{also}"
            )
        if rec.forced:
            gaps.append(
                f"{label} was forced ({rec.forced_reason or 'the stage before had not passed'})"
            )
        if rec.hash != plan.stage_hash(i):
            gaps.append(f"{label} passed under a plan that has changed since")
        if missing and stage.name in missing:
            gaps.append(f"{label} passed, but {missing[stage.name]}")
    if gaps:
        return Answer("NOT A GO", "; ".join(gaps))
    if max(ran) == len(plan.stages) - 1:
        return Answer("GO", "every stage passed, the last included")
    return Answer("GO so far", f"passed through '{plan.stages[max(ran)].name}'")


def final_answer(plan: Plan, state: LadderState, missing: Mapping[str, str] | None = None) -> str:
    """The answer as one line: GO / GO so far / INVESTIGATE / FIX / NOT A GO, and why."""
    return str(answer(plan, state, missing))


def format_value(metric_name: str, value: float, *, signed: bool = False) -> str:
    """A metric's value in its own units: rates and pass@k as percentages, the 0–10
    vulnerability score out of 10, other continuous scores as numbers."""
    sign = "+" if signed else ""
    if metric_name == "vulnerability":
        return f"{value:{sign}.2f}" + ("" if signed else "/10")
    if metric_spec(metric_name).kind == "binary" or metric_name.startswith("pass@"):
        return f"{value:{sign}.1%}"
    return f"{value:{sign}.3f}"


def forecast_lines(plan: Plan, state: LadderState) -> list[str]:
    """The latest forecast of each stage not yet run: what the next stages will take, from the
    last stage measured (`tunegate status`)."""
    measured = [s.name for s in plan.stages if s.name in state.forecasts]
    if not measured:
        return []
    latest = state.forecasts[measured[-1]]
    lines = []
    for i, stage in enumerate(plan.stages):
        record = state.stage(stage.name)
        if stage.name not in latest or (record is not None and record.verdict is not None):
            continue
        f = latest[stage.name]
        lines.append(
            f"forecast stage {i} ({f.stage}), after {measured[-1]}: {duration(f.hours)} "
            f"({duration(f.low_hours)}–{duration(f.high_hours)}), ${f.usd:,.2f}; plan estimate "
            f"{duration(f.estimate_hours)} [{f.basis}]"
        )
    return lines


def duration(hours: float) -> str:
    """Hours as a person reads them: minutes below one hour."""
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.1f} h"


def comparison_line(c: Any, no_value: str | None = None) -> str:
    """'metric: control X vs experiment Y (+D)', or why the metric has no value."""
    if c.n == 0 or c.control_mean is None or c.experiment_mean is None:
        return f"{c.metric}: no value ({no_value or '; '.join(c.notes)})"
    left_out = [n for n in c.notes if "left out" in n]
    return (
        f"{c.metric}: control {format_value(c.metric, c.control_mean)} vs experiment "
        f"{format_value(c.metric, c.experiment_mean)} "
        f"({format_value(c.metric, c.difference, signed=True)})"
        + (f", n = {c.n}; {left_out[0]}" if left_out else "")
    )


def seeds_line(seeded: Any) -> str:
    """Each arm's runs and their spread (the A/A within the real setup), and the run-aware
    test: 'seeds: control 40.0% / 45.0% (spread 5.0 points), experiment …; p = …'."""
    spec = metric_spec(seeded.metric)
    arms = []
    for role, means in seeded.run_means.items():
        runs = " / ".join(spec.show(v) for v in means.values())
        spread = spec.show_difference(max(means.values()) - min(means.values())).lstrip("+")
        arms.append(f"{role} {runs} (spread {spread})")
    p = "undefined" if seeded.p_value is None else f"{seeded.p_value:.4g}"
    se = spec.show_difference(seeded.se).lstrip("+")
    return (
        f"{seeded.metric} by seed: {'; '.join(arms)}; run-aware difference "
        f"{spec.show_difference(seeded.difference)} ± {se} (SE), p = {p}, df = {seeded.df:.1f}"
    )
