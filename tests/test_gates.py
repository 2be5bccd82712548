"""Every gate at both sides of its threshold, on comparisons made by `stats.compare` from
paired per-item values: the direction of lower-is-better metrics, a p-value with a negative
gain, relative mode, per-scenario averaging, `improves` on clean and on worse code."""

from __future__ import annotations

import pytest

from tunegate.gates import ArmEvidence, StageEvidence, evaluate_gates
from tunegate.plan import Gates
from tunegate.stats import compare


def _arm(**fields: object) -> ArmEvidence:
    base: dict[str, object] = {
        "trained": True,
        "steps": 10,
        "losses": [(s, 3.0 - 0.2 * s) for s in range(1, 11)],
        "eval_loss_before": 3.0,
        "eval_loss_after": 2.0,
        "linear4bit_layers": 14,
        "saved_and_reloaded": True,
        "smoke_generation": "def f(a, b):\n    return a + b",
        "expected_items": 20,
    }
    return ArmEvidence(**{**base, **fields})  # type: ignore[arg-type]


def _rate(passes: int, n: int = 20) -> list[float]:
    return [1.0] * passes + [0.0] * (n - passes)


def _evidence(control: list[float], experiment: list[float], **secondary: tuple) -> StageEvidence:
    ev = StageEvidence(arms={"control": _arm(), "experiment": _arm()})
    ev.primary = compare("functional_correctness", control, experiment, binary=True)
    ev.secondary = {m: compare(m, c, e, binary=b) for m, (c, e, b) in secondary.items()}
    return ev


def _verdict(gates: Gates, ev: StageEvidence) -> tuple[str, dict[str, tuple[bool, str]]]:
    verdict, results = evaluate_gates(gates, ev)
    return verdict, {r.name: (r.passed, r.evidence) for r in results}


def test_min_improvement_both_sides_in_points() -> None:
    gates = Gates(model_saved=True, min_improvement=0.10)
    # 5/20 → 8/20 is +15 points; 5/20 → 6/20 is +5.
    verdict, got = _verdict(gates, _evidence(_rate(5), _rate(8)))
    assert verdict == "PASS"
    assert got["min_improvement"] == (
        True,
        "functional_correctness: 25.0% → 40.0% (+15.0 points) vs > 10.0 points",
    )
    verdict, got = _verdict(gates, _evidence(_rate(5), _rate(6)))
    assert verdict == "INVESTIGATE" and not got["min_improvement"][0]
    # Worse is never an improvement.
    verdict, _ = _verdict(gates, _evidence(_rate(8), _rate(5)))
    assert verdict == "INVESTIGATE"


def test_min_improvement_relative_mode() -> None:
    gates = Gates(model_saved=True, min_improvement=0.5, improvement="relative")
    _, got = _verdict(gates, _evidence(_rate(8), _rate(13)))  # +62.5 % relative
    assert got["min_improvement"][0] and "+62.5% relative" in got["min_improvement"][1]
    _, got = _verdict(gates, _evidence(_rate(8), _rate(11)))  # +37.5 % relative
    assert not got["min_improvement"][0]
    _, got = _verdict(gates, _evidence(_rate(0), _rate(5)))  # from 0: no relative gain
    assert not got["min_improvement"][0] and "control's mean is 0" in got["min_improvement"][1]


def test_min_improvement_averages_the_scenarios() -> None:
    gates = Gates(model_saved=True, min_improvement=0.10)
    ev = _evidence(_rate(5) * 2, _rate(8) + _rate(5))
    ev.per_scenario = {
        "python": compare("functional_correctness", _rate(5), _rate(8), binary=True),  # +15
        "sql": compare("functional_correctness", _rate(5), _rate(5), binary=True),  # +0
    }
    _, got = _verdict(gates, ev)  # average +7.5 points
    assert not got["min_improvement"][0] and "average +7.5 points" in got["min_improvement"][1]
    ev.per_scenario["sql"] = compare("functional_correctness", _rate(5), _rate(7), binary=True)
    _, got = _verdict(gates, ev)  # average +12.5 points
    assert got["min_improvement"][0]


def test_max_p_value_needs_a_small_p_and_a_gain_in_the_right_direction() -> None:
    gates = Gates(model_saved=True, max_p_value=0.05)
    verdict, got = _verdict(gates, _evidence(_rate(2), _rate(12)))  # 10 discordant, one way
    assert verdict == "PASS" and got["max_p_value"][0]
    verdict, got = _verdict(gates, _evidence(_rate(12), _rate(2)))  # as small a p, but worse
    assert verdict == "INVESTIGATE" and not got["max_p_value"][0]
    verdict, got = _verdict(gates, _evidence(_rate(5), _rate(7)))
    assert verdict == "INVESTIGATE" and "p = 0.5" in got["max_p_value"][1]


def test_improves_passes_on_clean_code_and_fails_on_a_worsening() -> None:
    gates = Gates(model_saved=True, improves=["vulnerability", "code_accuracy"])
    clean = [0.0] * 20
    found = [0.0] * 15 + [5.0] * 5
    accurate = _rate(20)
    ev = _evidence(
        _rate(5),
        _rate(5),
        vulnerability=(clean, clean, False),
        code_accuracy=(accurate, accurate, True),
    )
    verdict, got = _verdict(gates, ev)
    assert verdict == "PASS", got
    assert "vulnerability: 0.00/10 → 0.00/10, both arms at the best value" in got["improves"][1]
    # Lower is better: findings appearing in the experiment is a worsening.
    ev = _evidence(
        _rate(5),
        _rate(5),
        vulnerability=(clean, found, False),
        code_accuracy=(accurate, accurate, True),
    )
    verdict, got = _verdict(gates, ev)
    assert verdict == "INVESTIGATE"
    assert (
        "vulnerability: 0.00/10 → 1.25/10 (+1.25 on 0–10, lower is better: worse)"
        in (got["improves"][1])
    )
    # …and findings going away is an improvement.
    ev = _evidence(
        _rate(5),
        _rate(5),
        vulnerability=(found, clean, False),
        code_accuracy=(accurate, accurate, True),
    )
    assert _verdict(gates, ev)[0] == "PASS"
    # No change with room to improve is no improvement.
    half = _rate(10)
    ev = _evidence(
        _rate(5), _rate(5), vulnerability=(clean, clean, False), code_accuracy=(half, half, True)
    )
    verdict, got = _verdict(gates, ev)
    assert (
        verdict == "INVESTIGATE"
        and "code_accuracy: 50.0% → 50.0% (+0.0 points: no improvement)" in got["improves"][1]
    )


@pytest.mark.parametrize(
    ("gate", "broken"),
    [
        ("loaded_in_4bit", {"linear4bit_layers": 0}),
        ("loss_decreased", {"losses": [(s, 3.0) for s in range(1, 11)]}),
        ("loss_decreased", {"eval_loss_after": 3.0}),
        ("model_saved", {"saved_and_reloaded": False}),
        ("generates", {"smoke_generation": "  "}),
        ("evaluation_ran", {"expected_items": 0}),
    ],
)
def test_each_health_gate_fails_the_stage(gate: str, broken: dict[str, object]) -> None:
    gates = Gates(**{gate: True})
    ok = StageEvidence(arms={"control": _arm(), "experiment": _arm()})
    assert evaluate_gates(gates, ok)[0] == "PASS"
    bad = StageEvidence(arms={"control": _arm(), "experiment": _arm(**broken)})
    verdict, results = evaluate_gates(gates, bad)
    assert verdict == "FAIL"
    assert [r.name for r in results if not r.passed] == [gate]


def test_a_health_gate_with_no_arm_fails_and_a_crash_is_always_a_fail() -> None:
    assert evaluate_gates(Gates(model_saved=True), StageEvidence(arms={}))[0] == "FAIL"
    crashed = StageEvidence(arms={"control": _arm(), "experiment": _arm(error="boom")})
    verdict, results = evaluate_gates(Gates(min_improvement=0.1), crashed)
    assert verdict == "FAIL" and results[0].name == "ran" and "boom" in results[0].evidence


def _production(per_scenario: dict[str, tuple[list[float], list[float]]]) -> StageEvidence:
    """A multi-scenario stage's evidence, analysed as the ladder does (`analysis.analyze`)."""
    from tunegate.analysis import Row, analyze

    rows = []
    for scenario, (control, experiment) in per_scenario.items():
        for i, (c, e) in enumerate(zip(control, experiment, strict=True)):
            item = f"{scenario}-{i}"
            for role, value in (("control", c), ("experiment", e)):
                where = f"{role}.jsonl:{i + 1}"
                rows.append(Row(item, role, scenario, {"functional_correctness": value}, where))
    analysis = analyze(
        rows, primary="functional_correctness", binary={"functional_correctness": True}
    )
    ev = StageEvidence(arms={"control": _arm(), "experiment": _arm()})
    ev.primary, ev.per_scenario, ev.clustered = (
        analysis.primary,
        analysis.per_scenario,
        analysis.clustered,
    )
    return ev


def test_production_p_respects_that_items_come_in_scenarios() -> None:
    gates = Gates(model_saved=True, max_p_value=0.05)
    # One scenario carries the whole gain (0 → 15 of 15), four do not move: pooled as 75
    # independent items, McNemar sees 15 discordant pairs one way (p = 6e-5); over 5 scenarios,
    # the cluster-robust t sees one scenario out of five.
    flat = (_rate(5, 15), _rate(5, 15))
    one_carries = {"a": (_rate(0, 15), _rate(15, 15)), "b": flat, "c": flat, "d": flat, "e": flat}
    ev = _production(one_carries)
    assert ev.primary is not None and ev.primary.p_value < 1e-4
    verdict, got = _verdict(gates, ev)
    assert verdict == "INVESTIGATE", got
    assert "cluster-robust t p =" in got["max_p_value"][1]
    # Every scenario improving: both tests agree, and the gate passes.
    steady = {s: (_rate(3, 15), _rate(12, 15)) for s in "abcde"}
    verdict, got = _verdict(gates, _production(steady))
    assert verdict == "PASS", got


def test_with_few_scenarios_the_effect_must_hold_in_each() -> None:
    gates = Gates(model_saved=True, max_p_value=0.05)
    # Two scenarios: a variance across two is meaningless, so each scenario's own exact test.
    both = {"python": (_rate(2, 15), _rate(15, 15)), "bugfix": (_rate(4, 15), _rate(15, 15))}
    verdict, got = _verdict(gates, _production(both))
    assert verdict == "PASS", got
    assert "weakest of 2 scenarios' own exact tests, bugfix p = " in got["max_p_value"][1]
    one = {"python": (_rate(0, 15), _rate(15, 15)), "bugfix": (_rate(5, 15), _rate(5, 15))}
    ev = _production(one)
    assert ev.primary is not None and ev.primary.p_value < 1e-3  # pooled, it would pass
    verdict, got = _verdict(gates, ev)
    assert verdict == "INVESTIGATE" and "bugfix p = 1" in got["max_p_value"][1]
