"""What a metric gives for one item: a value, or the reason there is none, and which reason.

Two reasons for having no value must never be confused (docs/results.md):

- **not applicable**: the metric has nothing to measure on this item. The vulnerability of code
  that does not parse (a syntax error is neither a vulnerability nor a clean bill), CodeBLEU for
  SQL, functional correctness of an item without tests, a judge metric when no judge is
  configured. The item *was* evaluated; a model that writes broken code has produced a result.
- **failed**: the metric should have given a value and could not. The sandbox errored, a runtime
  is missing, the endpoint is down, the judge timed out, the metric raised. The evaluation is
  incomplete, so the stage's `evaluation_ran` gate fails and names the metric, the count and why.

Neither is ever written as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The per-item results file (docs/results.md). /2 added each metric's `status`; /1 is still read.
RESULTS_SCHEMA = "tunegate.results/2"
READABLE_SCHEMAS = ("tunegate.results/1", RESULTS_SCHEMA)

Status = Literal["scored", "not_applicable", "failed"]
STATUSES: tuple[Status, ...] = ("scored", "not_applicable", "failed")


class NotApplicable(Exception):
    """The metric does not apply to this input; `str()` is the reason a report shows."""


class CannotRun(Exception):
    """The metric applies but cannot run here (a package or grammar missing, a tool broke);
    `str()` says what to fix."""


@dataclass(frozen=True)
class Score:
    value: float | None  # None exactly when status is not "scored"
    detail: str = ""  # what was seen (verdict, findings), or why there is no value
    status: Status = "scored"

    def __post_init__(self) -> None:
        if (self.value is None) != (self.status != "scored"):
            raise ValueError(f"a {self.status} score cannot have value {self.value!r}")

    @classmethod
    def not_applicable(cls, reason: str) -> Score:
        return cls(None, reason, "not_applicable")

    @classmethod
    def failed(cls, reason: str) -> Score:
        return cls(None, reason, "failed")


def status_of(value: float | None, status: str | None) -> Status:
    """A stored row's status; rows written before statuses existed (tunegate.results/1) say
    nothing, and their null could mean either, so it reads as not applicable."""
    if status in STATUSES:
        return status  # type: ignore[return-value]
    return "scored" if value is not None else "not_applicable"


@dataclass(frozen=True)
class MetricGap:
    """The items of one arm for which a metric has no value of one kind (failed, or not
    applicable), and their distinct reasons."""

    items: int
    reasons: str
