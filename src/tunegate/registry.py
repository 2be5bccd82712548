"""What tunegate knows how to measure, gate and run, known without importing how it does it.

Each metric, gate and language is one entry here: its metadata (a metric's kind, direction,
languages and needs; a gate's kind and description) and, for metrics and gates, where its
implementation lives as a `"module:function"` path, imported only when it is called
(`MetricSpec.load`, `Gate.load`). So the plan validates metric names, the renderers format
values and the gates read a metric's direction without importing a scorer, the sandbox or a model.
This module imports nothing of tunegate's, and must not: everything reads it.

A new metric is a function `(cases, ctx) -> list[Score]` (in `evaluate/metrics.py`, or a module of
its own) and a `MetricSpec` line in `_ENTRIES`; the plan accepts its name from then on.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "FAMILIES",
    "GATES",
    "LANGUAGES",
    "METRICS",
    "PASS_AT",
    "Gate",
    "Language",
    "MetricFamily",
    "MetricSpec",
    "known",
    "listed_metrics",
    "metric_spec",
    "resolve",
]

Scale = Literal["rate", "score10", "unit"]
Kind = Literal["binary", "continuous"]
# What a metric needs besides the generations: a sandbox to run code, a configured judge, or a
# package it imports when it scores (for some languages or all).
Need = Literal["sandbox", "judge", "sentence-transformers", "codebleu", "tree-sitter", "bandit"]


def resolve(path: str) -> Callable[..., Any]:
    """The callable a `"module:attribute"` path names, importing its module."""
    module, _, attribute = path.partition(":")
    found: object = getattr(importlib.import_module(module), attribute)
    if not callable(found):
        raise TypeError(f"{path} is not callable")
    return found


# --- languages -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Language:
    name: str
    # How code_accuracy strips line comments before comparing (Python is compared by its AST,
    # or by its tokens when it does not parse, and never reads this).
    line_comment: str


LANGUAGES: dict[str, Language] = {
    language.name: language
    for language in [
        Language(name="python", line_comment="#"),
        Language(name="javascript", line_comment="//"),
        Language(name="typescript", line_comment="//"),
        Language(name="sql", line_comment="--"),
    ]
}

# The languages the sandbox executes (`sandbox.LANGUAGES`, its executors; a test keeps the two
# equal: the sandbox imports nothing above it, this module included).
EXECUTED = frozenset({"python", "javascript", "sql"})
# The languages with a syntax check (`evaluate/syntax`; typescript where its grammar is installed).
SYNTAX_CHECKED = frozenset({"python", "javascript", "typescript", "sql"})
# The languages with static vulnerability rules (`evaluate/vulnerability`: bandit for Python).
SCANNED = frozenset({"python", "javascript", "typescript", "sql"})
# The languages whose tree-sitter grammar is installed for CodeBLEU (pyproject pins them).
CODEBLEU = frozenset({"python", "javascript"})


# --- metrics ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    name: str
    kind: Kind  # binary selects exact McNemar over the paired t-test
    higher_is_better: bool  # False for vulnerability: the gates and the report flip it
    uses: Literal["greedy", "samples"]  # the one greedy generation, or the n samples
    description: str
    implementation: str  # "module:function", a `(cases, ctx) -> list[Score]`
    applies_to: frozenset[str] | None = None  # languages; None: any language
    needs: frozenset[Need] = frozenset()
    # A family member's parameter (pass@K's K): `implementation` is then a factory taking it.
    parameter: int | None = None
    # What its values are: a rate in [0, 1] (shown in %, differences in points), a score on
    # 0–10, or a number in [0, 1]. Evidence and reports speak in these units.
    scale: Scale = "rate"

    @property
    def best(self) -> float:
        """The best value an item or an arm can have: nothing is left to improve there."""
        if self.scale == "score10":
            return 0.0 if not self.higher_is_better else 10.0
        return 1.0 if self.higher_is_better else 0.0

    def show(self, value: float) -> str:
        """A value in the metric's units: 46.7%, 2.50/10, 0.812."""
        if self.scale == "rate":
            return f"{value:.1%}"
        if self.scale == "score10":
            return f"{value:.2f}/10"
        return f"{value:.3f}"

    def show_difference(self, difference: float) -> str:
        """A difference in the metric's units: +20.0 points, -1.50 on 0–10, +0.042."""
        if self.scale == "rate":
            return f"{difference * 100:+.1f} points"
        if self.scale == "score10":
            return f"{difference:+.2f} on 0–10"
        return f"{difference:+.3f}"

    def load(self) -> Callable[..., Any]:
        """The scorer, its module imported now."""
        implementation = resolve(self.implementation)
        return implementation if self.parameter is None else implementation(self.parameter)


@dataclass(frozen=True, kw_only=True)
class MetricFamily:
    """Metrics named by a pattern with one integer parameter, `{k}` in the template's texts."""

    pattern: re.Pattern[str]  # group 1 is the parameter
    template: MetricSpec  # named as the family is listed: "pass@K"

    def member(self, name: str) -> MetricSpec | None:
        match = self.pattern.fullmatch(name)
        if match is None:
            return None
        k = int(match.group(1))
        return replace(
            self.template,
            name=name,
            description=self.template.description.format(k=k),
            parameter=k,
        )


PASS_AT = re.compile(r"pass@([1-9][0-9]*)")

_METRICS_MODULE = "tunegate.evaluate.metrics"

# In the order the configuration reference lists them.
_ENTRIES: list[MetricSpec | MetricFamily] = [
    MetricSpec(
        name="code_accuracy",
        kind="binary",
        higher_is_better=True,
        uses="greedy",
        description="1 if the code equals the reference after normalization (Python by its "
        "AST; other languages without comments and whitespace)",
        implementation=f"{_METRICS_MODULE}:_code_accuracy",
    ),
    MetricSpec(
        name="functional_correctness",
        kind="binary",
        higher_is_better=True,
        uses="greedy",
        description="1 if the item's tests pass in the sandbox",
        implementation=f"{_METRICS_MODULE}:_functional_correctness",
        applies_to=EXECUTED,
        needs=frozenset({"sandbox"}),
    ),
    MetricSpec(
        name="syntax_validity",
        kind="binary",
        higher_is_better=True,
        uses="greedy",
        description="1 if the code parses / compiles (SQL against the item's fixture)",
        implementation=f"{_METRICS_MODULE}:_syntax_validity",
        applies_to=SYNTAX_CHECKED,
        needs=frozenset({"tree-sitter"}),
    ),
    MetricSpec(
        name="semantic_similarity",
        kind="continuous",
        higher_is_better=True,
        uses="greedy",
        description="cosine similarity of all-MiniLM-L6-v2 embeddings with the reference",
        implementation=f"{_METRICS_MODULE}:_semantic_similarity",
        needs=frozenset({"sentence-transformers"}),
        scale="unit",
    ),
    MetricSpec(
        name="codebleu",
        kind="continuous",
        higher_is_better=True,
        uses="greedy",
        description="CodeBLEU against the reference",
        implementation=f"{_METRICS_MODULE}:_codebleu",
        applies_to=CODEBLEU,
        needs=frozenset({"codebleu", "tree-sitter"}),
        scale="unit",
    ),
    MetricFamily(
        pattern=PASS_AT,
        template=MetricSpec(
            name="pass@K",
            kind="continuous",
            higher_is_better=True,
            uses="samples",
            description="unbiased pass@{k} from n samples per item (Chen et al. 2021)",
            implementation=f"{_METRICS_MODULE}:_pass_at",
            applies_to=EXECUTED,
            needs=frozenset({"sandbox"}),
        ),
    ),
    MetricSpec(
        name="vulnerability",
        kind="continuous",
        higher_is_better=False,
        uses="greedy",
        description="0–10 score of static findings (bandit, offline rules; "
        "[vulnerability.md](vulnerability.md))",
        implementation=f"{_METRICS_MODULE}:_vulnerability",
        applies_to=SCANNED,
        needs=frozenset({"bandit"}),
        scale="score10",
    ),
    MetricSpec(
        name="vulnerable",
        kind="binary",
        higher_is_better=False,
        uses="greedy",
        description="1 if any MEDIUM or HIGH static finding (CyberSecEval's rate)",
        implementation=f"{_METRICS_MODULE}:_vulnerable",
        applies_to=SCANNED,
        needs=frozenset({"bandit"}),
    ),
    MetricSpec(
        name="coherence",
        kind="continuous",
        higher_is_better=True,
        uses="greedy",
        description="LLM judge, pinned coherence rubric, scaled to [0, 1]",
        implementation=f"{_METRICS_MODULE}:_coherence",
        needs=frozenset({"judge"}),
        scale="unit",
    ),
]

METRICS: dict[str, MetricSpec] = {e.name: e for e in _ENTRIES if isinstance(e, MetricSpec)}
FAMILIES: list[MetricFamily] = [e for e in _ENTRIES if isinstance(e, MetricFamily)]


def metric_spec(name: str) -> MetricSpec:
    """A metric's metadata by name; `pass@K` for any K. Raises KeyError for an unknown name."""
    if name in METRICS:
        return METRICS[name]
    for family in FAMILIES:
        if (spec := family.member(name)) is not None:
            return spec
    raise KeyError(name)


def known(name: str) -> bool:
    return name in METRICS or any(f.pattern.fullmatch(name) for f in FAMILIES)


def listed_metrics() -> list[MetricSpec]:
    """Every metric in the registry's order, a family as its template with `K` for `{k}`."""
    return [
        entry
        if isinstance(entry, MetricSpec)
        else replace(entry.template, description=entry.template.description.format(k="K"))
        for entry in _ENTRIES
    ]


DEFAULT_METRICS = ["functional_correctness", "code_accuracy", "syntax_validity"]
# The original staged plan's "all metrics" (its evaluators and pass@k), as `--all-metrics`;
# coherence is reported as not run until a judge is configured.
ALL_METRICS = [
    "functional_correctness",
    "code_accuracy",
    "syntax_validity",
    "semantic_similarity",
    "codebleu",
    "pass@1",
    "pass@10",
    "vulnerability",
    "vulnerable",
    "coherence",
]


# --- gates -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Gate:
    """A gate: a `plan.Gates` field (its threshold) and a check in `gates.py`."""

    name: str
    kind: Literal["health", "effect"]  # failing, a health gate FAILs a stage, an effect gate
    # INVESTIGATEs it: the stage ran fine, the effect is too small or uncertain
    description: str
    implementation: str  # "module:function", a `(StageEvidence, threshold) -> (bool, str)`

    def load(self) -> Callable[..., Any]:
        return resolve(self.implementation)


_GATES_MODULE = "tunegate.gates"

GATES: dict[str, Gate] = {
    gate.name: gate
    for gate in [
        Gate(
            name="environment",
            kind="health",
            description="Every environment check passes.",
            implementation=f"{_GATES_MODULE}:_environment",
        ),
        Gate(
            name="loaded_in_4bit",
            kind="health",
            description="bitsandbytes Linear4bit layers present.",
            implementation=f"{_GATES_MODULE}:_loaded_in_4bit",
        ),
        Gate(
            name="loss_decreased",
            kind="health",
            description="Train loss falls across windows and validation loss falls.",
            implementation=f"{_GATES_MODULE}:_loss_decreased",
        ),
        Gate(
            name="model_saved",
            kind="health",
            description="Adapter saved and reloaded from disk.",
            implementation=f"{_GATES_MODULE}:_model_saved",
        ),
        Gate(
            name="generates",
            kind="health",
            description="The reloaded model generates text.",
            implementation=f"{_GATES_MODULE}:_generates",
        ),
        Gate(
            name="evaluation_ran",
            kind="health",
            description="Every test item was scored.",
            implementation=f"{_GATES_MODULE}:_evaluation_ran",
        ),
        Gate(
            name="min_improvement",
            kind="effect",
            description="Primary metric, experiment − control: absolute (0.10 = 10 points) or "
            "relative to the control's mean, as `improvement` says.",
            implementation=f"{_GATES_MODULE}:_min_improvement",
        ),
        Gate(
            name="max_p_value",
            kind="effect",
            description="Primary metric, paired test.",
            implementation=f"{_GATES_MODULE}:_max_p_value",
        ),
        Gate(
            name="improves",
            kind="effect",
            description="Metrics that must improve in the experiment arm, in their better "
            "direction (lower for vulnerability), or have nothing left to improve (both arms at "
            "the best value, e.g. no finding at all); any worsening fails.",
            implementation=f"{_GATES_MODULE}:_improves",
        ),
    ]
}
