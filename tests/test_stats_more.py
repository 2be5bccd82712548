"""More oracles: R's published output for Wilcoxon, McNemar, Wilson and Clopper–Pearson, the
noncentral-t interval of d_z, the permutation test against brute force, Hedges' g, and the
analysis of results files (pairing, bad input)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar

from tunegate.analysis import analyze, load_rows
from tunegate.errors import UserError
from tunegate.stats import clopper_pearson, compare, d_z_interval, wilson

SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
# R ?wilcox.test: Hollander & Wolfe (1973) p. 29, depression scale before (x) and after (y).
HW_X = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
HW_Y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]


def test_wilcoxon_matches_r_on_sleep_with_ties_and_a_zero() -> None:
    # R: wilcox.test(extra ~ group, data = sleep, paired = TRUE) → V = 0, p-value = 0.009091
    # (normal approximation with continuity correction: ties and a zero difference).
    c = compare("extra", SLEEP_2, SLEEP_1, binary=False, test="wilcoxon")
    assert c.p_value == pytest.approx(0.009091, rel=1e-4)
    assert c.test == "Wilcoxon signed-rank"


def test_wilcoxon_is_exact_for_small_n_without_ties() -> None:
    # R: wilcox.test(x, y, paired = TRUE) → V = 40, p-value = 0.03906 (exact: 20 / 512).
    c = compare("depression", HW_Y, HW_X, binary=False, test="wilcoxon")
    assert c.p_value == pytest.approx(20 / 512, rel=1e-9)


def _pairs_from_table(a: int, b: int, c: int, d: int) -> tuple[list[float], list[float]]:
    """2×2 paired table [[both pass, control only], [experiment only, both fail]]."""
    control = [1.0] * a + [1.0] * b + [0.0] * c + [0.0] * d
    experiment = [1.0] * a + [0.0] * b + [1.0] * c + [0.0] * d
    return control, experiment


def test_mcnemar_on_rs_example() -> None:
    # R ?mcnemar.test, Agresti (1990) presidential approval, [[794, 150], [86, 570]]:
    # McNemar's chi-squared = 16.818, p = 4.115e-05 (with continuity correction; 17.356,
    # 3.099e-05 without). tunegate reports the exact test; the chi-squared figures check that
    # the pairs built here are R's table.
    table = [[794, 150], [86, 570]]
    r_corrected = mcnemar(table, exact=False, correction=True)
    assert r_corrected.statistic == pytest.approx(16.818, rel=1e-4)
    assert r_corrected.pvalue == pytest.approx(4.115e-05, rel=1e-3)
    assert mcnemar(table, exact=False, correction=False).pvalue == pytest.approx(
        3.099e-05, rel=1e-3
    )
    control, experiment = _pairs_from_table(794, 150, 86, 570)
    c = compare("approval", control, experiment, binary=True)
    assert c.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)
    assert "86 for / 150 against" in c.test


def test_wilson_and_clopper_pearson_match_r() -> None:
    # R: prop.test(7, 10, correct = FALSE)$conf.int → 0.3967781 0.8922087 (Wilson)
    lo, hi = wilson(7, 10)  # type: ignore[misc]
    assert (lo, hi) == pytest.approx((0.3967781, 0.8922087), rel=1e-6)
    # R: binom.test(7, 10)$conf.int → 0.3475471 0.9332605 (Clopper–Pearson)
    lo, hi = clopper_pearson(7, 10)  # type: ignore[misc]
    assert (lo, hi) == pytest.approx((0.3475471, 0.9332605), rel=1e-6)
    assert wilson(0, 0) is None


def test_d_z_interval_inverts_the_noncentral_t() -> None:
    c = compare("extra", SLEEP_2, SLEEP_1, binary=False)
    assert c.d_z == pytest.approx(-1.58 / 1.2299955, rel=1e-6)
    lo, hi = c.d_z_ci95  # type: ignore[misc]
    t, n = c.d_z * math.sqrt(10), 10  # type: ignore[operator]
    # The bounds are the noncentralities at which the observed t sits at 97.5 % and 2.5 %.
    assert sps.nct.cdf(t, n - 1, lo * math.sqrt(n)) == pytest.approx(0.975, abs=1e-9)
    assert sps.nct.cdf(t, n - 1, hi * math.sqrt(n)) == pytest.approx(0.025, abs=1e-9)
    assert lo < c.d_z < hi  # type: ignore[operator]
    assert d_z_interval(0.5, 2) is None  # too few pairs for an interval


def test_d_av_and_hedges_g() -> None:
    c = compare("extra", SLEEP_2, SLEEP_1, binary=False)
    sd1, sd2 = np.std(SLEEP_1, ddof=1), np.std(SLEEP_2, ddof=1)
    d_av = -1.58 / ((sd1 + sd2) / 2)
    assert c.d_av == pytest.approx(d_av, rel=1e-9)
    assert c.g_av == pytest.approx(d_av * (1 - 3 / (4 * 9 - 1)), rel=1e-9)
    lo, hi = c.g_av_ci95  # type: ignore[misc]
    assert lo < c.g_av < hi  # type: ignore[operator]


def test_permutation_is_exact_sign_flip_enumeration_for_small_n() -> None:
    d = np.array(SLEEP_1) - np.array(SLEEP_2)
    observed = abs(d.mean())
    flips = [abs((d * np.array(signs)).mean()) for signs in itertools.product((1, -1), repeat=10)]
    brute = sum(f >= observed - 1e-12 for f in flips) / len(flips)
    c = compare("extra", SLEEP_2, SLEEP_1, binary=False, test="permutation")
    assert c.p_value == pytest.approx(brute, rel=1e-12)


def test_bootstrap_interval_is_reproducible_and_covers_the_mean() -> None:
    a = compare("extra", SLEEP_2, SLEEP_1, binary=False, seed=3)
    b = compare("extra", SLEEP_2, SLEEP_1, binary=False, seed=3)
    assert a.bootstrap_ci95 == b.bootstrap_ci95
    lo, hi = a.bootstrap_ci95  # type: ignore[misc]
    assert lo < -1.58 < hi


def test_a_test_that_cannot_apply_is_refused() -> None:
    with pytest.raises(ValueError, match="McNemar's test needs a binary"):
        compare("similarity", [0.1, 0.5], [0.2, 0.4], binary=False, test="mcnemar")
    with pytest.raises(ValueError, match="unknown test"):
        compare("similarity", [0.1, 0.5], [0.2, 0.4], binary=False, test="anova")
    with pytest.raises(ValueError, match="NaN"):
        compare("similarity", [0.1, math.nan], [0.2, 0.4], binary=False)


def test_one_pair_is_descriptive() -> None:
    c = compare("fc", [0.0], [1.0], binary=True)
    assert c.p_value is None and c.d_z is None
    assert any("n = 1" in note for note in c.notes)


# --- results files ----------------------------------------------------------------------------


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(i: int, role: str, fc: float | None, sim: float | None, scenario: str = "s") -> dict:
    return {
        "schema": "tunegate.results/1",
        "id": f"item-{i}",
        "arm": role,
        "role": role,
        "scenario": scenario,
        "metrics": {
            "functional_correctness": {"value": fc, "detail": ""},
            "semantic_similarity": {"value": sim, "detail": "" if sim is not None else "not run"},
        },
    }


def test_analysis_of_a_results_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        scenario = ["a", "b", "c"][i % 3]
        rows.append(_row(i, "control", float(rng.random() < 0.3), float(rng.random()), scenario))
        rows.append(_row(i, "experiment", float(rng.random() < 0.7), None if i == 0 else 0.9,
                         scenario))  # fmt: skip
    analysis = analyze(
        load_rows([_write(tmp_path / "r.jsonl", rows)]), primary="functional_correctness"
    )
    assert analysis.primary.binary and analysis.primary.test.startswith("exact McNemar")
    assert analysis.secondary["semantic_similarity"].n == 29  # one pair not scored
    assert analysis.excluded == {"semantic_similarity": 1}
    assert set(analysis.per_scenario) == {"a", "b", "c"}
    assert all(c.p_adjusted is not None for c in analysis.per_scenario.values())
    assert analysis.clustered is not None and analysis.clustered["clusters"] == 3


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rows: rows[:-1], "do not pair by id: 1 only in control"),
        (lambda rows: [*rows, rows[0]], "duplicate control row for 'item-0'"),
        (
            lambda rows: [{**rows[0], "metrics": {}}, *rows[1:]],
            "metric 'functional_correctness' is missing",
        ),
        (
            lambda rows: [{**rows[0], "schema": "other/2"}, *rows[1:]],
            "is not tunegate.results/1 or tunegate.results/2",
        ),
    ],
)
def test_bad_results_are_clear_errors(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    rows = [
        r for i in range(4) for r in (_row(i, "control", 0.0, 0.5), _row(i, "experiment", 1.0, 0.5))
    ]
    path = _write(tmp_path / "r.jsonl", mutate(rows))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        analyze(load_rows([path]), primary="functional_correctness")


def test_nan_in_a_results_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_row(0, "control", 0.0, 0.5)) + "\n" + json.dumps(
        _row(0, "experiment", 1.0, 0.5)).replace("0.5", "NaN") + "\n")  # fmt: skip
    with pytest.raises(UserError, match=r"r.jsonl:2: metric 'semantic_similarity' is nan"):
        load_rows([path])


def test_stats_command_on_evaluate_results(tmp_path: Path) -> None:
    from conftest import run_cli

    rows = []
    for i in range(12):
        rows.append(_row(i, "control", float(i % 3 == 0), 0.4 + i / 100))
        rows.append(_row(i, "experiment", float(i % 3 != 2), 0.5 + i / 100))
    path = _write(tmp_path / "results.jsonl", rows)
    result = run_cli("stats", str(path), "--test", "semantic_similarity=wilcoxon")
    assert result.returncode == 0, result.stderr
    assert "exact McNemar" in result.stdout and "Holm" in result.stdout
    assert "80% power only for" in " ".join(result.stdout.split())
    as_json = run_cli("stats", str(path), "--test", "semantic_similarity=wilcoxon", "--json")
    analysis = json.loads(as_json.stdout)
    assert analysis["primary"]["test"] == "exact McNemar (discordant 4 for / 0 against)"
    assert analysis["secondary"]["semantic_similarity"]["test"] == "Wilcoxon signed-rank"
    assert analysis["secondary"]["semantic_similarity"]["p_adjusted"] is not None
    split = run_cli("stats", "--control-results", str(path), "--json")
    assert split.returncode == 2 and "go together" in split.stderr
    bad = run_cli("stats", str(path), "--test", "semantic_similarity=anova")
    assert bad.returncode == 2 and "not METRIC=TEST" in bad.stderr
    unpaired = _write(tmp_path / "unpaired.jsonl", rows[:-1])
    result = run_cli("stats", str(unpaired))
    assert result.returncode == 2 and "do not pair by id" in result.stderr
    assert "Traceback" not in result.stderr


def test_clustered_difference_is_the_cr1_sandwich_with_g_minus_1_df() -> None:
    """Oracle: the closed form of the cluster-robust variance of a mean (Cameron & Miller 2015,
    CR1: G/(G−1) · (N−1)/(N−K) · Σ_g (Σ_i∈g e_i)² / N², K = 1), the t on G − 1 df, as Stata's
    `regress d, vce(cluster g)` and R's `coeftest(lm(d ~ 1), vcovCL(type = "HC1"))` report it."""
    from tunegate.stats import clustered_difference

    d = [1, 0, 1, 1, 0, 0, 0, 1, -1, 0, 1, 1, 1, 0, 0, 1, 0, -1, 0, 1]
    g = ["a"] * 5 + ["b"] * 5 + ["c"] * 4 + ["d"] * 6
    got = clustered_difference([float(x) for x in d], g)
    assert got is not None
    mean, se, p = got
    n, clusters = len(d), sorted(set(g))
    dbar = sum(d) / n
    sums = [sum(x - dbar for x, c in zip(d, g, strict=True) if c == k) for k in clusters]
    variance = len(clusters) / (len(clusters) - 1) * sum(s * s for s in sums) / n**2
    t = dbar / math.sqrt(variance)
    assert mean == pytest.approx(dbar, abs=1e-12)
    assert se == pytest.approx(math.sqrt(variance), rel=1e-10)
    assert p == pytest.approx(2 * sps.t.sf(abs(t), len(clusters) - 1), rel=1e-10)
    # Fewer than two clusters: no cluster-robust figure at all.
    assert clustered_difference([1.0, 0.0], ["a", "a"]) is None
