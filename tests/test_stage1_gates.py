"""Stage 1's gates are real: a run that does not learn, or cannot save, FAILs with the reason."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli

MICRO_ONLY = """\
name: micro-check
output_dir: runs
training: {{learning_rate: {lr}, gradient_checkpointing: false}}
lora: {{dropout: 0.0}}
arms:
  control: {{role: control, data: data/control.jsonl}}
  experiment: {{role: experiment, data: data/experiment.jsonl}}
stages:
  - name: micro
    data: {{selection: micro}}
    training: {{max_steps: 10, batch_size: 1, save_steps: 5}}
    evaluation: {{mode: smoke}}
    gates: {{loaded_in_4bit: true, loss_decreased: true, model_saved: true, generates: true}}
    recovery: ["Debug training script locally"]
"""


def _plan(example: Path, lr: str) -> Path:
    plan = example.parent / "micro.yaml"
    plan.write_text(MICRO_ONLY.format(lr=lr))
    return plan


def _state(plan: Path) -> dict:
    return json.loads((plan.parent / "runs" / "micro-check" / "state.json").read_text())


def test_micro_passes_with_a_learning_rate(micro_climb: Path) -> None:
    # The example's own stage 1 (the session's shared climb): every gate passes.
    state = json.loads((micro_climb.parent / "runs/metadata-experiment/state.json").read_text())
    gates = {g["name"]: g for g in state["stages"]["micro"]["gates"]}
    assert set(gates) == {"loaded_in_4bit", "loss_decreased", "model_saved", "generates"}
    assert all(g["passed"] for g in gates.values())
    assert "Linear4bit" in gates["loaded_in_4bit"]["evidence"]


def test_learning_rate_zero_fails_the_loss_gate(example: Path) -> None:
    plan = _plan(example, "0.0")
    result = run_cli("run", str(plan))
    assert result.returncode == 1
    stage = _state(plan)["stages"]["micro"]
    assert stage["verdict"] == "FAIL"
    loss_gate = next(g for g in stage["gates"] if g["name"] == "loss_decreased")
    assert not loss_gate["passed"]
    assert "val loss" in loss_gate["evidence"]  # the evidence shows why, for both arms
    assert "Debug training script locally" in result.stdout  # the recovery actions


def test_an_unsavable_adapter_fails_with_its_reason(example: Path) -> None:
    plan = _plan(example, "3.0e-3")
    blocker = plan.parent / "runs" / "micro-check" / "stage-0-micro" / "control" / "adapter"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the adapter directory should go")
    result = run_cli("run", str(plan))
    assert result.returncode == 1
    stage = _state(plan)["stages"]["micro"]
    assert stage["verdict"] == "FAIL"
    assert stage["arms"]["control"]["status"] == "failed"
    saved = next(g for g in stage["gates"] if g["name"] == "model_saved")
    assert not saved["passed"] and "control" in saved["evidence"]
    assert "Traceback" not in result.stdout + result.stderr


def test_force_stage_runs_past_a_failure_and_records_it(example: Path) -> None:
    plan = example.parent / "two.yaml"
    two_stages = MICRO_ONLY.format(lr="3.0e-3") + (
        "  - name: again\n"
        "    data: {selection: micro}\n"
        "    training: {max_steps: 10, batch_size: 1, learning_rate: 3.0e-3}\n"
        "    evaluation: {mode: smoke}\n"
        "    gates: {model_saved: true}\n"
    )
    # The first stage cannot learn (lr 0), so it FAILs and the second must not start.
    plan.write_text(
        two_stages.replace(
            "training: {max_steps: 10, batch_size: 1, save_steps: 5}",
            "training: {max_steps: 10, batch_size: 1, learning_rate: 0}",
        )
    )
    first = run_cli("run", str(plan))
    assert first.returncode == 1
    blocked = run_cli("run", str(plan), "--stage", "1", "--events", "-")
    assert blocked.returncode == 1
    # `--events -`: the climb as JSON lines on stdout, for tools. Refused before it opened
    # anything (no torch, tracking or report: in a blink), the refusal is its one event.
    events = [json.loads(line) for line in blocked.stdout.splitlines()]
    assert [e["event"] for e in events] == ["notice"]
    refusal = events[0]
    assert refusal["level"] == "error" and refusal["headline"] == "Stage 1 (again) not started:"
    assert "stage 0 (micro) is FAIL" in refusal["text"] and "--force-stage 1" in refusal["text"]
    state = _state(plan)
    assert "again" not in state["stages"]

    forced = run_cli("run", str(plan), "--stage", "1", "--force-stage", "1")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    state = _state(plan)
    again = state["stages"]["again"]
    assert again["verdict"] == "PASS" and again["forced"] is True
    assert again["forced_reason"] == "stage 0 was FAIL"
    assert "(forced)" in forced.stdout

    from mlflow.tracking import MlflowClient

    tags = MlflowClient(tracking_uri=state["tracking_uri"]).get_run(again["mlflow_run"]).data.tags
    assert tags["tunegate.forced"] == "true"
