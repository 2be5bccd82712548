"""The seed's pre-flight checklist, ticked from recorded evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunegate.plan import load_plan
from tunegate.preflight import checklist


def _passed_state(plan: Any) -> dict[str, Any]:
    gates = [
        {"name": "min_improvement", "passed": True, "evidence": "+40% points"},
        {"name": "max_p_value", "passed": True, "evidence": "p = 0.001"},
        {"name": "evaluation_ran", "passed": True, "evidence": "15/15 items scored"},
    ]
    stages = {s.name: {"verdict": "PASS", "gates": [], "arms": {}} for s in plan.stages[:-1]}
    stages["pilot"]["gates"] = gates
    stages["environment"]["checks"] = [{"name": "tracking", "status": "PASS", "value": "sqlite"}]
    stages["small"]["actual"] = {"wall_hours": 0.1, "usd": 0.0}
    return {"stages": stages, "mlflow_parent": "abc123"}


def test_every_box_ticked_from_evidence(example: Path) -> None:
    plan = load_plan(example)  # budget: 1 hour, approved
    forecast = {"high_hours": 0.2, "high_usd": 0.0}
    boxes = checklist(plan, _passed_state(plan), forecast)
    assert all(b.ticked for b in boxes), [b for b in boxes if not b.ticked]
    labels = [b.label for b in boxes]
    assert "Stage 3 passed (pilot)" in labels
    assert any("statistically significant" in label for label in labels)
    # The seed's ten boxes, with "Stage 3 passed (>10% improvement confirmed)" split in two.
    assert len(boxes) == 11
    assert next(b for b in boxes if "significant" in b.label).evidence == "p = 0.001"


def test_each_missing_piece_of_evidence_unticks_its_box(example: Path) -> None:
    plan = load_plan(example)
    state = _passed_state(plan)
    state["stages"]["pilot"]["gates"][1]["passed"] = False  # p too large
    state["stages"]["small"]["arms"] = {"control": {"error": "OutOfMemoryError: CUDA"}}
    state["stages"]["environment"]["checks"][0]["status"] = "FAIL"
    boxes = {b.label: b for b in checklist(plan, state, {"high_hours": 2.0, "high_usd": 0.0})}
    unticked = [label for label, b in boxes.items() if not b.ticked]
    assert any("statistically significant" in u for u in unticked)
    assert "No crashes or OOM errors" in unticked
    assert "MLflow logging works" in unticked
    assert any(u.startswith("2.00 h of time available") for u in unticked)  # 0.9 h left
    assert "OutOfMemoryError" in boxes["No crashes or OOM errors"].evidence
    plan.budget.approved = False
    assert any(
        "set budget.approved: true" in b.evidence
        for b in checklist(plan, _passed_state(plan), {"high_hours": 0.1, "high_usd": 0.0})
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
