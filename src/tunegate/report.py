"""The run's report: what a practitioner reads to decide in a minute, from the run directory alone.

One set of sections (tables, lists, figures) is built from `plan.json`, `state.json` and the
stage directories, then written twice: a self-contained HTML page (inline CSS, inline SVG
figures, no script, nothing fetched) and Markdown for a terminal or a pull request. The ladder
writes both after every stage and logs them, with the figures, to its MLflow parent run;
`tunegate report` rebuilds them for any run directory.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from tunegate.artifacts import missing_artifacts
from tunegate.costs import stage_cost
from tunegate.determinism import MachineRecord
from tunegate.errors import UserError
from tunegate.plan import Plan, dump_plan
from tunegate.plots import ForestRow, forest, loss_curves, relative_or_none
from tunegate.registry import metric_spec
from tunegate.render import final_answer
from tunegate.rundir import RunDir, atomic_write_text

if TYPE_CHECKING:
    from tunegate.state import LadderState, StageRecord
    from tunegate.stats import Comparison, SeededDifference

REPORT_DIR = "report"  # inside the run directory; also the MLflow artifact path


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    id: str = ""
    caption: str = ""


@dataclass
class Figure:
    name: str  # file stem: plots/<name>.svg
    caption: str
    svg: str


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    code: str = ""  # preformatted text (the plan)


@dataclass
class Report:
    title: str
    answer: str
    facts: list[tuple[str, str]]
    sections: list[Section]

    @property
    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]


# --- formatting helpers ------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: Any, spec: str = ".3f") -> str:
    return "–" if _missing(value) else format(value, spec)


def _pct(value: Any, signed: bool = False) -> str:
    return "–" if _missing(value) else format(100 * value, "+.1f" if signed else ".1f") + "%"


def _ci(interval: Any, fmt: Any) -> str:
    return f" [{fmt(interval[0])}, {fmt(interval[1])}]" if interval else ""


def _p(value: Any) -> str:
    return "–" if value is None else f"{value:.3g}"


def _duration(hours: float | None) -> str:
    if hours is None:
        return "–"
    seconds = hours * 3600
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if hours < 1 else f"{hours:.2f} h"


def _usd(value: float | None) -> str:
    return "–" if value is None else f"${value:,.2f}"


# --- building ----------------------------------------------------------------------------------


def load(run_dir: Path) -> tuple[Plan, LadderState]:
    """The plan a run was made with, and its state; a UserError if `run_dir` is not a run."""
    plan_file = run_dir / "plan.json"
    run = RunDir(run_dir)
    if not run_dir.exists():
        raise UserError("no run yet: `tunegate run` first", where=str(run_dir))
    if not plan_file.is_file():
        raise UserError("not a tunegate run directory (no plan.json)", where=str(run_dir))
    if not run.exists():
        raise UserError("no run yet (state.json missing): `tunegate run` first", where=str(run_dir))
    try:
        plan = Plan.model_validate(json.loads(plan_file.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValueError) as err:
        first = str(err).splitlines()[0]
        raise UserError(f"unreadable plan ({first})", where=str(plan_file)) from None
    return plan, run.load_state()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def build(run_dir: Path) -> Report:
    plan, state = load(run_dir)
    run = RunDir(run_dir)
    records = state.stages
    facts = [
        ("plan", plan.name),
        ("run directory", str(run_dir.resolve())),
        ("started", state.created or "–"),
        ("plan hash", state.plan_hash or "–"),
        ("seed", str(plan.seed)),
        ("tracking", f"{state.tracking_uri or '–'} (parent run {state.mlflow_parent})"),
    ]
    sections = [
        _ladder(plan, records),
        _recovery(plan, records),
        _training(plan, records, run),
        _comparison(plan, records),
        _power(plan, records, run),
        _costs(plan, state),
        _preflight(state),
        _mlflow(plan, state),
        _reproducibility(plan, state, run),
    ]
    return Report(
        title=f"tunegate report: {plan.name}",
        answer=final_answer(plan, state, missing_artifacts(plan, state, run)),
        facts=facts,
        sections=[s for s in sections if s is not None],
    )


def _ladder(plan: Plan, records: dict[str, StageRecord]) -> Section:
    rows = []
    for i, stage in enumerate(plan.stages):
        rec = records.get(stage.name)
        if rec is None:
            rows.append([str(i), stage.name, "not run", "", "–"])
            continue
        verdict: str = rec.verdict or rec.status or "not run"
        if rec.forced:
            verdict += " (forced)"
        if rec.hash != plan.stage_hash(i):
            verdict += " (plan changed since)"
        gates = "\n".join(f"{'✓' if g.passed else '✗'} {g.name}: {g.evidence}" for g in rec.gates)
        seconds = rec.seconds
        rows.append(
            [str(i), stage.name, verdict, gates, "–" if seconds is None else f"{seconds:.1f} s"]
        )
    return Section(
        "ladder",
        "The ladder",
        "Each stage validates one thing on real parts; a stage starts only when the one "
        "before it passed. Every gate is listed with the evidence it was decided on.",
        tables=[Table(["#", "stage", "verdict", "gates and evidence", "time"], rows, "verdicts")],
    )


def _recovery(plan: Plan, records: dict[str, StageRecord]) -> Section | None:
    items = []
    for i, stage in enumerate(plan.stages):
        rec = records.get(stage.name)
        if rec is None or rec.verdict in (None, "PASS"):
            continue
        failing = [g for g in rec.gates if not g.passed]
        why = "; ".join(f"{g.name}: {g.evidence}" for g in failing) or rec.verdict
        items.append(f"Stage {i} ({stage.name}) is {rec.verdict}: {why}")
        items += [f"{n}. {action}" for n, action in enumerate(stage.recovery, 1)]
        if not stage.recovery:
            items.append("The plan lists no recovery actions for this stage.")
        for arm, arm_rec in rec.arms.items():
            if arm_rec.error:
                items.append(f"{arm}: {arm_rec.error}")
    if not items:
        return None
    return Section("recovery", "What to do next", "From the plan's recovery actions.", items=items)


def _training(plan: Plan, records: dict[str, StageRecord], run: RunDir) -> Section | None:
    rows, figures = [], []
    for i, stage in enumerate(plan.stages):
        rec = records.get(stage.name)
        curves, evals, roles = {}, {}, {}
        for name, arm in (rec.arms if rec else {}).items():
            t = arm.train
            if t is None:
                continue
            losses = [(float(s), float(v)) for s, v in t.losses]
            curves[name] = losses
            evals[name] = (t.eval_loss_before, t.eval_loss_after)
            base = arm.arm or name  # a run of several seeds is "<arm>.seed<seed>"
            roles[name] = plan.arms[base].role if base in plan.arms else ""
            loss = f"{losses[0][1]:.3f} → {losses[-1][1]:.3f}" if losses else "–"
            rows.append(
                [
                    f"{i} {stage.name}",
                    name,
                    str(t.steps),
                    loss,
                    f"{_num(t.eval_loss_before)} → {_num(t.eval_loss_after)}",
                    _num(t.tokens_per_second, ",.0f"),
                    _num(t.peak_memory_gib, ".2f") + " GiB"
                    if t.peak_memory_gib is not None
                    else "– (CPU)",
                    f"{t.train_seconds:.1f} s",
                    arm.trained_on or "–",
                ]
            )
        if curves:
            caption = f"Stage {i} ({stage.name}): training loss per step, control vs experiment"
            selection = _read_json(run.stage_dir(i, stage.name) / "selection.json") or {}
            trained_on = {h.get("train") for h in (selection.get("hashes") or {}).values()}
            # The original plan's micro set, for instance.
            if len(curves) > 1 and len(trained_on) == 1:
                caption += "; both arms trained on the same items, so their curves coincide"
            figures.append(
                Figure(
                    f"loss-{i}-{stage.name}",
                    caption,
                    loss_curves(f"stage {i}: {stage.name}", curves, roles, evals),
                )
            )
    if not rows:
        return None
    columns = [
        "stage", "arm", "steps", "train loss", "eval loss before → after", "tokens/s",
        "peak memory", "train time", "trained on",
    ]  # fmt: skip
    return Section(
        "training", "Training", "", tables=[Table(columns, rows, "training")], figures=figures
    )


def _comparison_row(
    stage: str, c: Comparison, label: str, no_value: dict[str, str] | None = None
) -> list[str]:
    if not c.n or c.control_mean is None or c.experiment_mean is None or c.difference is None:
        # A metric with a value for no item (no judge configured, say).
        why = (no_value or {}).get(c.metric) or "; ".join(c.notes)
        return [stage, label, "0", f"no value: {why}"] + [""] * 7
    fmt_rate: Callable[[float], str] = _pct if c.binary else _num
    fmt_diff: Callable[[float], str] = (
        (lambda v: _pct(v, signed=True)) if c.binary else (lambda v: f"{v:+.3f}")
    )
    rel, d_z = c.relative, c.d_z
    return [
        stage,
        label,
        str(c.n),
        fmt_rate(c.control_mean) + _ci(c.control_rate_ci95, fmt_rate),
        fmt_rate(c.experiment_mean) + _ci(c.experiment_rate_ci95, fmt_rate),
        fmt_diff(c.difference) + _ci(c.ci95, fmt_diff),
        ("–" if rel is None else _pct(rel, signed=True))
        + _ci(c.relative_ci95, lambda v: _pct(v, signed=True)),
        c.test,
        _p(c.p_value),
        _p(c.p_adjusted),
        ("–" if d_z is None else f"{d_z:.2f}") + _ci(c.d_z_ci95, lambda v: f"{v:.2f}"),
    ]


def _comparison(plan: Plan, records: dict[str, StageRecord]) -> Section | None:
    metric_rows, scenario_rows, forest_rows, seed_rows = [], [], [], []
    for i, stage in enumerate(plan.stages):
        rec = records.get(stage.name)
        comp = rec.comparison if rec else None
        if comp is None:
            continue
        alpha = stage.gates.max_p_value or 0.05
        label_stage = f"{i} {stage.name}"
        seed_rows += _seed_rows(label_stage, comp.seeds)
        secondary = comp.secondary.values()
        entries = [(comp.primary, True)] + [(c, False) for c in secondary]
        for c, primary in entries:
            name = c.metric + (" (primary)" if primary else "")
            metric_rows.append(_comparison_row(label_stage, c, name, comp.no_value))
            forest_rows.append(_forest_row(f"{stage.name}: {c.metric}", c, alpha, primary))
        for scenario, c in comp.per_scenario.items():
            scenario_rows.append(_comparison_row(label_stage, c, f"{scenario}: {c.metric}"))
            forest_rows.append(_forest_row(f"{stage.name}: {scenario}", c, alpha, False))
        notes = list(comp.primary.notes)
        if stage.seeds == 1:
            notes.append(
                "one training run per arm: its difference holds seed-to-seed noise that "
                "nothing measured (`seeds: 2` on the stage measures it)"
            )
        notes += [f"{c.metric}: {n}" for c in secondary for n in c.notes if "left out" in n]
        for note in notes:
            metric_rows.append([label_stage, "note", "", note, "", "", "", "", "", "", ""])
    if not metric_rows:
        return None
    columns = [
        "stage", "metric", "n", "control [95% CI]", "experiment [95% CI]",
        "difference [95% CI]", "relative [95% CI]", "test", "p", "p (Holm)", "d_z [95% CI]",
    ]  # fmt: skip
    tables = [Table(columns, metric_rows, "metrics", "Paired comparisons on the same test items.")]
    if scenario_rows:
        tables.append(
            Table(columns, scenario_rows, "scenarios", "The primary metric per scenario.")
        )
    if seed_rows:
        columns = ["stage", "arm", "runs (seed: mean)", "spread", "difference ± SE", "p", "df"]
        tables.append(
            Table(
                columns,
                seed_rows,
                "seeds",
                "Each arm trained with several seeds: the spread between one arm's runs is an "
                "A/A inside the real setup; the difference's SE holds the items' and the "
                "seeds' variance.",
            )
        )
    drawable = [r for r in forest_rows if r is not None]
    figures = []
    if drawable:
        figures.append(
            Figure(
                "forest",
                "Relative improvement with 95% bootstrap intervals (green: significant after "
                "Holm correction at the stage's α; diamond: the pre-registered primary). Rows "
                "where the control scored 0 have no relative change and are left out.",
                forest("experiment vs control, by stage", drawable),
            )
        )
    return Section(
        "comparison",
        "Control vs experiment",
        "Means with Wilson intervals per arm (binary metrics), the paired difference with its "
        "interval, the relative change with its bootstrap interval, the pre-registered test "
        "and Holm-adjusted p, and Cohen's d_z.",
        tables=tables,
        figures=figures,
    )


def _seed_rows(stage: str, seeded: SeededDifference | None) -> list[list[str]]:
    """Per arm its runs' means and their spread, then the run-aware test's row."""
    if seeded is None:
        return []
    spec = metric_spec(seeded.metric)
    rows = [
        [
            stage,
            f"{role}: {seeded.metric}",
            ", ".join(f"{seed}: {spec.show(v)}" for seed, v in means.items()),
            spec.show_difference(seeded.spread[role]).lstrip("+"),
            "",
            "",
            "",
        ]
        for role, means in seeded.run_means.items()
    ]
    rows.append(
        [
            stage,
            "experiment − control",
            f"{seeded.items} items × every run",
            "",
            f"{spec.show_difference(seeded.difference)} ± "
            + spec.show_difference(seeded.se).lstrip("+"),
            _p(seeded.p_value),
            f"{seeded.df:.1f}",
        ]
    )
    return rows


def _forest_row(label: str, c: Comparison, alpha: float, primary: bool) -> ForestRow | None:
    rel = relative_or_none(c.relative)
    if rel is None:
        return None
    ci = c.relative_ci95 or (None, None)
    low, high = relative_or_none(ci[0]), relative_or_none(ci[1])
    try:
        higher_is_better = metric_spec(c.metric).higher_is_better
    except Exception:  # a metric this version does not know: draw it as measured
        higher_is_better = True
    if not higher_is_better:  # vulnerability: a fall is the improvement; flip to read alike
        rel = -rel
        low, high = (None if high is None else -high), (None if low is None else -low)
        label += " (lower is better, sign flipped)"
    p = c.p_adjusted if c.p_adjusted is not None else c.p_value
    return ForestRow(label, rel, low, high, p is not None and p < alpha, primary)


def _power(plan: Plan, records: dict[str, StageRecord], run: RunDir) -> Section | None:
    rows = []
    for i, stage in enumerate(plan.stages):
        if stage.kind != "train" or stage.evaluation.mode != "full":
            continue
        selection = _read_json(run.stage_dir(i, stage.name) / "selection.json")
        if not selection:
            continue
        from tunegate.power import stage_power  # scipy: only when a stage has test items

        n = len(selection.get("test", []))
        alpha = stage.gates.max_p_value or 0.05
        power = stage_power(n, alpha=alpha)
        rec = records.get(stage.name)
        comp = rec.comparison if rec else None
        rows.append(
            [
                f"{i} {stage.name}",
                str(n),
                f"{alpha:g}",
                _num(power.mde_d_z, ".2f"),
                "–" if power.mde_binary is None else f"{100 * power.mde_binary:.0f} points",
                "yes" if power.feasible else f"no (smallest p {power.min_p:.3g})",
                _num(comp.primary.d_z if comp else None, ".2f"),
                str(comp.n_for_observed_effect or "–") if comp else "–",
            ]
        )
    if not rows:
        return None
    columns = [
        "stage", "test items", "α", "MDE d_z (paired t)", "MDE pass-rate gain (exact McNemar)",
        "can an exact test reach α?", "observed d_z", "items for the observed d_z",
    ]  # fmt: skip
    return Section(
        "power",
        "What each stage could detect",
        "Minimum detectable effects at 80% power for each evaluating stage's number of paired "
        "test items (docs/power.md). A stage that cannot detect the effect you expect can only "
        "describe it.",
        tables=[Table(columns, rows, "power")],
    )


def _costs(plan: Plan, state: LadderState) -> Section:
    records, forecasts = state.stages, state.forecasts
    order = {s.name: i for i, s in enumerate(plan.stages)}
    rows = []
    for i, stage in enumerate(plan.stages):
        estimate = stage_cost(plan, i, stage)
        # The forecast made last before this stage ran: by the latest stage measured before it.
        made = [m for m in forecasts if order.get(m, 99) < i and stage.name in forecasts[m]]
        source = max(made, key=lambda m: order[m]) if made else None
        f = forecasts[source][stage.name] if source else None
        rec = records.get(stage.name)
        actual = rec.actual if rec else None
        error = "–"
        if f and actual and actual.wall_hours:
            error = f"{(f.hours - actual.wall_hours) / actual.wall_hours:+.0%}"
        rows.append(
            [
                f"{i} {stage.name}",
                f"{_duration(estimate.hours)}, {_usd(estimate.usd)}",
                (
                    f"{_duration(f.hours)} [{_duration(f.low_hours)}, "
                    f"{_duration(f.high_hours)}], {_usd(f.usd)} (after {source})"
                    if f
                    else "–"
                ),
                _duration(actual.wall_hours) if actual else "–",
                _num(actual.device_hours, ".4f") if actual else "–",
                _num(actual.tokens_per_second, ",.0f") if actual else "–",
                str(actual.judge_calls) if actual else "–",
                _usd(actual.usd) if actual else "–",
                error,
            ]
        )
    hours, spent = state.spent()
    budget = plan.budget
    limits = ", ".join(
        x
        for x in (
            f"${budget.usd:,.2f}" if budget.usd is not None else "",
            f"{budget.hours:g} h" if budget.hours is not None else "",
        )
        if x
    )
    columns = [
        "stage", "plan estimate", "forecast [interval]", "actual wall time", "device-hours",
        "tokens/s", "judge calls", "actual cost", "forecast error",
    ]  # fmt: skip
    return Section(
        "cost",
        "Cost and time",
        f"Spent so far: {_usd(spent)} and {_duration(hours)} of training stages"
        + (f", against a budget of {limits}" if limits else " (no budget set)")
        + (" (approved)." if budget.approved else " (not approved in the plan)."),
        tables=[Table(columns, rows, "costs")],
    )


def _preflight(state: LadderState) -> Section | None:
    boxes = state.preflight
    if not boxes:
        return None
    return Section(
        "preflight",
        "Pre-flight checklist",
        "Ticked from recorded evidence before the last stage.",
        items=[f"{'✓' if b.ticked else '✗'} {b.label} — {b.evidence}" for b in boxes],
    )


def _mlflow(plan: Plan, state: LadderState) -> Section | None:
    """Where each stage's arms are in MLflow, and how to compare them there side by side."""
    uri, parent = state.tracking_uri, state.mlflow_parent
    if not uri or not parent:
        return None
    experiment = state.mlflow_experiment_id
    items = [f"Ladder (parent) run {parent}; its artifacts hold this report under report/."]
    for i, stage in enumerate(plan.stages):
        rec = state.stage(stage.name)
        arms = {a: r.mlflow_run for a, r in (rec.arms if rec else {}).items() if r.mlflow_run}
        if not arms:
            continue
        line = f"Stage {i} ({stage.name}): " + ", ".join(f"{a} {r}" for a, r in arms.items())
        if uri.startswith(("http://", "https://")) and experiment:
            ids = json.dumps(list(arms.values()), separators=(",", ":"))
            parts = urlsplit(uri)  # a link for a browser: no user info, the UI asks its own
            server = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
            line += (
                f" — compare: {server.rstrip('/')}/#/compare-runs?runs={ids}"
                f'&experiments=["{experiment}"]'
            )
        items.append(line)
    return Section(
        "mlflow",
        "In MLflow",
        "Runs nest ladder → stage → arm. To put control and experiment side by side, select a "
        "stage's arm runs and press Compare, or search "
        f"`tags.tunegate.ladder = '{plan.name}' and tags.tunegate.level = 'arm'`.",
        items=items,
    )


def mlflow_summary(run_dir: Path, limit: int = 8000) -> str:  # MLflow's MAX_TAG_VAL_LENGTH
    """The parent run's MLflow description: the answer and the ladder, in Markdown (MLflow
    renders a run's `mlflow.note.content` tag), cut to fit a tag value."""
    report = build(run_dir)
    ladder = next(s for s in report.sections if s.id == "ladder")
    brief = Report(report.title, report.answer, [], [ladder])
    text = to_markdown(brief) + "\nThe full report: artifacts, report/report.html.\n"
    return text if len(text) <= limit else text[: limit - 40] + "\n… (cut: see report/report.md)\n"


def _reproducibility(plan: Plan, state: LadderState, run: RunDir) -> Section:
    hashes = []
    versions: dict[str, str] = {}
    for i, stage in enumerate(plan.stages):
        rec = state.stage(stage.name)
        selection = _read_json(run.stage_dir(i, stage.name) / "selection.json") or {}
        for arm, splits in (selection.get("hashes") or {}).items():
            hashes.append(
                [f"{i} {stage.name}", arm, rec.hash if rec else "–"]
                + [splits.get(k, "–") for k in ("train", "val", "test")]
            )
        if rec is None:
            continue
        for t in rec.trains:
            versions.update(t.versions)
        for check in rec.checks or []:
            if check.name in ("python", "packages", "torch device", "bitsandbytes"):
                versions.setdefault(f"environment: {check.name}", check.value)
    versions.setdefault("python (report)", platform.python_version())
    tables = []
    if hashes:
        tables.append(
            Table(
                ["stage", "arm", "stage config hash", "train items", "val items", "test items"],
                hashes,
                "hashes",
                "Content hashes of the exact items each arm trained and was tested on.",
            )
        )
    for arm, digest in state.data_hashes.items():
        versions[f"data file: {arm}"] = digest
    tables.append(Table(["what", "version"], [[k, v] for k, v in versions.items()], "versions"))
    machines = _machines(plan, state)
    if machines:
        tables.append(
            Table(
                ["who", "CPU", "kernels", "BLAS", "oneDNN", "threads", "deterministic"],
                machines,
                "machines",
                "Which CPU and kernels made the numbers: the same seeded run on another CPU "
                "differs in the last digits, so compare machines before comparing figures.",
            )
        )
    return Section(
        "reproducibility",
        "Reproducibility",
        f"Plan hash {state.plan_hash or '–'}, seed {plan.seed}. The exact plan follows.",
        tables=tables,
        code=yaml.safe_dump(dump_plan(plan), sort_keys=False, allow_unicode=True),
    )


def _machines(plan: Plan, state: LadderState) -> list[list[str]]:
    """One row per distinct machine record: the climb's, then each arm that trained elsewhere."""
    seen: dict[str, list[str]] = {}

    def add(who: str, record: MachineRecord | None) -> None:
        if record is None:
            return
        env = " ".join(f"{k}={v}" for k, v in record.env.items())
        row = [
            record.cpu + (f" ({' '.join(record.cpu_flags)})"),
            record.torch_cpu_capability + (f"; {env}" if env else ""),
            record.blas,
            record.onednn,
            str(record.threads),
            str(record.deterministic).lower(),
        ]
        key = json.dumps(row)
        if key in seen:
            seen[key][0] += f", {who}"
        else:
            seen[key] = [who, *row]

    add("the climb", state.machine)
    for i, stage in enumerate(plan.stages):
        rec = state.stage(stage.name)
        for arm, arm_rec in (rec.arms if rec else {}).items():
            if arm_rec.train is not None and arm_rec.train.machine:
                add(f"{i} {stage.name}/{arm}", MachineRecord.from_json(arm_rec.train.machine))
    return list(seen.values())


# --- writing -----------------------------------------------------------------------------------


def to_markdown(report: Report) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "<br>") or " "

    lines = [f"# {report.title}", "", f"**{report.answer}**", ""]
    lines += [f"- {k}: `{v}`" for k, v in report.facts] + [""]
    for s in report.sections:
        lines += [f"## {s.title}", ""]
        if s.intro:
            lines += [s.intro, ""]
        for t in s.tables:
            if t.caption:
                lines += [t.caption, ""]
            lines.append("| " + " | ".join(t.columns) + " |")
            lines.append("|" + "---|" * len(t.columns))
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows]
            lines.append("")
        lines += [f"- {item}" for item in s.items]
        if s.items:
            lines.append("")
        for f in s.figures:
            lines += [f"_Figure (HTML report and `plots/{f.name}.svg`): {f.caption}_", ""]
        if s.code:
            lines += ["<details><summary>plan</summary>", "", "```yaml", s.code.rstrip(), "```"]
            lines += ["", "</details>", ""]
    return "\n".join(lines)


def to_html(report: Report) -> str:
    from jinja2 import Environment
    from markupsafe import Markup

    env = Environment(autoescape=True, keep_trailing_newline=True)
    template = env.from_string(files("tunegate").joinpath("resources/report.html.j2").read_text())
    verdict = report.answer.split(" ")[0].lower()
    return template.render(
        report=report,
        verdict=verdict,
        svg=lambda f: Markup(f.svg),  # our own matplotlib output, not user text
    )


def report_file(run_dir: Path, fmt: str) -> Path:
    """Where a run's report in `fmt` (html, md) is written."""
    return run_dir / REPORT_DIR / f"report.{fmt}"


def write(run_dir: Path, formats: tuple[str, ...] = ("html", "md")) -> dict[str, Path]:
    """Write the report (and its figures as SVG files) under `run_dir/report/`; returns the
    paths written. Each file is replaced atomically."""
    report = build(run_dir)
    out = run_dir / REPORT_DIR
    written: dict[str, Path] = {}
    for f in report.figures:
        path = out / "plots" / f"{f.name}.svg"
        atomic_write_text(path, f.svg)
    render = {"html": to_html, "md": to_markdown}
    for fmt in formats:
        written[fmt] = report_file(run_dir, fmt)
        atomic_write_text(written[fmt], render[fmt](report))
    return written
