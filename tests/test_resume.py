"""`tunegate run` killed with SIGKILL, then run again, gives the *same figures* as a climb never
interrupted: before an arm's first checkpoint and after one, finished arms are not retrained,
the interrupted arm resumes from its checkpoint, and no MLflow step is logged twice.

Same figures means equal to the last digit on this machine: losses, validation losses, every
item's scores and the comparison. A resumed arm restores the adapter, optimizer, scheduler, data
position and random state from its checkpoint, in the precision it was trained in.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import EXAMPLE, TUNEGATE, run_cli

RUN = Path("runs") / "metadata-experiment"
STAGES = ("micro", "small")


def _copy_example(target: Path) -> Path:
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("runs"))
    return target / "tunegate.yaml"


def _state(plan: Path) -> dict:
    return json.loads((plan.parent / RUN / "state.json").read_text())


def _figures(plan: Path) -> dict:
    """Every number a climb to stage 2 produced, except times."""
    state = _state(plan)
    out: dict = {}
    for index, stage in enumerate(STAGES, start=1):
        record = state["stages"][stage]
        out[stage] = {
            "verdict": record["verdict"],
            "gates": [g["evidence"] for g in record["gates"]],
        }
        for arm, arm_record in record["arms"].items():
            train = arm_record["train"]
            out[stage][arm] = {
                k: train[k] for k in ("steps", "losses", "eval_loss_before", "eval_loss_after")
            }
        stage_dir = plan.parent / RUN / f"stage-{index}-{stage}"
        if (stage_dir / "results.jsonl").is_file():
            rows = [json.loads(line) for line in (stage_dir / "results.jsonl").open()]
            out[stage]["items"] = sorted(
                (
                    r["arm"],
                    r["id"],
                    r["generation"],
                    {m: s["value"] for m, s in r["metrics"].items()},
                )
                for r in rows
            )
            out[stage]["primary"] = record["comparison"]["primary"]
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    plan = _copy_example(tmp_path_factory.mktemp("clean") / "exp")
    result = run_cli("run", str(plan), "--until", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return _figures(plan)


def _kill_when(plan: Path, pattern: str) -> None:
    """Start the climb, SIGKILL its whole process group once `pattern` exists in the run."""
    proc = subprocess.Popen(
        [TUNEGATE, "run", str(plan), "--until", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    run_dir = plan.parent / RUN
    deadline = time.monotonic() + 600
    try:
        while not any(run_dir.glob(pattern)):
            assert proc.poll() is None, f"the run ended before {pattern} appeared"
            assert time.monotonic() < deadline, f"{pattern} never appeared"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize(
    "pattern",
    [
        # Its validation loss is written; training has begun, no checkpoint yet: resumes from
        # scratch, as the first run would have gone on.
        pytest.param("stage-2-small/experiment/eval_before.json", id="before-first-checkpoint"),
        pytest.param(
            "stage-2-small/experiment/checkpoints/checkpoint-*/trainer_state.json",
            id="after-a-checkpoint",
        ),
        pytest.param(
            "stage-2-small/control/checkpoints/checkpoint-1[05]0/trainer_state.json",
            id="first-arm-mid-training",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "stage-1-micro/experiment/eval_before.json",
            id="micro-second-arm",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_sigkill_then_resume_gives_the_same_figures(
    pattern: str, uninterrupted: dict, tmp_path: Path
) -> None:
    plan = _copy_example(tmp_path / "exp")
    _kill_when(plan, pattern)
    killed = _state(plan)
    stage, arm = pattern.split("/")[0].split("-")[2], pattern.split("/")[1]
    assert killed["stages"][stage]["verdict"] is None
    assert killed["stages"][stage]["arms"][arm]["status"] == "training"
    finished = {
        (s, a): (Path(r["train"]["adapter_dir"]) / "adapter_model.safetensors").stat().st_mtime_ns
        for s, record in killed["stages"].items()
        for a, r in record.get("arms", {}).items()
        if r["status"] == "done"
    }

    resumed = run_cli("run", str(plan), "--until", "2")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert _figures(plan) == uninterrupted

    after = _state(plan)
    for (s, a), mtime in finished.items():  # finished arms are reused, not retrained
        adapter = Path(after["stages"][s]["arms"][a]["train"]["adapter_dir"])
        assert (adapter / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    record = after["stages"][stage]["arms"][arm]
    if "checkpoint-" in pattern:
        assert (
            f"{arm}: training on" in resumed.stdout and "(resuming from its last" in resumed.stdout
        )
        assert record["train"]["resumed_from"].startswith("checkpoint-")

    # MLflow: the resumed arm's loss history has every step exactly once, through the end.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=after["tracking_uri"])
    steps = [m.step for m in client.get_metric_history(record["mlflow_run"], "loss")]
    assert sorted(steps) == list(range(1, record["train"]["steps"] + 1))
