"""Does a stage's p-value gate call one lucky training run an effect? A/A and A/B, by seeds.

The original plan trains each arm once. Two runs of the same arm on the same data differ: the
seed sets the data order, the LoRA init and the sampling, and a run that happens to land better
is better on every test item at once. One exact McNemar test per item pair sees that luck as an
effect. With `seeds: 2` a stage trains each arm twice; tunegate's gate then takes the larger of
the exact sign test on the per-item seed means (McNemar's generalisation) and the run-aware t
(`stats.seeded_difference`: the items' and the runs' variance, Satterthwaite df). This measures
what each rule does.

Model (probit): item i, arm a, seed s passes when

    √ρ·z[i] + √(1−ρ)·e[a,s,i] > −Φ⁻¹(b) − v[a,s] − effect[a]

b = 0.5 the base rate; z: the item's difficulty, shared by every run (ρ = 0.5); e: the run's
own draw on the item; v[a,s] ~ N(0, τ²): the run's training luck on every item (τ = 0: none).
A/A: no effect; A/B: the experiment's rate is higher by +0.15. GO: the pilot's gates, a gain
> 0.10 and p < 0.05 with a gain. Rules compared:

- one run per arm: the first seed only, exact McNemar (the original plan);
- seed means, items only: the sign test on the per-item means over 2 seeds, no seed variance;
- tunegate: the larger of that and the run-aware t.

The first VERIFY replicates of every cell also go through `analysis.analyze` and
`gates.evaluate_gates` (the ladder's own code), asserting the same verdict.

    python bench/seed_noise.py [--reps 20000]

Writes bench/results/seed_noise.json; prints a Markdown table. Exits 1 if tunegate's rule has an
A/A false-GO rate above 5 % in any cell.
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
SEEDS = 2
ITEMS = (15, 60)  # the example pilot's test items; a larger pilot
RHO = 0.5
TAUS = (0.0, 0.15, 0.3, 0.5)  # training luck per run, probit scale
EFFECT = 0.15
VERIFY = 20  # analyze() bootstraps its intervals: ~0.3 s a replicate
GATES = Gates(min_improvement=0.10, max_p_value=0.05)
METRIC = "functional_correctness"


def sign_table(n_max: int) -> np.ndarray:
    """p[n, k]: the exact two-sided binomial p with k of n non-zero differences positive."""
    table = np.ones((n_max + 1, n_max + 1))
    for n in range(1, n_max + 1):
        k = np.arange(n + 1)
        table[n, : n + 1] = np.minimum(1.0, 2 * sps.binom.cdf(np.minimum(k, n - k), n, 0.5))
    return table


def draw(rng: np.random.Generator, reps: int, items: int, tau: float, effect: float) -> np.ndarray:
    """Pass/fail (reps, arm, seed, item) as 0/1."""
    shift = sps.norm.ppf(0.5 + effect) if effect else 0.0
    z = rng.standard_normal((reps, 1, 1, items))
    e = rng.standard_normal((reps, 2, SEEDS, items))
    v = tau * rng.standard_normal((reps, 2, SEEDS, 1))
    arm_shift = np.array([0.0, shift])[None, :, None, None]
    latent = np.sqrt(RHO) * z + np.sqrt(1 - RHO) * e
    return (latent > -v - arm_shift).astype(float)


def seeded_p(y: np.ndarray) -> np.ndarray:
    """`stats.seeded_difference`'s p, vectorised over replicates: y is (reps, arm, seed, item)."""
    _, _, seeds, n = y.shape
    d = y[:, 1].mean(1) - y[:, 0].mean(1)  # (reps, item)
    item_part = d.var(1, ddof=1) / n
    run_means = y.mean(3)  # (reps, arm, seed)
    ms_run = ((run_means - run_means.mean(2, keepdims=True)) ** 2).sum((1, 2)) / (2 * (seeds - 1))
    item_means = y.mean(2, keepdims=True)
    resid = y - item_means - run_means[..., None] + y.mean((2, 3), keepdims=True)
    df_res = 2 * (seeds - 1) * (n - 1)
    ms_res = (resid**2).sum((1, 2, 3)) / df_res
    k = 2 / seeds
    seed_var = ms_run - ms_res / n
    seed_var = np.where(seed_var > 1e-12 * np.maximum(1.0, ms_run), seed_var, 0.0)
    variance = item_part + k * seed_var
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = variance**2 / (
            item_part**2 / (n - 1)
            + (k * ms_run) ** 2 / (2 * (seeds - 1))
            + (k * ms_res / n) ** 2 / df_res
        )
        df = np.where(seed_var > 0, sat, n - 1)
        t = np.abs(d.mean(1)) / np.sqrt(variance)
        p = np.where(variance > 0, 2 * sps.t.sf(t, df), np.where(d.mean(1) == 0, 1.0, np.nan))
    return p


def decide(y: np.ndarray, table: np.ndarray) -> dict[str, np.ndarray]:
    def sign_p(d: np.ndarray) -> np.ndarray:
        up, down = (d > 0).sum(1), (d < 0).sum(1)
        return table[up + down, up]

    first = y[:, 1, 0] - y[:, 0, 0]  # one run per arm
    means = y[:, 1].mean(1) - y[:, 0].mean(1)
    gain_one, gain = first.mean(1), means.mean(1)
    p_items = sign_p(means)
    p_rule = np.maximum(p_items, seeded_p(y))  # NaN (no run-aware p) stays NaN: no GO
    effect = GATES.min_improvement
    return {
        "one run per arm": (gain_one > effect) & (sign_p(first) < 0.05),
        "seed means, items only": (gain > effect) & (p_items < 0.05),
        "tunegate": (gain > effect) & (p_rule < 0.05),
    }


def verify(y: np.ndarray, go: np.ndarray) -> int:
    """The first replicates through the ladder's own analysis and gates."""
    n = y.shape[3]
    arm = ArmEvidence(trained=True, saved_and_reloaded=True, expected_items=n)
    for r in range(min(VERIFY, len(y))):
        rows = [
            Row(f"i{i}", role, "pilot", {METRIC: float(y[r, a, s, i])}, f"sim:{r}", seed=40 + s)
            for a, role in enumerate(("control", "experiment"))
            for s in range(SEEDS)
            for i in range(n)
        ]
        analysis = analyze(rows, primary=METRIC, binary={METRIC: True})
        ev = StageEvidence(arms={"control": arm, "experiment": arm})
        ev.primary, ev.seeds = analysis.primary, analysis.seeds
        verdict, results = evaluate_gates(GATES, ev)
        assert (verdict == "PASS") == bool(go[r]), (r, verdict, [str(x) for x in results])
    return min(VERIFY, len(y))


def rate(count: int, reps: int) -> dict[str, Any]:
    low, high = proportion_confint(count, reps, alpha=0.05, method="beta")
    return {"rate": count / reps, "ci95": [float(low), float(high)], "count": int(count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    table = sign_table(max(ITEMS))
    cells = []
    for items in ITEMS:
        for tau in TAUS:
            for effect in (0.0, EFFECT):
                y = draw(rng, args.reps, items, tau, effect)
                go = decide(y, table)
                checked = verify(y, go["tunegate"])
                cells.append(
                    {
                        "items": items,
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
        "design": f"{SEEDS} seeds per arm, base rate 0.5, ρ = {RHO}, items {list(ITEMS)}",
        "cells": cells,
    }
    out = HERE / "results" / "seed_noise.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    rules = ("one run per arm", "seed means, items only", "tunegate")
    print(f"{report['design']}; {args.reps} replicates a cell\n")
    print("| items | τ (training luck per run) | truth | " + " GO | ".join(rules) + " GO |")
    print("|---|---|---|" + "---|" * len(rules))
    for c in cells:
        truth = "A/A" if c["effect"] == 0 else f"A/B +{c['effect']:.2f}"

        def show(r: dict[str, Any]) -> str:
            return f"{r['rate']:.1%} [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}]"

        print(
            f"| {c['items']} | {c['tau']} | {truth} | "
            + " | ".join(show(c[rule]) for rule in rules)
            + " |"
        )
    worst = max(c["tunegate"]["rate"] for c in cells if c["effect"] == 0)
    if worst > 0.05:
        print(f"tunegate's A/A false-GO rate {worst:.1%} > 5 %", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
