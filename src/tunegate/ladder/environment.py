"""The environment stage: the doctor's checks, as a stage with gates."""

from __future__ import annotations

from tunegate.events import EnvironmentChecked
from tunegate.gates import StageEvidence
from tunegate.ladder.context import Climb, StageRun
from tunegate.rundir import atomic_write_json


def run_environment(climb: Climb, run: StageRun) -> StageEvidence:
    from tunegate.doctor import run_checks

    checks = run_checks(climb.plan)
    as_json = [c.to_json() for c in checks]
    atomic_write_json(run.stage_dir / "checks.json", as_json)
    run.record.checks = checks  # the pre-flight checklist reads them
    climb.events.emit(EnvironmentChecked(checks))
    return StageEvidence(arms={}, environment=as_json)
