"""Paired statistics: every comparison is control vs experiment on the same items.

Binary metrics (pass/fail) use the exact McNemar test (a binomial test on the discordant pairs);
continuous metrics use the paired t-test, with the Wilcoxon signed-rank test alongside. Effect
size is Cohen's d_z (mean difference / SD of differences), the paired-design effect size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests


@dataclass
class Comparison:
    metric: str
    n: int
    control_mean: float
    experiment_mean: float
    difference: float  # experiment − control, absolute (0.10 = 10 points on a rate)
    relative: float | None  # difference / control mean; None when control is 0
    test: str
    p_value: float | None
    ci95: tuple[float, float] | None  # of the mean difference
    d_z: float | None
    notes: list[str] = field(default_factory=list)
    p_adjusted: float | None = None  # Holm across secondary metrics

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def min_exact_p(n: int) -> float:
    """Smallest two-sided p any exact paired test can reach on n items (all pairs one way)."""
    return min(1.0, 2 * 0.5**n) if n > 0 else 1.0


def compare(
    metric: str, control: list[float], experiment: list[float], *, binary: bool
) -> Comparison:
    c = np.asarray(control, dtype=float)
    e = np.asarray(experiment, dtype=float)
    if c.shape != e.shape:
        raise ValueError(f"{metric}: {len(c)} control vs {len(e)} experiment values")
    n = int(c.size)
    notes: list[str] = []
    if n == 0:
        return Comparison(
            metric,
            0,
            math.nan,
            math.nan,
            math.nan,
            None,
            "none",
            None,
            None,
            None,
            ["no paired items"],
        )
    d = e - c
    cm, em, md = float(c.mean()), float(e.mean()), float(d.mean())
    relative = md / cm if cm != 0 else None
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if sd <= 1e-12 * max(1.0, abs(md)):
        sd = 0.0  # float noise around a constant difference (0.3 − 0.2 ≠ 0.2 − 0.1 in binary)
    d_z = md / sd if sd > 0 else None
    if sd == 0 and n > 1:
        notes.append("every pair differs by the same amount: d_z and the t-test are undefined")
    ci = None
    if n > 1 and sd > 0:
        half = float(sps.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        ci = (md - half, md + half)
    if binary:
        b = int(((c == 1) & (e == 0)).sum())  # control right, experiment wrong
        w = int(((c == 0) & (e == 1)).sum())  # experiment right, control wrong
        test = f"exact McNemar (discordant {w} for / {b} against)"
        p = float(sps.binomtest(w, b + w, 0.5).pvalue) if b + w > 0 else 1.0
    else:
        test = "paired t"
        if n < 2 or sd == 0:
            p = None if n < 2 else (1.0 if md == 0 else None)
        else:
            p = float(sps.ttest_rel(e, c).pvalue)
            if np.any(d != 0):
                wil = sps.wilcoxon(e, c)
                notes.append(f"Wilcoxon signed-rank p = {float(wil.pvalue):.4g}")
    if n > 0 and min_exact_p(n) > 0.05:
        notes.append(f"n = {n}: no exact paired test can reach p < 0.05 (min {min_exact_p(n):.3g})")
    return Comparison(metric, n, cm, em, md, relative, test, p, ci, d_z, notes)


def holm(comparisons: list[Comparison]) -> None:
    """Holm–Bonferroni across the given comparisons, in place (p_adjusted)."""
    tested = [c for c in comparisons if c.p_value is not None]
    if not tested:
        return
    adjusted = multipletests([c.p_value for c in tested], method="holm")[1]
    for comp, p in zip(tested, adjusted, strict=True):
        comp.p_adjusted = float(p)
