"""Not applicable is not failed: a metric with nothing to measure on an item is a result; a
metric that could not run makes the evaluation incomplete. Statistics pair only items with a
value on both sides and say how many they left out; nothing prints NaN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunegate.analysis import analyze, load_rows, rows_from_results
from tunegate.data.items import Item
from tunegate.evaluate.metrics import Context, metric
from tunegate.evaluate.pipeline import Generations, Settings, metric_gaps, score_arm, summarize
from tunegate.gates import ArmEvidence, StageEvidence, evaluate_gates
from tunegate.plan import Gates
from tunegate.render import comparison_line
from tunegate.score import Score

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def _item(i: int, **kw: str) -> Item:
    fields = {
        "id": f"p-{i:02d}",
        "scenario": "python",
        "prompt": "Write add.\n",
        "completion": "def add(a, b):\n    return a + b\n",
        "language": "python",
        "tests": TESTS,
        **kw,
    }
    return Item(**fields)  # type: ignore[arg-type]


def _score(items: list[Item], generations: list[str], metrics: list[str]) -> list[dict]:
    gens = Generations(greedy={i.id: g for i, g in zip(items, generations, strict=True)})
    settings = Settings(metrics=metrics)
    return score_arm("control", "control", items, gens, settings, Context(timeout_s=5))


def test_code_that_does_not_parse_is_not_applicable_to_vulnerability_but_scored_elsewhere() -> None:
    items = [_item(0), _item(1)]
    rows = _score(
        items,
        ["def add(a, b):\n    return a + b\n", "def add(a, b)\n    return a +\n"],
        ["functional_correctness", "syntax_validity", "vulnerability", "vulnerable"],
    )
    broken = rows[1]["metrics"]
    assert broken["functional_correctness"] == {
        "value": 0.0,
        "status": "scored",
        "detail": broken["functional_correctness"]["detail"],
    }
    assert broken["syntax_validity"]["value"] == 0.0
    for name in ("vulnerability", "vulnerable"):
        assert broken[name]["value"] is None
        assert broken[name]["status"] == "not_applicable"
        assert "does not parse" in broken[name]["detail"]
    assert rows[0]["metrics"]["vulnerability"] == {
        "value": 0.0,
        "status": "scored",
        "detail": "no findings",
    }
    assert metric_gaps(rows, ["vulnerability"], "failed") == {}
    assert metric_gaps(rows, ["vulnerability"], "not_applicable")["vulnerability"].items == 1


def test_an_execution_the_harness_could_not_judge_failed_to_run() -> None:
    # Broken SQL tests (a fixture that does not exist) are the evaluation's fault, not the
    # model's: ERROR from the real sandbox, recorded as failed, never as 0.
    sql = _item(0, language="sql", tests="-- fixture: nowhere\nSELECT 1;\n")
    sql = sql.model_copy(update={"completion": "SELECT 1;"})
    rows = _score([sql], ["SELECT 1;"], ["functional_correctness", "codebleu"])
    fc = rows[0]["metrics"]["functional_correctness"]
    assert fc["value"] is None and fc["status"] == "failed" and fc["detail"].startswith("ERROR")
    cb = rows[0]["metrics"]["codebleu"]  # CodeBLEU has no SQL: not applicable, not failed
    assert cb["status"] == "not_applicable" and "does not support 'sql'" in cb["detail"]
    # The row says what went wrong producing it: the failure, not the not-applicable metric.
    assert rows[0]["errors"] == [f"functional_correctness: {fc['detail']}"]


def test_a_metric_that_raises_failed_on_every_item(monkeypatch: pytest.MonkeyPatch) -> None:
    original = metric("syntax_validity")

    def boom(cases: list, ctx: Context) -> list[Score]:
        raise RuntimeError("grammar exploded")

    import tunegate.evaluate.metrics as metrics_module

    monkeypatch.setitem(
        metrics_module.METRICS,
        "syntax_validity",
        original.__class__(**{**original.__dict__, "score": boom}),
    )
    rows = _score([_item(0), _item(1)], ["x = 1\n", "y = 2\n"], ["syntax_validity"])
    for row in rows:
        score = row["metrics"]["syntax_validity"]
        assert score["status"] == "failed" and score["value"] is None
        assert "syntax_validity raised RuntimeError: grammar exploded" in score["detail"]
    summary = summarize(rows, ["syntax_validity"])["arms"]["control"]["syntax_validity"]
    assert summary["mean"] is None and summary["failed"]["items"] == 2


def _evidence(failed: dict | None = None, not_applicable: dict | None = None) -> StageEvidence:
    from tunegate.score import MetricGap

    arm = ArmEvidence(trained=True, saved_and_reloaded=True, expected_items=15)
    arm.failed = {m: MetricGap(n, why) for m, (n, why) in (failed or {}).items()}
    arm.not_applicable = {m: MetricGap(n, why) for m, (n, why) in (not_applicable or {}).items()}
    ok = ArmEvidence(trained=True, saved_and_reloaded=True, expected_items=15)
    return StageEvidence(arms={"control": arm, "experiment": ok})


def test_evaluation_ran_passes_on_not_applicable_and_fails_on_failed_naming_them() -> None:
    gates = Gates(evaluation_ran=True)
    verdict, results = evaluate_gates(
        gates, _evidence(not_applicable={"vulnerability": (2, "python code does not parse")})
    )
    assert verdict == "PASS"
    assert "control: 15/15 items evaluated (not applicable: vulnerability 2)" in results[0].evidence

    verdict, results = evaluate_gates(
        gates, _evidence(failed={"functional_correctness": (3, "ERROR: node is not installed")})
    )
    assert verdict == "FAIL"
    assert (
        "control: 12/15 items evaluated: functional_correctness failed on 3 "
        "(ERROR: node is not installed)" in results[0].evidence
    )


def _row(i: int, role: str, value: float | None, status: str) -> dict:
    return {
        "schema": "tunegate.results/2",
        "id": f"p-{i:02d}",
        "arm": role,
        "role": role,
        "scenario": "python",
        "metrics": {
            "functional_correctness": {"value": float(i % 2), "status": "scored", "detail": ""},
            "vulnerability": {"value": value, "status": status, "detail": "why"},
        },
    }


def test_statistics_pair_only_items_with_both_values_and_say_how_many_were_left_out(
    tmp_path: Path,
) -> None:
    rows = []
    for i in range(10):
        rows.append(
            _row(i, "control", None if i < 2 else 1.0, "not_applicable" if i < 2 else "scored")
        )
        rows.append(
            _row(i, "experiment", None if i == 9 else 0.5, "failed" if i == 9 else "scored")
        )
    file = tmp_path / "results.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for loaded in (load_rows([file]), rows_from_results(rows)):
        analysis = analyze(loaded, primary="functional_correctness")
        vuln = analysis.secondary["vulnerability"]
        assert vuln.n == 7 and analysis.excluded == {"vulnerability": 3}
        assert (
            "3 of 10 pairs left out (control 2 not applicable; experiment 1 failed)" in vuln.notes
        )
        assert "left out" in comparison_line(vuln)


def test_a_metric_with_no_value_anywhere_says_why_and_never_prints_nan() -> None:
    rows = []
    for i in range(4):
        for role in ("control", "experiment"):
            row = _row(i, role, None, "not_applicable")
            rows.append(row)
    analysis = analyze(rows_from_results(rows), primary="functional_correctness")
    empty = analysis.secondary["vulnerability"]
    assert empty.n == 0 and empty.control_mean is None and empty.difference is None
    line = comparison_line(empty, "not applicable: no judge configured")
    assert line == "vulnerability: no value (not applicable: no judge configured)"
    text = json.dumps(analysis.to_json(), allow_nan=False)  # raises on NaN
    assert "nan" not in text.lower()
