"""Paired statistics against published R output and scipy (published oracles)."""

from __future__ import annotations

import pytest

from tunegate.stats import compare, holm, min_exact_p

# R: t.test(extra ~ group, data = sleep, paired = TRUE)
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_matches_r_sleep() -> None:
    # R reports group1 − group2: t = −4.0621, p = 0.002833, CI [−2.4598858, −0.7001142].
    c = compare("extra", SLEEP_2, SLEEP_1, binary=False)
    assert c.test == "paired t"
    assert c.p_value == pytest.approx(0.002833, rel=1e-3)
    assert c.difference == pytest.approx(-1.58)
    assert c.ci95 is not None
    assert c.ci95[0] == pytest.approx(-2.4598858, rel=1e-6)
    assert c.ci95[1] == pytest.approx(-0.7001142, rel=1e-6)
    # d_z = mean(d) / sd(d) = −1.58 / 1.229995
    assert c.d_z == pytest.approx(-1.58 / 1.2299955, rel=1e-6)


def test_exact_mcnemar_counts_discordant_pairs() -> None:
    # 13 pairs flip to pass, 0 the other way, 2 ties: p = 2 * 0.5**13.
    control = [0.0] * 13 + [1.0, 0.0]
    experiment = [1.0] * 13 + [1.0, 0.0]
    c = compare("functional_correctness", control, experiment, binary=True)
    assert c.p_value == pytest.approx(2 * 0.5**13, rel=1e-12)
    assert "13 for / 0 against" in c.test
    assert c.difference == pytest.approx(13 / 15)


def test_no_difference_is_p_one_not_nan() -> None:
    c = compare("functional_correctness", [0.0] * 5, [0.0] * 5, binary=True)
    assert c.p_value == 1.0 and c.d_z is None


def test_five_items_cannot_reach_significance() -> None:
    assert min_exact_p(5) == pytest.approx(0.0625)
    c = compare("functional_correctness", [0.0] * 5, [1.0] * 5, binary=True)
    assert c.p_value == pytest.approx(0.0625)
    assert any("no exact paired test can reach p < 0.05" in n for n in c.notes)


def test_constant_difference_is_reported_not_crashed() -> None:
    c = compare("similarity", [0.1, 0.2, 0.3], [0.2, 0.3, 0.4], binary=False)
    assert c.d_z is None and c.p_value is None
    assert any("same amount" in n for n in c.notes)


def test_holm_matches_r_p_adjust() -> None:
    # R: p.adjust(c(0.01, 0.04, 0.03), "holm") → 0.03 0.06 0.06
    comps = [compare(f"m{i}", [0.0, 1.0], [1.0, 1.0], binary=False) for i in range(3)]
    for comp, p in zip(comps, (0.01, 0.04, 0.03), strict=True):
        comp.p_value = p
    holm(comps)
    assert [c.p_adjusted for c in comps] == pytest.approx([0.03, 0.06, 0.06])


def test_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="3 control vs 2 experiment"):
        compare("m", [1.0, 2.0, 3.0], [1.0, 2.0], binary=False)


def test_empty_is_reported() -> None:
    c = compare("m", [], [], binary=False)
    assert c.n == 0 and c.p_value is None and c.difference is None and c.control_mean is None
