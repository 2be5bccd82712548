"""The registry: metadata known without importing an implementation, and every entry resolving to
one. What reads only metadata (the plan, the gates, the renderers, the configuration reference)
must never pull in a scorer, the sandbox or a model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tunegate import registry
from tunegate.plan import Gates
from tunegate.registry import GATES, METRICS, listed_metrics, metric_spec

# What scoring imports: none of it may load where only a metric's metadata is read.
SCORING = [
    "tunegate.evaluate.metrics",
    "tunegate.evaluate.pipeline",
    "tunegate.evaluate.syntax",
    "tunegate.evaluate.similarity",
    "tunegate.evaluate.vulnerability",
    "tunegate.evaluate.judge",
    "tunegate.sandbox",
    "sentence_transformers",
    "codebleu",
    "bandit",
    "tree_sitter",
]


def _modules_after(code: str) -> set[str]:
    """The modules loaded in a fresh interpreter after running `code`."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def _scoring_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules for s in SCORING if m == s or m.startswith(s + "."))


def test_importing_the_plan_imports_no_scorer_and_not_the_sandbox() -> None:
    assert _scoring_in(_modules_after("import tunegate.plan")) == []


def test_validating_a_plan_and_rendering_metadata_import_no_scorer() -> None:
    # Every metadata read: metric names, pass@K against samples, McNemar on a binary metric,
    # the default ladder, the gates' directions, value formatting, the configuration reference.
    code = """
from tunegate.configdoc import render_config_reference
from tunegate.gates import _direction
from tunegate.plan import EvaluationConfig, default_stages
from tunegate.render import format_value
from types import SimpleNamespace
EvaluationConfig(metrics=["pass@2", "vulnerable"], primary_metric="vulnerable",
                 tests={"vulnerable": "mcnemar"}, samples=2)
default_stages()
assert _direction(SimpleNamespace(metric="vulnerability")) == -1.0
assert format_value("code_accuracy", 0.5) == "50.0%"
render_config_reference()
"""
    assert _scoring_in(_modules_after(code)) == []


def test_the_registry_imports_nothing_of_tunegate() -> None:
    loaded = _modules_after("import tunegate.registry")
    assert sorted(m for m in loaded if m.startswith("tunegate")) == [
        "tunegate",
        "tunegate.registry",
    ]


@pytest.mark.parametrize("name", [*METRICS, "pass@1", "pass@10"])
def test_every_metric_resolves_to_a_callable_scorer(name: str) -> None:
    assert callable(metric_spec(name).load())


@pytest.mark.parametrize("name", list(GATES))
def test_every_gate_resolves_to_a_callable_check(name: str) -> None:
    assert callable(GATES[name].load())


def test_every_gates_field_is_a_registered_gate() -> None:
    # `improvement` only says how min_improvement reads; it is not a gate.
    assert set(Gates.model_fields) - {"improvement"} == set(GATES)
    for name, gate in GATES.items():
        assert Gates.model_fields[name].description == gate.description


def test_pass_at_k_is_a_pattern_entry() -> None:
    spec = metric_spec("pass@7")
    assert (spec.name, spec.parameter, spec.uses) == ("pass@7", 7, "samples")
    assert "pass@7" in spec.description
    assert registry.known("pass@12") and not registry.known("pass@0")
    with pytest.raises(KeyError):
        metric_spec("pass@")
    assert [m.name for m in listed_metrics()].count("pass@K") == 1


def test_the_metric_lists_name_registered_metrics() -> None:
    assert all(registry.known(m) for m in registry.ALL_METRICS + registry.DEFAULT_METRICS)


def test_the_languages_agree_with_their_implementations() -> None:
    from tunegate import sandbox
    from tunegate.evaluate import similarity, syntax, vulnerability

    assert registry.EXECUTED == sandbox.LANGUAGES
    assert registry.SYNTAX_CHECKED == syntax.LANGUAGES
    assert registry.SCANNED == vulnerability.LANGUAGES
    assert registry.CODEBLEU == similarity.CODEBLEU_LANGUAGES
    for spec in listed_metrics():
        assert spec.applies_to is None or spec.applies_to <= set(registry.LANGUAGES), spec.name


def test_a_loaded_metric_carries_the_registry_metadata() -> None:
    from tunegate.evaluate.metrics import metric

    for name in [*METRICS, "pass@3"]:
        loaded, spec = metric(name), metric_spec(name)
        assert (loaded.name, loaded.kind, loaded.higher_is_better, loaded.uses) == (
            spec.name,
            spec.kind,
            spec.higher_is_better,
            spec.uses,
        )
