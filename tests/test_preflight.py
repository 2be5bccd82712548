"""The original plan's pre-flight checklist, ticked from recorded evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunegate.gates import GateResult
from tunegate.plan import load_plan
from tunegate.preflight import checklist
from tunegate.state import Actual, ArmRecord, Check, Forecast, LadderState, StageRecord


def _forecast(hours: float) -> Forecast:
    return Forecast("production", hours, hours, hours, 0.0, 0.0, 0.0, 100, "measured", 1.0, 0.0)


def _passed_state(plan: Any) -> LadderState:
    gates = [
        GateResult("min_improvement", True, "effect", "+40% points"),
        GateResult("max_p_value", True, "effect", "p = 0.001"),
        GateResult("evaluation_ran", True, "health", "15/15 items scored"),
    ]
    stages = {
        s.name: StageRecord(index=i, hash=plan.stage_hash(i), verdict="PASS")
        for i, s in enumerate(plan.stages[:-1])
    }
    stages["pilot"].gates = gates
    stages["environment"].checks = [Check("tracking", "PASS", "sqlite")]
    stages["small"].actual = Actual("small", 0.1, 0.0, "cpu", 0, 0, None, 0, 0.0, 0.0)
    return LadderState(stages=stages, mlflow_parent="abc123")


def test_every_box_ticked_from_evidence(example: Path) -> None:
    plan = load_plan(example)  # budget: 1 hour, approved
    boxes = checklist(plan, _passed_state(plan), _forecast(0.2))
    assert all(b.ticked for b in boxes), [b for b in boxes if not b.ticked]
    labels = [b.label for b in boxes]
    assert "Stage 3 passed (pilot)" in labels
    assert any("statistically significant" in label for label in labels)
    # The original plan's ten boxes, with "Stage 3 passed (>10% improvement confirmed)" split in
    # two.
    assert len(boxes) == 11
    assert next(b for b in boxes if "significant" in b.label).evidence == "p = 0.001"


def test_each_missing_piece_of_evidence_unticks_its_box(example: Path) -> None:
    plan = load_plan(example)
    state = _passed_state(plan)
    state.stages["pilot"].gates[1].passed = False  # p too large
    state.stages["small"].arms = {"control": ArmRecord(error="OutOfMemoryError: CUDA")}
    state.stages["environment"].checks = [Check("tracking", "FAIL", "refused")]
    boxes = {b.label: b for b in checklist(plan, state, _forecast(2.0))}
    unticked = [label for label, b in boxes.items() if not b.ticked]
    assert any("statistically significant" in u for u in unticked)
    assert "No crashes or OOM errors" in unticked
    assert "MLflow logging works" in unticked
    assert any(u.startswith("2.00 h of time available") for u in unticked)  # 0.9 h left
    assert "OutOfMemoryError" in boxes["No crashes or OOM errors"].evidence
    plan.budget.approved = False
    assert any(
        "set budget.approved: true" in b.evidence
        for b in checklist(plan, _passed_state(plan), _forecast(0.1))
    )


def test_an_unticked_box_stops_the_last_stage_through_the_cli(example: Path) -> None:
    """The climb stops before the last stage when the budget is not approved; nothing trains,
    the FAIL is recorded on a `preflight` gate, and a recorded --force-stage overrides it."""
    import json

    from conftest import run_cli

    text = example.read_text()
    text = text[: text.index("  - name: small")]  # environment, then micro as the last stage
    text = text.replace("budget: {hours: 1, approved: true}", "budget: {hours: 1, approved: false}")
    example.write_text(text)
    result = run_cli("run", str(example))
    assert result.returncode == 1
    out = " ".join(result.stdout.split())
    assert "Pre-flight checklist (before stage 1, micro)" in out
    assert "✗ Budget $0.00 for micro approved — set budget.approved: true" in out
    assert "✓ Stage 0 passed (environment)" in out
    assert "Stage 1 (micro) not started: the pre-flight checklist has 1 unticked box(es)" in out
    run_dir = example.parent / "runs" / "metadata-experiment"
    micro = json.loads((run_dir / "state.json").read_text())["stages"]["micro"]
    assert micro["verdict"] == "FAIL" and micro["gates"][0]["name"] == "preflight"
    assert "Budget $0.00 for micro approved" in micro["gates"][0]["evidence"]
    assert not (run_dir / "stage-1-micro" / "control").exists()  # nothing trained
