"""The analysis of one evaluation: per-item results in, every metric's paired comparison out.

Both `tunegate stats` and the ladder's stages run it, so a stage's verdict and a user's rerun
of the statistics on the same `results.jsonl` agree. For each metric, on the items both arms
scored (paired by id): the comparison of `stats.compare` (primary test, the others alongside,
intervals, effect sizes); per scenario when there are several, Holm-adjusted across scenarios;
Holm across the secondary metrics; and, pooling scenarios, a cluster-robust difference (items of
one scenario are not independent draws). The primary metric is pre-registered: one test, no
correction, and it alone decides the p-value gate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunegate.data.pairing import pair_by_id
from tunegate.errors import UserError
from tunegate.score import READABLE_SCHEMAS, RESULTS_SCHEMA, Status, status_of
from tunegate.stats import (
    Comparison,
    SeededDifference,
    clustered_difference,
    compare,
    holm,
    seeded_difference,
)


@dataclass
class Row:
    id: str
    role: str
    scenario: str
    values: dict[str, float | None]
    where: str  # file:line, for messages
    statuses: dict[str, Status] = field(default_factory=dict)  # why a value is None
    seed: int | None = None  # the training seed of the run that scored it (several: replicates)

    def status(self, metric: str) -> Status:
        return self.statuses.get(metric) or status_of(self.values.get(metric), None)


@dataclass
class Analysis:
    primary: Comparison
    secondary: dict[str, Comparison] = field(default_factory=dict)
    per_scenario: dict[str, Comparison] = field(default_factory=dict)  # primary, per scenario
    clustered: dict[str, Any] | None = None  # pooled primary with cluster-robust SE
    excluded: dict[str, int] = field(default_factory=dict)  # metric → pairs left out
    seeds: SeededDifference | None = None  # the primary over several seeds per arm

    def to_json(self) -> dict[str, Any]:
        return {
            "primary": self.primary.to_json(),
            "secondary": {m: c.to_json() for m, c in self.secondary.items()},
            "per_scenario": {s: c.to_json() for s, c in self.per_scenario.items()},
            "clustered": self.clustered,
            "excluded": self.excluded,
            "seeds": self.seeds.to_json() if self.seeds else None,
        }


def load_rows(paths: list[Path]) -> list[Row]:
    """Rows of one or more results files (tunegate.results/1); every problem as file:line."""
    rows: list[Row] = []
    problems: list[str] = []
    for path in paths:
        if not path.is_file():
            raise UserError("results file does not exist", where=str(path))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{where}: invalid JSON ({err.msg})")
                continue
            problem = _check_row(obj)
            if problem:
                problems.append(f"{where}: {problem}")
                continue
            values: dict[str, float | None] = {}
            statuses: dict[str, Status] = {}
            for name, score in obj["metrics"].items():
                value = score.get("value") if isinstance(score, dict) else score
                if value is not None and (
                    not isinstance(value, int | float) or not math.isfinite(float(value))
                ):
                    problems.append(f"{where}: metric '{name}' is {value!r}, not a finite number")
                    continue
                values[name] = None if value is None else float(value)
                status = score.get("status") if isinstance(score, dict) else None
                statuses[name] = status_of(values[name], status)
            seed = obj.get("seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                problems.append(f"{where}: seed {seed!r} is not an integer")
                continue
            rows.append(
                Row(obj["id"], obj["role"], obj.get("scenario", ""), values, where, statuses, seed)
            )
    if problems:
        raise UserError("\n".join(problems[:20]))
    if not rows:
        raise UserError(f"no result rows in {', '.join(map(str, paths))}")
    return rows


def _check_row(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return "expected a JSON object"
    if obj.get("schema", RESULTS_SCHEMA) not in READABLE_SCHEMAS:
        return f"schema '{obj.get('schema')}' is not {' or '.join(READABLE_SCHEMAS)}"
    for key in ("id", "role", "metrics"):
        if key not in obj:
            return f"missing field '{key}'"
    if obj["role"] not in ("control", "experiment"):
        return f"role '{obj['role']}' is neither control nor experiment"
    if not isinstance(obj["metrics"], dict):
        return "'metrics' is not an object"
    return None


def rows_from_results(results: list[dict[str, Any]]) -> list[Row]:
    """Rows as `evaluate.pipeline.score_arm` makes them, for the ladder (already validated)."""
    return [
        Row(
            r["id"],
            r["role"],
            r.get("scenario", ""),
            {m: s["value"] for m, s in r["metrics"].items()},
            f"{r['arm']}:{r['id']}",
            {m: status_of(s["value"], s.get("status")) for m, s in r["metrics"].items()},
            r.get("seed"),
        )
        for r in results
    ]


def pair_rows(rows: list[Row], metrics: list[str]) -> dict[str, tuple[Row, Row]]:
    """Control and experiment row per id; mismatched ids, duplicates and missing metrics are
    errors (an unpaired item would bias every paired test)."""
    by_role: dict[str, dict[str, Row]] = {"control": {}, "experiment": {}}
    for row in rows:
        if row.id in by_role[row.role]:
            first = by_role[row.role][row.id].where
            raise UserError(f"{row.where}: duplicate {row.role} row for '{row.id}' (first {first})")
        by_role[row.role][row.id] = row
    control, experiment = by_role["control"], by_role["experiment"]
    if not control or not experiment:
        missing = "control" if not control else "experiment"
        raise UserError(f"no {missing} rows: give both arms' results")
    pairing = pair_by_id(control.values(), experiment.values(), lambda row: row.id)
    only_c, only_e = sorted(pairing.only_control), sorted(pairing.only_experiment)
    if not pairing.complete:
        parts = [f"{len(only_c)} only in control (e.g. {only_c[0]})"] if only_c else []
        parts += [f"{len(only_e)} only in experiment (e.g. {only_e[0]})"] if only_e else []
        raise UserError("the arms' results do not pair by id: " + "; ".join(parts))
    for name in metrics:
        for row in (*control.values(), *experiment.values()):
            if name not in row.values:
                raise UserError(f"{row.where}: metric '{name}' is missing")
    return {c.id: (c, e) for c, e in pairing.pairs}


def left_out(metric: str, pairs: list[tuple[Row, Row]]) -> str:
    """How many pairs a metric's statistics left out, and why: only pairs where both arms have
    a value are compared, and a pair missing on either side is left out whole."""
    missing = [p for p in pairs if p[0].values[metric] is None or p[1].values[metric] is None]
    parts = []
    for role, side in (("control", 0), ("experiment", 1)):
        counts: dict[str, int] = {}
        for p in missing:
            if p[side].values[metric] is None:
                status = p[side].status(metric).replace("_", " ")
                counts[status] = counts.get(status, 0) + 1
        if counts:
            parts.append(f"{role} " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return f"{len(missing)} of {len(pairs)} pairs left out ({'; '.join(parts)})"


def analyze(
    rows: list[Row],
    *,
    primary: str,
    metrics: list[str] | None = None,
    binary: dict[str, bool] | None = None,
    tests: dict[str, str] | None = None,
    seed: int = 0,
) -> Analysis:
    """Every metric's paired comparison; `binary` says which are 0/1 (default: inferred from
    the values), `tests` the primary test per metric (default: McNemar / paired t)."""
    names = metrics or sorted({m for r in rows for m in r.values})
    if primary not in names:
        raise UserError(f"primary metric '{primary}' is not in the results ({', '.join(names)})")
    tests = dict(tests or {})
    binary = dict(binary or {})
    runs = seed_runs(rows)
    seeded = None
    if runs is not None:
        # Several training runs per arm: each item's score is its mean over the arm's runs (a
        # fraction for a 0/1 metric, whose exact McNemar test becomes the sign test on the
        # per-item differences it generalises), and the seeds' own variance is tested apart.
        for m in names:
            was_binary = binary.get(m, all(r.values.get(m) in (0.0, 1.0, None) for r in rows))
            if (tests.get(m) or ("mcnemar" if was_binary else "t")) == "mcnemar":
                tests[m] = "sign"
            binary[m] = False
        seeded = _seeded(runs, primary)
        rows = _mean_over_seeds(runs, names)
    pairs = pair_rows(rows, names)

    def comparison(name: str, ids: list[str]) -> Comparison:
        c: list[float] = []
        e: list[float] = []
        for i in ids:
            control, experiment = pairs[i][0].values[name], pairs[i][1].values[name]
            if control is not None and experiment is not None:
                c.append(float(control))
                e.append(float(experiment))
        is_binary = binary.get(name, all(v in (0.0, 1.0) for v in c + e) and bool(c))
        result = compare(name, c, e, binary=is_binary, test=tests.get(name), seed=seed)
        if len(c) < len(ids):
            result.notes.append(left_out(name, [pairs[i] for i in ids]))
        return result

    ids = sorted(pairs)
    analysis = Analysis(primary=comparison(primary, ids), excluded=_excluded(pairs, ids, names))
    # The pre-registered primary is a family of one: its corrected p is its p.
    analysis.primary.p_adjusted = analysis.primary.p_value
    analysis.secondary = {m: comparison(m, ids) for m in names if m != primary}
    holm(list(analysis.secondary.values()))
    if runs is not None:
        analysis.seeds = seeded
        seeds = {role: len(by_seed) for role, by_seed in runs.items()}
        analysis.primary.notes.append(
            f"each item's score is its mean over {seeds['control']} control and "
            f"{seeds['experiment']} experiment training runs (seeds)"
        )
        if seeded is None:
            analysis.primary.notes.append(
                "seed variance not estimated: it needs two seeds in each arm and two items "
                "scored by every run"
            )
    scenario_of = {i: pairs[i][0].scenario for i in ids}
    scenarios = sorted(set(scenario_of.values()))
    if len(scenarios) > 1:
        analysis.per_scenario = {
            s: comparison(primary, [i for i in ids if scenario_of[i] == s]) for s in scenarios
        }
        holm(list(analysis.per_scenario.values()))
        _add_clustered(analysis, pairs, ids, primary, scenario_of)
    return analysis


SeedRuns = dict[str, dict[int, dict[str, Row]]]  # role → seed → id → row


def seed_runs(rows: list[Row]) -> SeedRuns | None:
    """The rows as training runs (role → seed → id → row) when an arm has several seeds; None
    when each arm is one run. Every run must score the same items, once each."""
    seeds = {role: {r.seed for r in rows if r.role == role} for role in ("control", "experiment")}
    if all(len(s) <= 1 for s in seeds.values()):
        return None
    runs: SeedRuns = {role: {} for role in seeds}
    for row in rows:
        if row.seed is None:
            raise UserError(f"{row.where}: no seed, while other {row.role} rows have one")
        run = runs[row.role].setdefault(row.seed, {})
        if row.id in run:
            raise UserError(
                f"{row.where}: duplicate {row.role} row for '{row.id}' with seed {row.seed} "
                f"(first {run[row.id].where})"
            )
        run[row.id] = row
    for role, by_seed in runs.items():
        ids = set().union(*(set(run) for run in by_seed.values()))
        for seed, run in sorted(by_seed.items()):
            if missing := sorted(ids - set(run)):
                raise UserError(
                    f"{role} seed {seed} has no row for {len(missing)} item(s) its other "
                    f"seeds scored (e.g. {missing[0]}): every run must score the same items"
                )
    return runs


def _mean_over_seeds(runs: SeedRuns, names: list[str]) -> list[Row]:
    """One row per role and item: each metric's mean over the role's runs; no value when any
    run has none (with that run's reason), so every mean is over the same runs."""
    out = []
    for role, by_seed in runs.items():
        first = by_seed[min(by_seed)]
        for item_id, row in first.items():
            same = [by_seed[s][item_id] for s in sorted(by_seed)]
            values: dict[str, float | None] = {}
            statuses: dict[str, Status] = {}
            for m in names:
                got = [r.values.get(m) for r in same]
                if any(v is None for v in got):
                    values[m] = None
                    statuses[m] = next(r.status(m) for r in same if r.values.get(m) is None)
                else:
                    values[m] = sum(v for v in got if v is not None) / len(got)
                    statuses[m] = "scored"
            where = f"{row.where} (mean of {len(same)} seeds)"
            out.append(Row(item_id, role, row.scenario, values, where, statuses))
    return out


def _seeded(runs: SeedRuns, metric: str) -> SeededDifference | None:
    """The run-aware difference on the items every run of both arms scored."""
    ids = sorted(
        set.intersection(
            *(
                {i for i, r in run.items() if r.values.get(metric) is not None}
                for by_seed in runs.values()
                for run in by_seed.values()
            )
        )
    )
    scores = {
        role: {s: [float(run[i].values[metric]) for i in ids] for s, run in by_seed.items()}  # type: ignore[arg-type]
        for role, by_seed in runs.items()
    }
    return seeded_difference(metric, scores["control"], scores["experiment"])


def _excluded(
    pairs: dict[str, tuple[Row, Row]], ids: list[str], names: list[str]
) -> dict[str, int]:
    """Per metric, the pairs left out because an arm has no value: only metrics that lost any."""
    excluded: dict[str, int] = {}
    for name in names:
        missing = sum(
            1 for i in ids if pairs[i][0].values[name] is None or pairs[i][1].values[name] is None
        )
        if missing:
            excluded[name] = missing
    return excluded


def _add_clustered(
    analysis: Analysis,
    pairs: dict[str, tuple[Row, Row]],
    ids: list[str],
    primary: str,
    scenario_of: dict[str, str],
) -> None:
    """The primary metric pooled over the scenarios with cluster-robust errors, noted on the
    primary comparison."""
    clusters = len(set(scenario_of.values()))
    scored = [
        i
        for i in ids
        if pairs[i][0].values[primary] is not None and pairs[i][1].values[primary] is not None
    ]
    pooled = clustered_difference(
        [pairs[i][1].values[primary] - pairs[i][0].values[primary] for i in scored],  # type: ignore[operator]
        [scenario_of[i] for i in scored],
    )
    if pooled is not None:
        mean, se, p = pooled
        analysis.clustered = {
            "difference": mean,
            "se": se,
            "p_value": None if math.isnan(p) else p,
            "clusters": clusters,
        }
        analysis.primary.notes.append(
            f"pooled over {clusters} scenarios: cluster-robust SE {se:.3g}, "
            f"p = {p:.3g} (G − 1 = {clusters - 1} df)"
        )
