"""Does the production stage's p-value gate cry wolf when items come in scenarios? A/A and A/B.

Production pools 15 test items from each of 5 scenarios. Two arms trained on different data
differ per scenario by more than their items do: a training run that happens to be better at SQL
is better on all 15 SQL items at once. Treating the 75 items as independent (one exact McNemar
over all of them) then calls that training noise an effect. tunegate's gate takes the larger of
the exact McNemar p and a cluster-robust t over the scenarios (CR1, G − 1 = 4 df;
`stats.clustered_difference`); this measures what each rule does.

Model (probit): item i of scenario s, arm a, passes when

    √ρ·z[i] + √(1−ρ)·e[i,a] > −Φ⁻¹(b[s]) − u[a,s] − effect[a]

b: the scenario's base rate (0.2 … 0.8: a scenario effect on levels); z: the item's difficulty,
shared by both arms (ρ = 0.5); e: the arm's own draw; u[a,s] ~ N(0, τ²): the arm's training
luck in that scenario (τ = 0: none, the items are independent given the scenario). A/A: no
effect; A/B: the experiment's rate is higher by +0.15 (probit shift that gives it at b = 0.5).
GO: the production gates — the average of the per-scenario gains > 0.10 and p < 0.05 with a
gain. The first VERIFY replicates of every cell also go through `analysis.analyze` and
`gates.evaluate_gates` (the ladder's own code), asserting the same verdict.

    python bench/production_clustering.py [--reps 20000]

Writes bench/results/production_clustering.json; prints a Markdown table. Exits 1 if tunegate's
rule has an A/A false-GO rate above 5 % in any cell.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from tunegate.analysis import Row, analyze
from tunegate.gates import ArmEvidence, StageEvidence, evaluate_gates
from tunegate.plan import Gates

HERE = Path(__file__).resolve().parent
SCENARIOS = 5
ITEMS = 15  # per scenario: the default production stage's test_per_scenario
BASES = np.array([0.2, 0.35, 0.5, 0.65, 0.8])
RHO = 0.5
TAUS = (0.0, 0.15, 0.3, 0.5)  # training luck per arm and scenario, probit scale
EFFECT = 0.15
VERIFY = 25  # analyze() bootstraps its intervals: ~0.3 s a replicate
GATES = Gates(min_improvement=0.10, max_p_value=0.05)


def mcnemar_table(n_max: int) -> np.ndarray:
    """p[n, k]: the exact two-sided McNemar (binomial) p with k of n discordant pairs one way."""
    table = np.ones((n_max + 1, n_max + 1))
    for n in range(1, n_max + 1):
        k = np.arange(n + 1)
        low = np.minimum(k, n - k)
        table[n, : n + 1] = np.minimum(1.0, 2 * sps.binom.cdf(low, n, 0.5))
    return table


def draw(rng: np.random.Generator, reps: int, tau: float, effect: float) -> np.ndarray:
    """Pass/fail (reps, arm, scenario, item) as 0/1."""
    shift = sps.norm.ppf(0.5 + effect) if effect else 0.0
    threshold = -sps.norm.ppf(BASES)[None, None, :, None]
    z = rng.standard_normal((reps, 1, SCENARIOS, ITEMS))
    e = rng.standard_normal((reps, 2, SCENARIOS, ITEMS))
    u = tau * rng.standard_normal((reps, 2, SCENARIOS, 1))
    arm_shift = np.array([0.0, shift])[None, :, None, None]
    latent = np.sqrt(RHO) * z + np.sqrt(1 - RHO) * e
    return (latent > threshold - u - arm_shift).astype(float)


def decide(outcomes: np.ndarray, table: np.ndarray) -> dict[str, np.ndarray]:
    d = outcomes[:, 1] - outcomes[:, 0]  # (reps, scenario, item)
    flat = d.reshape(d.shape[0], -1)
    up, down = (flat > 0).sum(1), (flat < 0).sum(1)
    p_exact = table[up + down, up]
    n = flat.shape[1]
    mean = flat.mean(1)
    sums = (d - mean[:, None, None]).sum(2)  # per scenario
    variance = SCENARIOS / (SCENARIOS - 1) * (sums**2).sum(1) / n**2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / np.sqrt(variance)
    p_cluster = np.where(variance > 0, 2 * sps.t.sf(np.abs(t), SCENARIOS - 1), np.nan)
    p_rule = np.where(np.isnan(p_cluster), p_exact, np.maximum(p_exact, p_cluster))
    gain = d.mean(2).mean(1)  # the average of the per-scenario gains
    effect_gate = gain > GATES.min_improvement
    return {
        "pooled McNemar": effect_gate & (p_exact < 0.05) & (mean > 0),
        "tunegate": effect_gate & (p_rule < 0.05) & (mean > 0),
    }


def verify(outcomes: np.ndarray, go: np.ndarray) -> int:
    """The first replicates through the ladder's own analysis and gates."""
    arm = ArmEvidence(trained=True, saved_and_reloaded=True, expected_items=SCENARIOS * ITEMS)
    for r in range(min(VERIFY, len(outcomes))):
        rows = []
        for s in range(SCENARIOS):
            for i in range(ITEMS):
                for a, role in enumerate(("control", "experiment")):
                    value = {"functional_correctness": float(outcomes[r, a, s, i])}
                    rows.append(Row(f"s{s}-{i}", role, f"s{s}", value, f"sim:{r}"))
        analysis = analyze(
            rows, primary="functional_correctness", binary={"functional_correctness": True}
        )
        ev = StageEvidence(arms={"control": arm, "experiment": arm})
        ev.primary, ev.per_scenario = analysis.primary, analysis.per_scenario
        ev.clustered = analysis.clustered
        verdict, results = evaluate_gates(GATES, ev)
        assert (verdict == "PASS") == bool(go[r]), (r, verdict, [str(x) for x in results])
    return min(VERIFY, len(outcomes))


def rate(count: int, reps: int) -> dict[str, Any]:
    low, high = proportion_confint(count, reps, alpha=0.05, method="beta")
    return {"rate": count / reps, "ci95": [float(low), float(high)], "count": int(count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    table = mcnemar_table(SCENARIOS * ITEMS)
    cells = []
    for tau in TAUS:
        for effect in (0.0, EFFECT):
            outcomes = draw(rng, args.reps, tau, effect)
            go = decide(outcomes, table)
            checked = verify(outcomes, go["tunegate"])
            cells.append(
                {
                    "tau": tau,
                    "effect": effect,
                    "verified": checked,
                    **{rule: rate(int(v.sum()), args.reps) for rule, v in go.items()},
                }
            )
    report = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "reps": args.reps,
        "design": f"{SCENARIOS} scenarios × {ITEMS} items, base rates {BASES.tolist()}, ρ = {RHO}",
        "cells": cells,
    }
    out = HERE / "results" / "production_clustering.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['design']}; {args.reps} replicates a cell\n")
    print("| τ (training luck per scenario) | truth | pooled McNemar GO | tunegate GO |")
    print("|---|---|---|---|")
    for c in cells:
        truth = "A/A" if c["effect"] == 0 else f"A/B +{c['effect']:.2f}"

        def show(r: dict[str, Any]) -> str:
            return f"{r['rate']:.1%} [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}]"

        print(f"| {c['tau']} | {truth} | {show(c['pooled McNemar'])} | {show(c['tunegate'])} |")
    worst = max(c["tunegate"]["rate"] for c in cells if c["effect"] == 0)
    if worst > 0.05:
        print(f"tunegate's A/A false-GO rate {worst:.1%} > 5 %", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
