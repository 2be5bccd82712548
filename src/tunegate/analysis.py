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
from tunegate.stats import Comparison, clustered_difference, compare, holm


@dataclass
class Row:
    id: str
    role: str
    scenario: str
    values: dict[str, float | None]
    where: str  # file:line, for messages
    statuses: dict[str, Status] = field(default_factory=dict)  # why a value is None

    def status(self, metric: str) -> Status:
        return self.statuses.get(metric) or status_of(self.values.get(metric), None)


@dataclass
class Analysis:
    primary: Comparison
    secondary: dict[str, Comparison] = field(default_factory=dict)
    per_scenario: dict[str, Comparison] = field(default_factory=dict)  # primary, per scenario
    clustered: dict[str, Any] | None = None  # pooled primary with cluster-robust SE
    excluded: dict[str, int] = field(default_factory=dict)  # metric → pairs left out

    def to_json(self) -> dict[str, Any]:
        return {
            "primary": self.primary.to_json(),
            "secondary": {m: c.to_json() for m, c in self.secondary.items()},
            "per_scenario": {s: c.to_json() for s, c in self.per_scenario.items()},
            "clustered": self.clustered,
            "excluded": self.excluded,
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
            rows.append(
                Row(obj["id"], obj["role"], obj.get("scenario", ""), values, where, statuses)
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
    pairs = pair_rows(rows, names)
    tests = tests or {}
    binary = binary or {}

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
    scenario_of = {i: pairs[i][0].scenario for i in ids}
    scenarios = sorted(set(scenario_of.values()))
    if len(scenarios) > 1:
        analysis.per_scenario = {
            s: comparison(primary, [i for i in ids if scenario_of[i] == s]) for s in scenarios
        }
        holm(list(analysis.per_scenario.values()))
        _add_clustered(analysis, pairs, ids, primary, scenario_of)
    return analysis


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
