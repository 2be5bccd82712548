"""Power analysis for the paired designs tunegate's stages run: what a stage *can* detect.

Before a stage spends hours and dollars, `tunegate plan` says the smallest effect it could detect
with 80 % power, for the two tests `tunegate.stats.compare` runs:

- continuous metrics, paired t: the minimum detectable Cohen's d_z (mean difference / SD of the
  differences), from the noncentral t (scipy) — the power statsmodels' `TTestPower`, R's
  `pwr.t.test(type = "paired")` and G*Power's "difference from constant" compute (the tests
  check it against statsmodels; not imported here, as its pandas costs `tunegate plan` 0.4 s);
- binary metrics, exact McNemar (the binomial test on the discordant pairs): the minimum
  detectable gain in pass rate, computed exactly — the binomial distribution of the discordant
  count times the exact test's rejection region on it (Connor 1987's conditional model, without
  his normal approximation).

A binary MDE needs an assumption about *discordance* — how many items the arms disagree on — as
the same gain in pass rate is easier to detect when the experiment only ever turns failures into
passes than when it also breaks items the control passed. By default (`discordant=None`) the
experiment is assumed to break nothing: every discordant pair favours it, so the discordant
proportion equals the gain. That is the most favourable case (for a given gain, the fewest
discordant pairs and all of them one way), so its MDE is a floor: "this stage cannot detect less
than X" holds under any discordance. `discordant=ψ` fixes the proportion of discordant pairs
instead (Connor 1987's parameterisation), e.g. a ψ measured on an earlier stage.

Power counts only rejections in the experiment's favour, as the gates do (`max_p_value` requires
the gain to be positive). Multiple comparisons are planned with Bonferroni (alpha / comparisons):
Holm, which tunegate applies to secondary metrics, rejects whatever Bonferroni rejects, so a
Bonferroni-planned power is a slight underestimate — conservative.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as sps

from tunegate.stats import min_exact_p

# The convention (Cohen 1988): a test planned at 80 % power misses a true effect 1 time in 5.
DEFAULT_POWER = 0.8

BEST_CASE = "the experiment turns failures into passes and breaks no item the control passed"


@dataclass(frozen=True)
class Power:
    """What a stage with `n` paired test items can detect (see `stage_power`)."""

    n: int
    alpha: float  # family-wise, as the plan states it
    comparisons: int
    # Bonferroni-planned alpha (alpha / comparisons): conservative for Holm, which is never less
    # powerful.
    alpha_per_test: float
    power: float  # the target, 0.8 by default
    mde_d_z: float | None  # paired t; None below 2 items, or where no d_z reaches the power
    # Exact McNemar, best case (BEST_CASE): minimum detectable gain in pass rate, absolute
    # (0.47 = 47 points). None when no result can reach alpha_per_test at this n.
    mde_binary: float | None
    min_p: float  # smallest two-sided p an exact paired test reaches at n: 2 · 0.5**n
    feasible: bool  # can an exact paired test give p < alpha_per_test at all?
    note: str  # one line for `tunegate plan`

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- paired t --------------------------------------------------------------------------------


def paired_t_power(d_z: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test (both tails, as statsmodels and pwr count them)."""
    df, nc = n - 1, abs(d_z) * math.sqrt(n)
    crit = float(sps.t.isf(alpha / 2, df))
    upper = float(sps.nct.sf(crit, df, nc))
    lower = float(sps.nct.cdf(-crit, df, nc))
    # scipy's noncentral t returns NaN for the far opposite tail at a large noncentrality
    # (scipy 1.17: nct.cdf(-5.9, 5, 9.8)); that tail is < 1e-12 there, so it is dropped.
    return upper if math.isnan(lower) else upper + lower


def paired_t_mde(n: int, alpha: float, power: float = DEFAULT_POWER) -> float:
    """Smallest d_z the two-sided paired t-test detects with `power` on n pairs.

    Brent's method on the power function, bracketed by doubling: statsmodels' `solve_power`
    can return the end of its search bracket instead of a root for a few items and a small
    alpha (n = 6, alpha = 0.001 gives 2.78 at 57 % power); this cannot.
    """
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs (got {n})")
    hi = 1.0
    while paired_t_power(hi, n, alpha) < power:
        hi *= 2
        if hi > 1e3:  # the noncentral t's numerics give out long before a d_z this absurd
            raise ValueError(f"no d_z reaches {power:.0%} power with n = {n}, alpha = {alpha:g}")
    return float(optimize.brentq(lambda d: paired_t_power(d, n, alpha) - power, 1e-9, hi))


def paired_t_n(d_z: float, alpha: float, power: float = DEFAULT_POWER) -> int:
    """Smallest number of pairs at which the paired t-test detects d_z with `power`.

    Integer bisection on the power (monotone in n for the t-test): the exact smallest
    integer, which is `ceil(solve_power(effect_size=d_z))` except where that solver misses.
    """
    if d_z == 0 or not math.isfinite(d_z):
        raise ValueError(f"d_z must be finite and non-zero (got {d_z})")
    lo, hi = 1, 2  # lo: known too small (n = 1 has no test); hi: grows until enough
    while paired_t_power(d_z, hi, alpha) < power:
        lo, hi = hi, hi * 2
        if hi > 10**9:
            raise ValueError(f"d_z = {d_z:g} needs more than 10^9 pairs")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if paired_t_power(d_z, mid, alpha) >= power else (mid, hi)
    return hi


# --- exact McNemar ---------------------------------------------------------------------------

# alpha → for D = 0, 1, ... discordant pairs, the smallest count W in the experiment's favour at
# which the exact test rejects; grown on demand (binary_n scans thousands of n).
_CRITICAL: dict[float, np.ndarray] = {}


def _upper_critical(d_max: int, alpha: float) -> np.ndarray:
    """For D = 0..d_max discordant pairs, the smallest W for which `binomtest(W, D, 0.5)` (the
    test `compare` runs) gives two-sided p < alpha; D + 1 where no W does.

    For p = 0.5 the two-sided binomial p is min(1, 2·P(X ≥ W)), so scipy's inverse survival
    function gives the boundary; the two corrections make it exact at ties (p == alpha is not
    a rejection) and against float rounding. tests/test_power.py checks it against binomtest.
    """
    have = _CRITICAL.get(alpha)
    if have is not None and have.size > d_max:
        return have[: d_max + 1]
    size = max(d_max + 1, 2 * (have.size if have is not None else 64))
    d = np.arange(size)
    crit = np.nan_to_num(sps.binom.isf(alpha / 2, d, 0.5), nan=0.0).astype(np.int64) + 1
    crit = np.maximum(crit, d // 2 + 1)  # at or below D/2 the two-sided p is 1

    def p(w: np.ndarray) -> np.ndarray:
        return np.minimum(1.0, 2 * sps.binom.sf(w - 1, d, 0.5))

    crit = np.where(p(crit) >= alpha, crit + 1, crit)
    crit = np.where((crit - 1 > d // 2) & (p(crit - 1) < alpha), crit - 1, crit)
    crit = np.minimum(crit, d + 1)
    _CRITICAL[alpha] = crit
    return crit[: d_max + 1]


def _discordance(delta: float, discordant: float | None) -> tuple[float, float]:
    """(ψ, π): the proportion of discordant pairs, and the share of them favouring the
    experiment, for a pass-rate gain `delta` (= ψ·(2π − 1))."""
    if discordant is None:
        return delta, 1.0  # BEST_CASE: every discordant pair is a failure turned into a pass
    if not 0 < discordant <= 1:
        raise ValueError(f"discordant must be in (0, 1] (got {discordant})")
    if delta > discordant:
        raise ValueError(f"a gain of {delta:g} needs at least that many discordant pairs")
    return discordant, (1 + delta / discordant) / 2


def binary_power(n: int, delta: float, alpha: float, *, discordant: float | None = None) -> float:
    """Probability that the exact McNemar test on n pairs gives p < alpha in the experiment's
    favour when its pass rate is `delta` higher (absolute).

    Exact: the discordant count D ~ Binomial(n, ψ); given D, the pairs favouring the experiment
    W ~ Binomial(D, π); the power sums P(D) · P(W ≥ critical(D)). `discordant` — see the module
    docstring; None is the best case.
    """
    if not 0 <= delta <= 1:
        raise ValueError(f"delta is a gain in pass rate, in [0, 1] (got {delta})")
    psi, pi = _discordance(delta, discordant)
    d = np.arange(n + 1)
    crit = _upper_critical(n, alpha)
    return float(np.sum(sps.binom.pmf(d, n, psi) * sps.binom.sf(crit - 1, d, pi)))


def binary_mde(
    n: int, alpha: float, power: float = DEFAULT_POWER, *, discordant: float | None = None
) -> float | None:
    """Smallest pass-rate gain (absolute) the exact McNemar test detects with `power` on n pairs,
    under the discordance model (None: BEST_CASE, a floor). None when no gain reaches that
    power: at any n where 2·0.5**n ≥ alpha, or when `discordant` leaves too few discordant
    pairs. Power rises with the gain (at a fixed ψ, and in the best case), so Brent's method
    finds the one crossing.
    """
    top = 1.0 if discordant is None else discordant
    if binary_power(n, top, alpha, discordant=discordant) < power:
        return None

    def shortfall(delta: float) -> float:
        return binary_power(n, delta, alpha, discordant=discordant) - power

    return float(optimize.brentq(shortfall, 0.0, top, xtol=1e-9))


def binary_n(
    delta: float,
    alpha: float,
    power: float = DEFAULT_POWER,
    *,
    discordant: float | None = None,
    n_max: int = 100_000,
) -> int:
    """Smallest number of pairs at which the exact McNemar test detects a pass-rate gain `delta`
    with `power`.

    A linear scan, not a bisection: an exact test's power is not monotone in n (the rejection
    region moves in whole counts), so a larger n can dip back below the target; the scan returns
    the first n that reaches it. In the best case (discordant=None) it is monotone.
    """
    if not 0 < delta <= 1:
        raise ValueError(f"delta must be in (0, 1] (got {delta})")
    _discordance(delta, discordant)  # validate before scanning
    n = 1
    while min_exact_p(n) >= alpha:  # below this n not even n one-way pairs reach p < alpha
        n += 1
    while n <= n_max:
        if binary_power(n, delta, alpha, discordant=discordant) >= power:
            return n
        n += 1
    raise ValueError(f"a gain of {delta:g} needs more than {n_max} pairs")


# --- stages ----------------------------------------------------------------------------------


def stage_power(
    n: int, alpha: float = 0.05, comparisons: int = 1, power: float = DEFAULT_POWER
) -> Power:
    """What a stage with n paired test items can detect, for `comparisons` tests sharing a
    family-wise `alpha` (Bonferroni-planned; see the module docstring)."""
    if comparisons < 1:
        raise ValueError(f"comparisons must be ≥ 1 (got {comparisons})")
    per_test = alpha / comparisons
    min_p = min_exact_p(n)
    feasible = min_p < per_test
    mde_d_z: float | None = None
    if n >= 2:
        try:
            mde_d_z = paired_t_mde(n, per_test, power)
        except ValueError:
            mde_d_z = None  # too few items for this alpha: no finite d_z reaches the power
    mde_bin = binary_mde(n, per_test, power) if n > 0 else None
    level = f"α = {alpha:g}" + (
        f" / {comparisons} = {per_test:.3g} per test (Bonferroni)" if comparisons > 1 else ""
    )
    if not feasible:
        t_part = (
            f"the paired t needs d_z ≥ {mde_d_z:.2f} for {power:.0%} power, trusting normal "
            "differences"
            if mde_d_z is not None
            else f"the paired t cannot reach {power:.0%} power either"
        )
        note = (
            f"n = {n}, {level}: no exact paired test can reach p < {per_test:.3g} "
            f"(smallest p {min_p:.3g}): binary metrics can only be described; {t_part}"
        )
    else:
        t_part = f"d_z ≥ {mde_d_z:.2f} (paired t) or " if mde_d_z is not None else ""
        note = (
            f"n = {n}, {level}: {power:.0%} power only for {t_part}a pass-rate gain "
            f"≥ {'–' if mde_bin is None else f'{100 * mde_bin:.0f}'} points (exact McNemar, even "
            "if the experiment breaks no item)"
        )
    return Power(
        n=n,
        alpha=alpha,
        comparisons=comparisons,
        alpha_per_test=per_test,
        power=power,
        mde_d_z=mde_d_z,
        mde_binary=mde_bin,
        min_p=min_p,
        feasible=feasible,
        note=note,
    )


def n_from_pilot(
    observed_d_z: float,
    alpha: float,
    comparisons: int,
    power: float = DEFAULT_POWER,
    *,
    shrink: float = 1.0,
) -> int:
    """Pairs the production stage needs to detect the pilot's observed effect with `power`.

    Winner's curse: a pilot that passed its gate did so partly on favourable noise, so its
    observed d_z overestimates the true effect (with 15 items badly: d_z's standard error is
    about 1/√15 ≈ 0.26), and an n planned on it is too small. `shrink` multiplies the observed
    effect before planning — 0.5 plans for half of it — a deliberate, visible discount rather
    than a silent one; 1.0 (the default) takes the pilot at its word.
    """
    if not 0 < shrink <= 1:
        raise ValueError(f"shrink must be in (0, 1] (got {shrink})")
    if comparisons < 1:
        raise ValueError(f"comparisons must be ≥ 1 (got {comparisons})")
    return paired_t_n(abs(observed_d_z) * shrink, alpha / comparisons, power)
