"""The final answer follows the original plan's decision tree: GO only when every stage has a
PASS of its own. Forced, never-run and stale stages say so in words, in every place it shows."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli

from tunegate.plan import Plan, dump_plan, load_plan
from tunegate.render import answer
from tunegate.rundir import run_dir_for
from tunegate.state import LadderState, StageRecord

STAGES = ["environment", "micro", "small", "pilot", "production"]


def _state(plan: Plan, verdicts: dict[str, str], **extra: dict[str, object]) -> LadderState:
    state = LadderState(plan_name=plan.name)  # as every run's state names its plan
    for i, stage in enumerate(plan.stages):
        if stage.name in verdicts:
            fields = {"index": i, "hash": plan.stage_hash(i), "status": "done"}
            record = StageRecord.model_validate(
                {**fields, "verdict": verdicts[stage.name], **extra.get(stage.name, {})}
            )
            state.stages[stage.name] = record
    return state


def test_go_needs_every_stage_passed_on_its_own(example: Path) -> None:
    plan = load_plan(example)
    every = dict.fromkeys(STAGES, "PASS")
    assert str(answer(plan, _state(plan, every))) == "GO — every stage passed, the last included"
    assert answer(plan, LadderState()).word == "NOT RUN"
    so_far = answer(plan, _state(plan, dict.fromkeys(STAGES[:3], "PASS")))
    assert str(so_far) == "GO so far — passed through 'small'"


def test_a_forced_stage_with_nothing_before_it_is_not_a_go(example: Path) -> None:
    # `tunegate run --force-stage 4` on a fresh run: only production has a verdict, forced.
    plan = load_plan(example)
    forced = {"production": {"forced": True, "forced_reason": "stage 3 was not run"}}
    said = answer(plan, _state(plan, {"production": "PASS"}, **forced))
    assert said.word == "NOT A GO"
    assert "stage 0 (environment) never ran" in said.reason
    assert "stage 3 (pilot) never ran" in said.reason
    assert "stage 4 (production) was forced (stage 3 was not run)" in said.reason


def test_forced_past_a_failure_is_fix_and_stale_is_not_a_go(example: Path) -> None:
    plan = load_plan(example)
    verdicts = {**dict.fromkeys(STAGES, "PASS"), "small": "FAIL"}
    forced = {"pilot": {"forced": True, "forced_reason": "stage 2 was FAIL"}}
    assert str(answer(plan, _state(plan, verdicts, **forced))).startswith(
        "FIX — stage 'small' failed"
    )
    passed_forced = answer(plan, _state(plan, dict.fromkeys(STAGES, "PASS"), **forced))
    assert str(passed_forced) == "NOT A GO — stage 3 (pilot) was forced (stage 2 was FAIL)"
    stale = {"micro": {"hash": "an older plan"}}
    said = answer(plan, _state(plan, dict.fromkeys(STAGES, "PASS"), **stale))
    assert str(said) == "NOT A GO — stage 1 (micro) passed under a plan that has changed since"
    investigate = {**dict.fromkeys(STAGES, "PASS"), "pilot": "INVESTIGATE"}
    assert answer(plan, _state(plan, investigate)).word == "INVESTIGATE"


def test_status_and_report_say_not_a_go_for_a_forced_last_stage(example: Path) -> None:
    plan = load_plan(example)
    run = run_dir_for(plan)
    run.root.mkdir(parents=True)
    (run.root / "plan.json").write_text(json.dumps(dump_plan(plan)))
    forced = {"production": {"forced": True, "forced_reason": "stage 3 was not run"}}
    run.save_state(_state(plan, {"production": "PASS"}, **forced))
    status = run_cli("status", str(run.root))
    assert status.returncode == 0, status.stderr
    assert "NOT A GO — stage 0 (environment) never ran" in " ".join(status.stdout.split())
    assert "GO —" not in status.stdout.replace("NOT A GO —", "")
    report = run_cli("report", str(run.root), "--format", "md")
    assert "NOT A GO" in report.stdout and "every stage passed" not in report.stdout
