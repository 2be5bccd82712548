"""What a climb does, as events: the ladder emits them, sinks turn them into output.

The ladder decides; it never prints or logs. Each thing worth telling (a stage started, an arm
trained, a comparison made, a gate decided, …) is one typed event, handed to every sink behind one
small Protocol (as torchtune's metric loggers): the console, MLflow, and a JSON-lines file that
tools read. Adding an output is one sink; changing what one shows never touches the climb.

Events carry light data for the JSON-lines sink, and the state's records (fields marked
`record`) for the tracking sink, which keeps its MLflow run ids in them so that a resumed climb
re-attaches to the same runs.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from tunegate.determinism import MachineRecord
    from tunegate.gates import GateResult, Verdict
    from tunegate.state import ArmRecord, Box, Check, Forecast, LadderState, StageRecord
    from tunegate.stats import Comparison, SeededDifference
    from tunegate.train.qlora import TrainResult


Level = Literal["info", "warning", "error", "success"]


# Marks a field the JSON-lines sink leaves out: a live state record, for the tracking sink.
RECORD = {"record": True}


@dataclass
class Event:
    """Base of every event: `kind` names it in the JSON lines."""

    kind: ClassVar[str] = "event"


@dataclass
class Notice(Event):
    """A line for the person watching: a stage not started, an override, a skipped report."""

    kind: ClassVar[str] = "notice"
    text: str
    level: Level = "info"
    headline: str = ""  # shown emphasised before the text, in the level's colour


@dataclass
class ClimbOpened(Event):
    """Tracking is to open the climb's parent run; the machine that climbs is recorded."""

    kind: ClassVar[str] = "climb_opened"
    plan: str
    plan_hash: str
    seed: int
    model: str
    method: str
    machine: MachineRecord
    state: LadderState = field(metadata=RECORD, repr=False)


@dataclass
class StageStarted(Event):
    kind: ClassVar[str] = "stage_started"
    index: int
    stage: str
    description: str
    forced: bool
    record: StageRecord = field(metadata=RECORD, repr=False)


@dataclass
class EnvironmentChecked(Event):
    kind: ClassVar[str] = "environment_checked"
    checks: list[Check]


@dataclass
class DataChecked(Event):
    """One data check of one arm's selection (leakage, token lengths) that was not ok."""

    kind: ClassVar[str] = "data_checked"
    arm: str
    name: str
    verdict: str
    summary: str
    messages: list[str]


@dataclass
class ArmStarted(Event):
    kind: ClassVar[str] = "arm_started"
    index: int
    stage: str
    arm: str
    role: str
    record: ArmRecord = field(metadata=RECORD, repr=False)
    stage_record: StageRecord = field(metadata=RECORD, repr=False)


@dataclass
class ArmReused(Event):
    """The arm's complete adapter is on disk from an earlier climb: it is not trained again."""

    kind: ClassVar[str] = "arm_reused"
    arm: str
    adapter: Path


@dataclass
class TrainingStarted(Event):
    kind: ClassVar[str] = "training_started"
    arm: str
    items: int
    resuming: bool
    params: dict[str, Any]
    record: ArmRecord = field(metadata=RECORD, repr=False)


@dataclass
class TrainingSteps(Event):
    """Per-step training metrics as the trainer logs them (a resume replays its history)."""

    kind: ClassVar[str] = "training_steps"
    arm: str
    steps: list[tuple[dict[str, float], int]]
    record: ArmRecord = field(metadata=RECORD, repr=False)


@dataclass
class ArmTrained(Event):
    kind: ClassVar[str] = "arm_trained"
    arm: str
    result: TrainResult
    record: ArmRecord = field(metadata=RECORD, repr=False)


@dataclass
class ArmFailed(Event):
    kind: ClassVar[str] = "arm_failed"
    arm: str
    error: str


@dataclass
class SmokeGenerated(Event):
    kind: ClassVar[str] = "smoke_generated"
    arm: str
    text: str


@dataclass
class ArmFinished(Event):
    kind: ClassVar[str] = "arm_finished"
    arm: str
    ok: bool
    record: ArmRecord = field(metadata=RECORD, repr=False)


@dataclass
class ArmScored(Event):
    """An arm's mean of each metric with a value (a metric with none has no mean)."""

    kind: ClassVar[str] = "arm_scored"
    arm: str
    means: dict[str, float]
    record: ArmRecord = field(metadata=RECORD, repr=False)


@dataclass
class Compared(Event):
    """The stage's paired comparisons: primary and secondary metrics, and the metrics without
    a value (metric → why)."""

    kind: ClassVar[str] = "compared"
    stage: str
    primary: Comparison
    secondary: dict[str, Comparison]
    no_value: dict[str, str]
    record: StageRecord = field(metadata=RECORD, repr=False)
    n_for_observed_effect: int | None = None  # paired items to detect the observed effect
    seeds: SeededDifference | None = None  # the primary over several training seeds per arm


@dataclass
class GateDecided(Event):
    """A stage's verdict, with every gate's evidence; `verdict_file` is its record on disk."""

    kind: ClassVar[str] = "gate_decided"
    index: int
    stage: str
    verdict: Verdict
    gates: list[GateResult]
    forced: bool
    seconds: float
    recovery: list[str]
    verdict_file: Path
    record: StageRecord = field(metadata=RECORD, repr=False)


@dataclass
class StageMeasured(Event):
    """What a training stage took, and the forecast of each stage ahead (index → forecast)."""

    kind: ClassVar[str] = "stage_measured"
    index: int
    stage: str
    actual: dict[str, Any]
    forecasts: dict[int, Forecast]
    record: StageRecord = field(metadata=RECORD, repr=False)


@dataclass
class PreflightChecked(Event):
    kind: ClassVar[str] = "preflight_checked"
    index: int
    stage: str
    boxes: list[Box]


@dataclass
class ReportWritten(Event):
    """The report is written; `answer` is the climb's answer as it stands (`render.answer`)."""

    kind: ClassVar[str] = "report_written"
    report_dir: Path
    summary: str
    answer: str
    answer_word: str


@dataclass
class ClimbEnded(Event):
    kind: ClassVar[str] = "climb_ended"


class Sink(Protocol):
    """Where events go. `emit` must not raise for an output it cannot write only if losing that
    output is harmless; the tracking sink raises (a climb must not lose its record silently)."""

    def emit(self, event: Event) -> None: ...


class Events:
    """The ladder's one outlet: every event to every sink, in order."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = list(sinks)
        # Arms training at the same time emit from their threads: one event at a time, whole.
        self._lock = threading.RLock()

    def emit(self, event: Event) -> None:
        with self._lock:
            for sink in self.sinks:
                sink.emit(event)

    def say(self, text: str, level: Level = "info", headline: str = "") -> None:
        self.emit(Notice(text, level, headline))


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a value that is not a number is no value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def event_json(event: Event) -> dict[str, Any]:
    """The event as one JSON object: its kind and its light fields (records left out)."""
    body = {
        f.name: _plain(getattr(event, f.name))
        for f in dataclasses.fields(event)
        if not f.metadata.get("record")
    }
    return {"event": event.kind, **body}
