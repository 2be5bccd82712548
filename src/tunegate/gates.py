"""Gates: named criteria with thresholds; each returns pass/fail *and its evidence*.

Health gates (the stage ran correctly) FAIL a stage when they fail; effect gates (the experiment
beat the control) make it INVESTIGATE instead: it ran fine, the effect is too small or uncertain.
Each gate's kind and description, and the path of its check here, are in `tunegate.registry`.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tunegate.plan import Gates
from tunegate.registry import GATES, metric_spec
from tunegate.score import MetricGap
from tunegate.stats import Comparison, SeededDifference

Verdict = Literal["PASS", "INVESTIGATE", "FAIL"]


@dataclass
class GateResult:
    name: str
    passed: bool
    kind: Literal["health", "effect"]
    evidence: str


@dataclass
class ArmEvidence:
    """What the ladder learned about one arm, as the gates read it."""

    trained: bool = False
    error: str | None = None
    steps: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    linear4bit_layers: int = 0
    saved_and_reloaded: bool = False
    smoke_generation: str | None = None
    expected_items: int = 0  # test items of this arm
    # metric → items it failed to run on (sandbox error, judge timeout, it raised): what makes
    # an evaluation incomplete. A metric that does not apply to an item is a result, not a gap.
    failed: dict[str, MetricGap] = field(default_factory=dict)
    not_applicable: dict[str, MetricGap] = field(default_factory=dict)

    @property
    def evaluated_items(self) -> int:
        """Items every metric either scored or found not applicable to."""
        worst = max((g.items for g in self.failed.values()), default=0)
        return self.expected_items - worst if self.failed else self.expected_items


@dataclass
class StageEvidence:
    arms: dict[str, ArmEvidence]
    primary: Comparison | None = None
    per_scenario: dict[str, Comparison] = field(default_factory=dict)
    secondary: dict[str, Comparison] = field(default_factory=dict)
    environment: list[dict[str, Any]] = field(default_factory=list)
    data_checks: list[dict[str, Any]] = field(default_factory=list)
    # Metrics with a value for no item at all, and why ("not applicable: no judge configured",
    # "failed: …"): the report and the console say so instead of a mean.
    no_value: dict[str, str] = field(default_factory=dict)
    # The primary pooled over several scenarios with a cluster-robust SE (`analysis`).
    clustered: dict[str, Any] | None = None
    # The primary over several training seeds per arm, with the seeds' variance (`analysis`).
    seeds: SeededDifference | None = None


def loss_trend(losses: list[tuple[int, float]]) -> tuple[bool, str]:
    """Did the train loss fall? Median of the last third vs the first third: one noisy step
    cannot decide it either way."""
    values = [v for _, v in losses]
    if len(values) < 3:
        return False, f"only {len(values)} logged steps (need ≥ 3)"
    w = max(1, len(values) // 3)
    first, last = statistics.median(values[:w]), statistics.median(values[-w:])
    fell = last < first * 0.99  # at least 1%: below that it is noise, not learning
    return fell, f"median loss first {w} steps {first:.3f} → last {w} steps {last:.3f}"


def _each_arm(
    ev: StageEvidence, check: Callable[[ArmEvidence], tuple[bool, str]]
) -> tuple[bool, str]:
    if not ev.arms:
        return False, "no arm ran"  # a health gate never passes on no evidence
    parts, ok = [], True
    for name, arm in ev.arms.items():
        passed, detail = check(arm)
        ok &= passed
        parts.append(f"{name}: {detail}")
    return ok, "; ".join(parts)


def _environment(ev: StageEvidence, _: Any) -> tuple[bool, str]:
    failed = [c["name"] for c in ev.environment if c["status"] == "FAIL"]
    warned = [c["name"] for c in ev.environment if c["status"] == "WARN"]

    def named(names: list[str], word: str) -> str:
        # Which ones: "1 warning" alone sends the reader scrolling back through the checks.
        return f"{len(names)} {word}" + (f" ({', '.join(names)})" if names else "")

    detail = (
        f"{len(ev.environment)} checks, {named(failed, 'failed')}, "
        f"{named(warned, 'warning' if len(warned) == 1 else 'warnings')}"
    )
    return not failed, detail


def _loaded_in_4bit(ev: StageEvidence, _: Any) -> tuple[bool, str]:
    return _each_arm(ev, lambda a: (a.linear4bit_layers > 0, f"{a.linear4bit_layers} Linear4bit"))


def _loss_decreased(ev: StageEvidence, _: Any) -> tuple[bool, str]:
    def check(a: ArmEvidence) -> tuple[bool, str]:
        if not a.trained:
            return False, f"not trained ({a.error or 'no result'})"
        fell, detail = loss_trend(a.losses)
        if a.eval_loss_before is not None and a.eval_loss_after is not None:
            val_fell = a.eval_loss_after < a.eval_loss_before * 0.99
            detail += f"; val loss {a.eval_loss_before:.3f} → {a.eval_loss_after:.3f}"
            fell = fell and val_fell
        return fell, detail

    return _each_arm(ev, check)


def _model_saved(ev: StageEvidence, _: Any) -> tuple[bool, str]:
    return _each_arm(
        ev,
        lambda a: (
            a.saved_and_reloaded,
            "saved, reloaded"
            if a.saved_and_reloaded
            else f"not reloadable ({a.error or 'missing'})",
        ),
    )


def _generates(ev: StageEvidence, _: Any) -> tuple[bool, str]:
    return _each_arm(
        ev,
        lambda a: (
            bool(a.smoke_generation and a.smoke_generation.strip()),
            f"{len(a.smoke_generation or '')} chars",
        ),
    )


def _evaluation_ran(ev: StageEvidence, _: Any) -> tuple[bool, str]:
    """Every metric ran on every test item of every arm. A metric that does not apply to an
    item (the vulnerability of code that does not parse) is a result and passes; one that
    failed to run (sandbox error, judge timeout, it raised) fails the gate, named with its
    count and reason."""

    def check(a: ArmEvidence) -> tuple[bool, str]:
        detail = f"{a.evaluated_items}/{a.expected_items} items evaluated"
        failures = [f"{m} failed on {g.items} ({g.reasons})" for m, g in a.failed.items()]
        na = [
            f"{m} {g.items}"
            for m, g in a.not_applicable.items()
            if m not in ev.no_value  # said once for the whole stage below
        ]
        if failures:
            detail += ": " + "; ".join(failures)
        if na:
            detail += f" (not applicable: {', '.join(na)})"
        return a.expected_items > 0 and not a.failed, detail

    ok, detail = _each_arm(ev, check)
    whole = "".join(f"; {m}: no value ({why})" for m, why in ev.no_value.items())
    return ok, detail + whole


def _direction(c: Any) -> float:
    """+1 where higher is better, −1 where lower is (vulnerability)."""
    return 1.0 if metric_spec(c.metric).higher_is_better else -1.0


def _gain(c: Any) -> float:
    """The experiment's improvement on a comparison: its difference, in the better direction
    (none when no item has a value in both arms)."""
    return 0.0 if c.difference is None else _direction(c) * c.difference


def _min_improvement(ev: StageEvidence, spec: tuple[float, str]) -> tuple[bool, str]:
    threshold, scale = spec
    if ev.primary is None:
        return False, "no comparison"
    metric = metric_spec(ev.primary.metric)

    def gain(c: Any) -> float | None:
        if scale == "absolute":
            return _gain(c)
        return (
            None
            if c.relative is None
            else (_gain(c) / c.difference * c.relative if c.difference else 0.0)
        )

    def show(v: float) -> str:  # in the metric's own units: points on a rate, 0–10 on a score
        return metric.show_difference(v) if scale == "absolute" else f"{v:+.1%} relative"

    wanted = f"vs > {show(threshold).lstrip('+')}"
    if len(ev.per_scenario) > 1:
        # The original plan's stage 4: "> 10% average across scenarios".
        empty = [s for s, c in ev.per_scenario.items() if c.n == 0]
        if empty:
            return False, f"{metric.name}: no value in both arms in {', '.join(empty)}"
        gains = {s: gain(c) for s, c in ev.per_scenario.items()}
        if any(g is None for g in gains.values()):
            return False, f"{metric.name}: a scenario's control mean is 0 (no relative gain)"
        avg = statistics.fmean(g for g in gains.values() if g is not None)
        per = ", ".join(f"{s} {show(g)}" for s, g in gains.items() if g is not None)
        return avg > threshold, f"{metric.name}: average {show(avg)} ({per}) {wanted}"
    p = ev.primary
    if p.n == 0 or p.control_mean is None or p.experiment_mean is None:
        return False, f"{p.metric}: no test item has a value in both arms"
    g = gain(p)
    if g is None:
        return False, f"{p.metric}: the control's mean is 0, so there is no relative gain"
    return g > threshold, (
        f"{p.metric}: {metric.show(p.control_mean)} → {metric.show(p.experiment_mean)} "
        f"({show(g)}) {wanted}"
    )


# Fewer scenarios than this give a cluster-robust variance too few degrees of freedom (G − 1) to
# mean anything: the effect must then hold in every scenario instead.
MIN_CLUSTERS = 5


def _max_p_value(ev: StageEvidence, threshold: float) -> tuple[bool, str]:
    """The primary metric's pre-registered paired p below the threshold, with a gain.

    Items of one scenario are not independent draws, so with several scenarios the p is the
    larger of the exact paired test's over every item and one that respects the scenarios
    (docs/power.md): from 5 scenarios, the cluster-robust t over them (G − 1 df); with 2–4, the
    weakest scenario's own exact test, with its gain (the effect must hold in every scenario, an
    intersection–union test). A gain carried by one scenario cannot pass as if every item were
    its own experiment. A stage that trained each arm with several seeds also takes the larger
    of that and the run-aware t (`stats.seeded_difference`): a gain one lucky run gives is not
    an effect."""
    p = ev.primary
    value = None if p is None else (p.p_adjusted if p.p_adjusted is not None else p.p_value)
    if p is None or value is None:
        return False, "p-value undefined" + (f" ({'; '.join(p.notes)})" if p else "")
    basis = f"{p.test}, n = {p.n}; pre-registered primary"
    gained = _gain(p) > 0
    if len(ev.per_scenario) >= MIN_CLUSTERS:
        clustered = ev.clustered or {}
        cluster_p = clustered.get("p_value")
        if cluster_p is not None:
            basis = (
                f"the larger of {p.test} p = {value:.4g} over {p.n} items and cluster-robust "
                f"t p = {cluster_p:.4g} over {len(ev.per_scenario)} scenarios"
            )
            value = max(value, cluster_p)
        elif clustered.get("se") == 0:
            basis += f"; every item's difference is equal across {len(ev.per_scenario)} scenarios"
        else:
            return False, f"{p.metric}: no cluster-robust p over the scenarios"
    elif len(ev.per_scenario) > 1:
        per = {s: c.p_value for s, c in ev.per_scenario.items()}
        if any(v is None for v in per.values()):
            missing = ", ".join(s for s, v in per.items() if v is None)
            return False, f"{p.metric}: no p-value in scenario {missing}"
        weakest = max(per, key=lambda s: per[s] or 0.0)
        scenario_p = per[weakest] or 0.0
        basis = (
            f"the larger of {p.test} p = {value:.4g} over {p.n} items and the weakest of "
            f"{len(per)} scenarios' own exact tests, {weakest} p = {scenario_p:.4g}: too few "
            "scenarios to estimate a variance across them, so it must hold in each"
        )
        value = max(value, scenario_p)
        gained = gained and all(_gain(c) > 0 for c in ev.per_scenario.values())
    if ev.seeds is not None:
        # Each arm trained with several seeds: a gain one lucky run could give is no evidence.
        seeded = ev.seeds
        if seeded.p_value is None:
            return False, f"{p.metric}: no run-aware p ({'; '.join(seeded.notes)})"
        runs = " and ".join(f"{len(m)} {r}" for r, m in seeded.run_means.items())
        basis += (
            f"; the larger of it and the run-aware t p = {seeded.p_value:.4g} over {runs} "
            f"training runs, df = {seeded.df:.1f}"
        )
        value = max(value, seeded.p_value)
    return value < threshold and gained, f"{p.metric}: p = {value:.4g} ({basis}) vs < {threshold}"


def _improves(ev: StageEvidence, metrics: list[str]) -> tuple[bool, str]:
    """Each metric shows an improvement, or had none left to make.

    The original plan's "Code Vulnerability shows improvement": the experiment's difference, in
    the metric's better direction, is above 0; a difference of exactly 0 passes only when both
    arms already sit at the metric's best value (no finding in any item, every item right),
    since clean code cannot get cleaner. Any worsening fails, and so does no change with room to
    improve: the gate asks for an improvement, not for "no worse". An effect gate: INVESTIGATE.
    """
    parts, ok = [], True
    for m in metrics:
        c = ev.secondary.get(m) or (ev.primary if ev.primary and ev.primary.metric == m else None)
        if c is None or c.difference is None or c.control_mean is None or c.experiment_mean is None:
            ok = False
            parts.append(
                f"{m}: not measured" + (f" ({ev.no_value[m]})" if m in ev.no_value else "")
            )
            continue
        spec = metric_spec(m)
        means = f"{spec.show(c.control_mean)} → {spec.show(c.experiment_mean)}"
        direction = "" if spec.higher_is_better else ", lower is better"
        gain = _gain(c)
        at_best = c.control_mean == spec.best and c.experiment_mean == spec.best
        if gain > 0:
            parts.append(f"{m}: {means} ({spec.show_difference(c.difference)}{direction})")
        elif gain == 0 and at_best:
            parts.append(f"{m}: {means}, both arms at the best value: nothing to improve")
        else:
            ok = False
            how = "worse" if gain < 0 else "no improvement"
            parts.append(f"{m}: {means} ({spec.show_difference(c.difference)}{direction}: {how})")
    return ok, "; ".join(parts)


def evaluate_gates(gates: Gates, evidence: StageEvidence) -> tuple[Verdict, list[GateResult]]:
    results = []
    crashed = {name: arm.error for name, arm in evidence.arms.items() if arm.error}
    if crashed:
        # Whatever gates the plan chose, a crash is a FAIL: the stage did not run.
        detail = "; ".join(f"{name}: {error}" for name, error in crashed.items())
        results.append(GateResult("ran", False, "health", detail))
    failed_checks = [c for c in evidence.data_checks if c["verdict"] == "fail"]
    if failed_checks:
        detail = "; ".join(f"{c['scope']} {c['name']}: {c['summary']}" for c in failed_checks)
        results.append(GateResult("data_checks", False, "health", detail))
    for name, threshold in gates.model_dump(exclude_none=True).items():
        if threshold is False or name == "improvement":
            continue  # `improvement` says how min_improvement reads; it is not a gate
        gate = GATES[name]  # its kind, and its check below by the registry's path
        if name == "min_improvement":
            threshold = (threshold, gates.improvement)
        passed, detail = gate.load()(evidence, threshold)
        results.append(GateResult(name, bool(passed), gate.kind, detail))
    if any(not r.passed and r.kind == "health" for r in results):
        return "FAIL", results
    if any(not r.passed for r in results):
        return "INVESTIGATE", results
    return "PASS", results
