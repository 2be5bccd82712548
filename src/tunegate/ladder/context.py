"""What every part of a climb shares: the plan and data, the run directory and its state, the
events outlet and the progress bars; and the Protocol a stage kind's runner implements."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from tunegate.data.arms import Experiment
from tunegate.data.select import Selection
from tunegate.events import Events
from tunegate.gates import StageEvidence
from tunegate.ladder.selection import resolve_selection
from tunegate.plan import Plan, Stage
from tunegate.progress import Bars
from tunegate.rundir import RunDir
from tunegate.state import LadderState, StageRecord


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Climb:
    plan: Plan
    exp: Experiment
    run: RunDir
    events: Events
    bars: Bars
    state: LadderState = field(default_factory=LadderState)
    # Training stages' selections, resolved before anything is written (a bad one is refused).
    selections: dict[int, Selection] = field(default_factory=dict)
    # Arms training at the same time save from their threads: one whole state file at a time.
    _saving: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def save(self) -> None:
        with self._saving:
            self.run.save_state(self.state)

    def selection(self, index: int) -> Selection:
        if index not in self.selections:
            self.selections[index] = resolve_selection(self.plan, self.exp, self.plan.stages[index])
        return self.selections[index]

    def stage_record(self, index: int, stage: Stage) -> StageRecord:
        """The stage's record, new when there is none or its configuration changed (then the
        old configuration's outputs are removed: they must not be reused)."""
        record = self.state.stages.get(stage.name)
        h = self.plan.stage_hash(index)
        if record and record.hash != h:
            shutil.rmtree(self.run.stage_dir(index, stage.name), ignore_errors=True)
            record = None
        if record is None:
            record = StageRecord(index=index, hash=h)
            self.state.stages[stage.name] = record
        return record


@dataclass
class StageRun:
    """One stage being run: where it is, where it writes, and its record."""

    index: int
    stage: Stage
    stage_dir: Path
    record: StageRecord


class StageRunner(Protocol):
    """Runs one kind of stage and returns the evidence its gates read."""

    def __call__(self, climb: Climb, run: StageRun) -> StageEvidence: ...
