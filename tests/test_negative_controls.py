"""Negative controls: ladders that must not say GO. Two arms holding the same data, an
experiment that is worse than its control, and an arm that crashes, each climbed through the CLI
on the real trainer; each ends as the original plan's decision tree says and prints its recovery
actions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

PLAN = """\
name: negative
seed: 42
output_dir: runs
model: {{name: tiny-llama, max_length: 256}}
lora: {{dropout: 0.0}}
training: {{learning_rate: 3.0e-3, batch_size: 4, epochs: 30, gradient_checkpointing: false,
           save_steps: 50}}
arms:
  control: {{role: control, data: data/{control}.jsonl}}
  experiment: {{role: experiment, data: data/{experiment}.jsonl}}
pilot_scenario: bugfix
stages:
  - name: small
    data: {{selection: head, n: {n}, val_n: 5, test_n: 10}}
    training: {training}
    evaluation: {{mode: full, metrics: [functional_correctness]}}
    gates: {{model_saved: true, evaluation_ran: true, min_improvement: 0.05}}
    recovery: ["Check that the arms differ the way the hypothesis says"]
"""


def _climb(example: Path, **fields: object) -> tuple[int, str, dict]:
    plan = example.parent / "negative.yaml"
    plan.write_text(PLAN.format(**fields))
    result = run_cli("run", str(plan))
    out = " ".join(result.stdout.split())
    assert "Traceback" not in result.stdout + result.stderr
    state = json.loads((example.parent / "runs" / "negative" / "state.json").read_text())
    return result.returncode, out, state["stages"]["small"]


def test_two_arms_with_the_same_data_end_investigate(example: Path) -> None:
    code, out, stage = _climb(
        example, control="control", experiment="control", n=8, training="{max_steps: 10}"
    )
    assert code == 1 and stage["verdict"] == "INVESTIGATE"
    # Same data, same seed, same order: the arms are one model trained twice, no difference.
    assert stage["comparison"]["primary"]["difference"] == 0
    failed = [g["name"] for g in stage["gates"] if not g["passed"]]
    assert failed == ["min_improvement"]
    assert "INVESTIGATE — stage 'small' ran, but its effect gates did not pass" in out
    assert "Recovery (from the plan): 1. Check that the arms differ" in out


def test_an_arm_that_crashes_ends_fix(example: Path) -> None:
    # A file where the control's adapter directory must go: saving it fails, a real crash.
    blocker = example.parent / "runs" / "negative" / "stage-0-small" / "control" / "adapter"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")
    code, out, stage = _climb(
        example, control="control", experiment="experiment", n=8, training="{max_steps: 10}"
    )
    assert code == 1 and stage["verdict"] == "FAIL"
    ran = next(g for g in stage["gates"] if g["name"] == "ran")
    assert not ran["passed"] and ran["evidence"].startswith("control: ")
    assert "FIX — stage 'small' failed" in out
    assert "Recovery (from the plan): 1. Check that the arms differ" in out


@pytest.mark.slow
def test_an_experiment_worse_than_its_control_ends_investigate(example: Path) -> None:
    # The example's arms swapped: the "experiment" has the plain prompts, the control the
    # metadata that the tests need. Trained as the example's small stage trains.
    code, out, stage = _climb(
        example, control="experiment", experiment="control", n=40, training="{}"
    )
    assert code == 1 and stage["verdict"] == "INVESTIGATE"
    primary = stage["comparison"]["primary"]
    assert primary["difference"] <= -0.4, primary  # the control learns it, the experiment cannot
    assert "INVESTIGATE — stage 'small' ran, but its effect gates did not pass" in out
    assert "Recovery (from the plan)" in out
