"""A stage checks its own selection before training: leaked or over-long data FAILs it."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli

PLAN = """\
name: leak-check
output_dir: runs
model: {{max_length: {max_length}}}
arms:
  control: {{role: control, data: control.jsonl}}
  experiment: {{role: experiment, data: experiment.jsonl}}
stages:
  - name: pilot
    data: {{selection: split}}
    training: {{max_steps: 2, batch_size: 2}}
    gates: {{model_saved: true}}
    checks: {{truncation: {truncation}}}
"""


def _write(
    tmp_path: Path, *, duplicate: bool, max_length: int = 256, truncation: str = "fail"
) -> Path:
    for arm in ("control", "experiment"):
        rows = []
        for k in range(20):
            body = "add" if duplicate else f"op{k}"
            rows.append(
                {
                    "id": f"s-{k:02d}",
                    "scenario": "s",
                    "prompt": f"Write {body}.\n" + ("# meta\n" if arm == "experiment" else ""),
                    "completion": f"def {body}(a, b):\n    return a + b\n",
                    "tests": f"assert {body}(1, 2) == 3\n",
                }
            )
        (tmp_path / f"{arm}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = tmp_path / "tunegate.yaml"
    plan.write_text(PLAN.format(max_length=max_length, truncation=truncation))
    return plan


def _stage(plan: Path) -> dict:
    state = json.loads((plan.parent / "runs" / "leak-check" / "state.json").read_text())
    return state["stages"]["pilot"]


def test_exact_train_test_duplicates_fail_the_stage_before_training(tmp_path: Path) -> None:
    plan = _write(tmp_path, duplicate=True)
    result = run_cli("run", str(plan))
    assert result.returncode == 1
    stage = _stage(plan)
    assert stage["verdict"] == "FAIL"
    gate = next(g for g in stage["gates"] if g["name"] == "data_checks")
    assert "leakage" in gate["evidence"] and "exact" in gate["evidence"]
    assert "is training item" in result.stdout  # the leaked ids are named
    assert stage["arms"] == {}  # nothing was trained


def test_a_sample_longer_than_max_length_is_named(tmp_path: Path) -> None:
    plan = _write(tmp_path, duplicate=False, max_length=16)
    result = run_cli("run", str(plan))
    assert result.returncode == 1
    gate = next(g for g in _stage(plan)["gates"] if g["name"] == "data_checks")
    assert "token_lengths" in gate["evidence"]
    assert "s-00" in result.stdout  # every truncated sample is named (first ones shown)
