"""Paired statistics: every comparison is control vs experiment on the same items.

For each metric, on the items both arms scored (paired by id):
- **tests**: the paired t-test; Wilcoxon signed-rank (exact for n ≤ 50 without ties or zero
  differences, else the normal approximation with continuity correction, as R's `wilcox.test`);
  the exact McNemar / sign test (a binomial test on the pairs that differ); a paired permutation
  test of the mean difference (exact sign-flip enumeration up to 2^16 arrangements, else 10,000
  seeded resamples). One is the metric's *primary* test — by default McNemar for binary metrics
  and the t-test for continuous ones; the plan may choose another — and gives `p_value`; the
  others are reported alongside.
- **intervals**: the mean difference's 95 % CI (t for continuous, a paired BCa bootstrap for
  binary, both reported), the relative improvement's bootstrap CI, and each arm's rate with a
  Wilson interval for binary metrics.
- **effect sizes**: Cohen's d_z = mean(d) / sd(d), the paired-design effect the tests see, with
  an exact CI from the noncentral t; d_av = mean(d) / mean of the two arms' SDs (Lakens 2013),
  comparable with between-subject effects, and Hedges' g_av (d_av with the small-sample
  correction J = 1 − 3 / (4(n − 1) − 1)).

Degenerate data never becomes a silent NaN: n = 0 or 1, zero variance and constant differences
give None with a note saying why.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

# numpy, scipy and statsmodels are imported by the functions that compute: the records below are
# read by every command (`status`, `plan`), which must not pay their second of imports.

TestName = Literal["t", "wilcoxon", "mcnemar", "sign", "permutation"]
TESTS: tuple[str, ...] = ("t", "wilcoxon", "mcnemar", "sign", "permutation")
BOOTSTRAP_RESAMPLES = 9_999  # BCa needs many; 9,999 keeps a 95 % bound's Monte Carlo error small
PERMUTATION_RESAMPLES = 10_000
EXACT_PERMUTATION_MAX_N = 16  # 2^16 = 65,536 sign flips: exact and still fast


@dataclass
class Comparison:
    metric: str
    n: int
    # None only when n = 0 (no item has a value in both arms): a mean of nothing is not NaN.
    control_mean: float | None
    experiment_mean: float | None
    difference: float | None  # experiment − control, absolute (0.10 = 10 points on a rate)
    relative: float | None  # difference / control mean; None when control is 0
    test: str  # the primary test, which gives p_value
    p_value: float | None
    ci95: tuple[float, float] | None  # of the mean difference (t for continuous, BCa for binary)
    d_z: float | None  # mean(d) / sd(d): the paired effect the tests see
    notes: list[str] = field(default_factory=list)
    p_adjusted: float | None = None  # Holm across its family (secondary metrics, scenarios)
    binary: bool = False
    tests: dict[str, float | None] = field(default_factory=dict)  # every test's p
    bootstrap_ci95: tuple[float, float] | None = None  # of the mean difference
    relative_ci95: tuple[float, float] | None = None
    d_z_ci95: tuple[float, float] | None = None  # exact, noncentral t
    d_av: float | None = None  # mean(d) / mean(sd_c, sd_e)
    g_av: float | None = None  # d_av × Hedges' J
    g_av_ci95: tuple[float, float] | None = None  # BCa bootstrap
    control_rate_ci95: tuple[float, float] | None = None  # Wilson, binary metrics
    experiment_rate_ci95: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def min_exact_p(n: int) -> float:
    """Smallest two-sided p any exact paired test can reach on n items (all pairs one way)."""
    return min(1.0, 2 * 0.5**n) if n > 0 else 1.0


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a rate (statsmodels); None for n = 0."""
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return None
    lo, hi = proportion_confint(successes, n, alpha=1 - level, method="wilson")
    return float(lo), float(hi)


def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper–Pearson) interval of a rate; None for n = 0."""
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return None
    lo, hi = proportion_confint(successes, n, alpha=1 - level, method="beta")
    return float(lo), float(hi)


def paired_t(d: np.ndarray) -> float | None:
    from scipy import stats as sps

    if d.size < 2 or _sd(d) == 0:
        return None
    return float(sps.ttest_1samp(d, 0.0).pvalue)


def wilcoxon(d: np.ndarray) -> float | None:
    """Signed-rank test, zero differences dropped (R's default); exact when n ≤ 50 without ties
    or zeros, else normal approximation with continuity correction (what R falls back to)."""
    import numpy as np
    from scipy import stats as sps

    nonzero = d[d != 0]
    if nonzero.size == 0:
        return 1.0 if d.size else None
    ties = np.unique(np.abs(nonzero)).size < nonzero.size
    exact = nonzero.size <= 50 and not ties and nonzero.size == d.size
    result = sps.wilcoxon(
        nonzero,
        zero_method="wilcox",
        correction=not exact,
        method="exact" if exact else "approx",
    )
    return float(result.pvalue)


def sign_test(d: np.ndarray) -> float | None:
    """Exact binomial test on the signs of the non-zero differences (for a binary metric this
    is the exact McNemar test: the discordant pairs)."""
    from scipy import stats as sps

    up, down = int((d > 0).sum()), int((d < 0).sum())
    if up + down == 0:
        return 1.0 if d.size else None
    return float(sps.binomtest(up, up + down, 0.5).pvalue)


def permutation(d: np.ndarray, seed: int = 0) -> float | None:
    """Paired permutation test of the mean difference: under H0 each pair's sign is a coin
    flip. Exact enumeration of every sign pattern up to n = 16; beyond, 10,000 seeded random
    patterns with the (count + 1) / (R + 1) estimate, which never reports p = 0. Written out
    (not scipy's `permutation_test`): scipy builds the 2^n pairings in Python, 80 ms at n = 15,
    and the gate simulation runs thousands of these."""
    import numpy as np

    if d.size < 2 or not np.any(d != 0):
        return 1.0 if d.size else None
    observed = abs(float(d.mean()))
    tolerance = 1e-12 * max(1.0, observed)  # float noise must not drop the observed pattern
    if d.size <= EXACT_PERMUTATION_MAX_N:
        means = np.abs(_sign_patterns(d.size) @ d) / d.size
        return float(np.mean(means >= observed - tolerance))
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(PERMUTATION_RESAMPLES, d.size))
    hits = int(np.sum(np.abs(signs @ d) / d.size >= observed - tolerance))
    return (hits + 1) / (PERMUTATION_RESAMPLES + 1)


@functools.cache
def _sign_patterns(n: int) -> np.ndarray:
    """All 2^n patterns of ±1, one per row."""
    import numpy as np

    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    return 1.0 - 2.0 * bits


def _sd(x: np.ndarray) -> float:
    import numpy as np

    if x.size < 2:
        return 0.0
    sd = float(x.std(ddof=1))
    # Float noise around a constant (0.3 − 0.2 ≠ 0.2 − 0.1) is not variance.
    return 0.0 if sd <= 1e-12 * max(1.0, float(np.abs(x).max())) else sd


def d_z_interval(d_z: float, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Exact CI of d_z: invert the noncentral t (t = d_z √n, df = n − 1)."""
    from scipy import optimize
    from scipy import stats as sps

    if n < 3 or not math.isfinite(d_z):
        return None
    t, df, root = d_z * math.sqrt(n), n - 1, math.sqrt(n)
    tail = (1 - level) / 2

    def cdf(nc: float) -> float:
        value = float(sps.nct.cdf(t, df, nc))
        return value if math.isfinite(value) else (0.0 if nc > t else 1.0)  # far tails

    def solve(p: float) -> float:
        # cdf falls as nc rises: step outward from t until the root is bracketed.
        lo, hi = t - 1.0, t + 1.0
        while cdf(lo) < p:
            lo -= 1.0
        while cdf(hi) > p:
            hi += 1.0
        return float(optimize.brentq(lambda nc: cdf(nc) - p, lo, hi, xtol=1e-12)) / root

    return solve(1 - tail), solve(tail)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    import numpy as np

    return np.mean(y - x, axis=axis)


def _relative(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        base = np.mean(x, axis=axis)
        return (np.mean(y, axis=axis) - base) / base


def _g_av(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    import numpy as np

    n = x.shape[axis]
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = (np.std(x, ddof=1, axis=axis) + np.std(y, ddof=1, axis=axis)) / 2
        return np.mean(y - x, axis=axis) / spread * (1 - 3 / (4 * (n - 1) - 1))


def _bootstrap(
    c: np.ndarray, e: np.ndarray, statistic: Any, seed: int
) -> tuple[float, float] | None:
    import numpy as np
    from scipy import stats as sps

    if c.size < 3:
        return None
    # BCa divides by the jackknife's spread: degenerate data warns, then gives NaN bounds.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            result = sps.bootstrap(
                (c, e),
                statistic,
                paired=True,
                vectorized=True,
                n_resamples=BOOTSTRAP_RESAMPLES,
                method="BCa",
                random_state=seed,
            )
        except (ValueError, FloatingPointError):
            return None
    lo, hi = result.confidence_interval
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None  # BCa is undefined on degenerate resamples (all equal): no interval
    return float(lo), float(hi)


def compare(
    metric: str,
    control: list[float],
    experiment: list[float],
    *,
    binary: bool,
    test: str | None = None,
    seed: int = 0,
    intervals: bool = True,
) -> Comparison:
    """Every paired test, interval and effect size for one metric; `test` picks the primary.
    `intervals=False` skips the bootstrap and noncentral-t intervals (about 10 ms of a call):
    for simulations that only need the p-value and the difference."""
    import numpy as np

    c, e = _paired_values(metric, control, experiment)
    primary = test or ("mcnemar" if binary else "t")
    if primary not in TESTS:
        raise ValueError(f"{metric}: unknown test '{primary}' (known: {', '.join(TESTS)})")
    n = int(c.size)
    if n == 0:
        return Comparison(
            metric, 0, None, None, None, None, primary, None, None, None,
            ["no item has a value in both arms"], binary=binary,
        )  # fmt: skip
    d = e - c
    cm, em, md = float(c.mean()), float(e.mean()), float(d.mean())
    sd = _sd(d)
    notes = _degenerate_notes(n, sd, md)
    ps = _p_values(d, sd, md, seed)
    if binary:
        ps["mcnemar"] = ps["sign"]  # the exact McNemar test is the sign test on 0/1 pairs
    elif primary == "mcnemar":
        raise ValueError(f"{metric}: McNemar's test needs a binary (0/1) metric")
    d_z = md / sd if sd > 0 else None
    ci = _t_interval(md, sd, n)
    varies = intervals and bool(np.any(d != 0))
    boot = _bootstrap(c, e, _mean_difference, seed) if varies else None
    rel_ci = _bootstrap(c, e, _relative, seed) if varies and cm != 0 else None
    mean_sd = (_sd(c) + _sd(e)) / 2
    d_av = md / mean_sd if mean_sd > 0 else None
    g_av = d_av * (1 - 3 / (4 * (n - 1) - 1)) if d_av is not None and n > 2 else None
    if n > 0 and min_exact_p(n) > 0.05:
        notes.append(f"n = {n}: no exact paired test can reach p < 0.05 (min {min_exact_p(n):.3g})")
    return Comparison(
        metric=metric,
        n=n,
        control_mean=cm,
        experiment_mean=em,
        difference=md,
        relative=md / cm if cm != 0 else None,
        test=_label(primary, c, e),
        p_value=ps.get(primary),
        ci95=ci if not binary else (boot or ci),
        d_z=d_z,
        notes=notes,
        binary=binary,
        tests=ps,
        bootstrap_ci95=boot,
        relative_ci95=rel_ci,
        d_z_ci95=d_z_interval(d_z, n) if intervals and d_z is not None else None,
        d_av=d_av,
        g_av=g_av,
        g_av_ci95=_bootstrap(c, e, _g_av, seed) if intervals and g_av is not None else None,
        control_rate_ci95=wilson(int(c.sum()), n) if binary else None,
        experiment_rate_ci95=wilson(int(e.sum()), n) if binary else None,
    )


def _paired_values(
    metric: str, control: list[float], experiment: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    c = np.asarray(control, dtype=float)
    e = np.asarray(experiment, dtype=float)
    if c.shape != e.shape:
        raise ValueError(f"{metric}: {len(c)} control vs {len(e)} experiment values")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(e))):
        raise ValueError(f"{metric}: a value is NaN or infinite")
    return c, e


def _degenerate_notes(n: int, sd: float, md: float) -> list[str]:
    """Why n pair differences (spread sd, mean md) cannot be tested, if they cannot."""
    if n == 1:
        return ["n = 1: one pair cannot be tested; the difference is descriptive"]
    if sd == 0:
        return [
            "every pair differs by the same amount: d_z and the t-test are undefined"
            if md != 0
            else "no pair differs: nothing to test"
        ]
    return []


def _p_values(d: np.ndarray, sd: float, md: float, seed: int) -> dict[str, float | None]:
    """Every paired test's p-value on the differences `d`; None where a test is undefined."""
    n = d.size
    return {
        "t": paired_t(d) if sd > 0 else (1.0 if n > 1 and md == 0 else None),
        "wilcoxon": wilcoxon(d) if n > 1 else None,
        "sign": sign_test(d) if n > 1 else None,
        "permutation": permutation(d, seed) if n > 1 else None,
    }


def _t_interval(md: float, sd: float, n: int) -> tuple[float, float] | None:
    """The t-based 95 % interval of the mean difference; None where it is undefined."""
    from scipy import stats as sps

    if n > 1 and sd > 0:
        half = float(sps.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        return (md - half, md + half)
    return None


def _label(test: str, c: np.ndarray, e: np.ndarray) -> str:
    if test == "mcnemar":
        b = int(((c == 1) & (e == 0)).sum())  # control right, experiment wrong
        w = int(((c == 0) & (e == 1)).sum())  # experiment right, control wrong
        return f"exact McNemar (discordant {w} for / {b} against)"
    return {
        "t": "paired t",
        "wilcoxon": "Wilcoxon signed-rank",
        "sign": "exact sign test",
        "permutation": "paired permutation",
    }[test]


def holm(comparisons: list[Comparison]) -> None:
    """Holm–Bonferroni across the given comparisons, in place (p_adjusted)."""
    from statsmodels.stats.multitest import multipletests

    tested = [c for c in comparisons if c.p_value is not None]
    if not tested:
        return
    adjusted = multipletests([c.p_value for c in tested], method="holm")[1]
    for comp, p in zip(tested, adjusted, strict=True):
        comp.p_adjusted = float(p)


def clustered_difference(
    differences: list[float], clusters: list[str]
) -> tuple[float, float, float] | None:
    """Mean difference pooled over scenarios with a cluster-robust SE (statsmodels OLS on an
    intercept, clusters = scenarios): (mean, se, two-sided p on G − 1 df). Items of one scenario
    are not independent draws; treating them as such understates the SE. None with fewer than 2
    clusters."""
    import numpy as np
    import statsmodels.api as sm
    from scipy import stats as sps

    groups = sorted(set(clusters))
    if len(groups) < 2:
        return None
    y = np.asarray(differences, dtype=float)
    codes = np.array([groups.index(g) for g in clusters])
    fit = sm.OLS(y, np.ones((y.size, 1))).fit(
        cov_type="cluster",
        cov_kwds={"groups": codes, "use_correction": True, "df_correction": True},
    )
    mean, se = float(fit.params[0]), float(fit.bse[0])
    if se == 0:
        return mean, 0.0, math.nan
    t = mean / se
    p = float(2 * sps.t.sf(abs(t), len(groups) - 1))
    return mean, se, p


@dataclass
class SeededDifference:
    """Control vs experiment when each arm was trained with several seeds and every run scored
    the same items: the mean difference with a standard error that holds both the items' and
    the seeds' variance (`seeded_difference`), and each arm's run means (the A/A spread)."""

    metric: str
    items: int
    difference: float  # experiment − control, over every run of each arm
    se: float
    df: float  # Satterthwaite
    p_value: float | None  # two-sided t on `df`; None when se is 0
    item_variance: float  # the items' share of Var(difference)
    seed_variance: float  # σ²_seed: the between-run variance of one arm beyond item noise
    run_means: dict[str, dict[int, float]]  # role → seed → that run's mean
    notes: list[str] = field(default_factory=list)

    @property
    def spread(self) -> dict[str, float]:
        """Per arm, its best run's mean minus its worst run's: seed noise in the real setup."""
        return {r: max(m.values()) - min(m.values()) for r, m in self.run_means.items()}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def seeded_difference(
    metric: str,
    control: dict[int, list[float]],
    experiment: dict[int, list[float]],
) -> SeededDifference | None:
    """The arms' difference when each trained with several seeds (seed → its run's scores on
    the same n items, in the same order).

    The model is a crossed random-effects one: y[arm, seed, item] = μ_arm + u_item +
    w_arm,item + v_arm,seed + e. The difference of the arm means then has variance
    2σ²_w/n + σ²_e(1/S_c + 1/S_e)/n + σ²_v(1/S_c + 1/S_e): the first two are what the spread of
    the per-item (seed-averaged) differences estimates, the last is the runs' own noise, which
    those differences cannot see (a seed that helps every item moves them all alike). σ²_v is
    estimated by the ANOVA method of moments: the spread of one arm's run means, less the
    item noise in them (MS_run − MS_residual / n), floored at 0. These are the REML estimates
    of the same model when the design is balanced and they are positive (the tests compare
    with statsmodels' MixedLM), and the t has Satterthwaite's degrees of freedom: with 2 seeds
    per arm and a real seed variance, they fall toward 2, the honest price of 4 runs.
    None without two seeds in each arm and two items."""
    import numpy as np
    from scipy import stats as sps

    runs = {"control": control, "experiment": experiment}
    if any(len(r) < 2 for r in runs.values()):
        return None
    y = {role: np.asarray([r[s] for s in sorted(r)], dtype=float) for role, r in runs.items()}
    n = y["control"].shape[1]
    if n < 2 or any(a.shape[1] != n for a in y.values()):
        return None
    k = sum(1 / a.shape[0] for a in y.values())  # 1/S_c + 1/S_e
    d = y["experiment"].mean(axis=0) - y["control"].mean(axis=0)  # per item, seed-averaged
    item_part = float(d.var(ddof=1)) / n
    ss_run = ss_res = 0.0
    df_run = df_res = 0
    for a in y.values():
        seeds = a.shape[0]
        run_means, item_means = a.mean(axis=1), a.mean(axis=0)
        ss_run += float(((run_means - run_means.mean()) ** 2).sum())
        resid = a - item_means[None, :] - run_means[:, None] + a.mean()
        ss_res += float((resid**2).sum())
        df_run += seeds - 1
        df_res += (seeds - 1) * (n - 1)
    ms_run, ms_res = ss_run / df_run, ss_res / df_res
    seed_var = ms_run - ms_res / n
    # Float noise around 0 (two runs' identical means) is not variance between seeds.
    seed_var = seed_var if seed_var > 1e-12 * max(1.0, ms_run) else 0.0
    variance = item_part + k * seed_var
    notes = []
    diff = float(y["experiment"].mean() - y["control"].mean())
    se = math.sqrt(variance)
    if se == 0:  # as the paired t: no difference is p = 1, a constant one is untestable
        return SeededDifference(
            metric, n, diff, 0.0, float(n - 1), 1.0 if diff == 0 else None, 0.0, 0.0,
            _run_means(runs), ["every run scores every item alike: nothing varies"],
        )  # fmt: skip
    if seed_var > 0:
        terms = [(item_part, n - 1), (k * ms_run, df_run), (k * ms_res / n, df_res)]
        df = variance**2 / sum(t**2 / f for t, f in terms)
    else:
        df = float(n - 1)
        notes.append("no seed variance beyond item noise was measured: the items' t alone")
    return SeededDifference(
        metric=metric,
        items=n,
        difference=diff,
        se=se,
        df=float(df),
        p_value=float(2 * sps.t.sf(abs(diff / se), df)),
        item_variance=item_part,
        seed_variance=seed_var,
        run_means=_run_means(runs),
        notes=notes,
    )


def _run_means(runs: dict[str, dict[int, list[float]]]) -> dict[str, dict[int, float]]:
    import numpy as np

    return {role: {s: float(np.mean(r[s])) for s in sorted(r)} for role, r in runs.items()}
