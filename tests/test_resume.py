"""`tunegate run` killed with SIGKILL mid-training, then run again: same verdicts, no re-training
of finished arms, the interrupted arm resumed from its checkpoint, no MLflow step logged twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import TUNEGATE, run_cli


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())


def _kill_during_experiment_training(plan: Path, run_dir: Path) -> None:
    proc = subprocess.Popen(
        [TUNEGATE, "run", str(plan), "--until", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoints = run_dir / "stage-2-small" / "experiment" / "checkpoints"
    deadline = time.monotonic() + 600
    try:
        while not any(checkpoints.glob("checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_sigkill_then_resume_gives_the_same_verdicts(example: Path, tmp_path: Path) -> None:
    run_dir = example.parent / "runs" / "metadata-experiment"
    _kill_during_experiment_training(example, run_dir)

    killed = _state(run_dir)
    small = killed["stages"]["small"]
    assert small["status"] == "running" and small["verdict"] is None
    assert small["arms"]["control"]["status"] == "done"
    assert small["arms"]["experiment"]["status"] == "training"
    control_adapter = Path(small["arms"]["control"]["train"]["adapter_dir"])
    adapter_file = control_adapter / "adapter_model.safetensors"
    mtime = adapter_file.stat().st_mtime_ns

    resumed = run_cli("run", str(example), "--until", "2")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "control: trained adapter recorded" in resumed.stdout
    assert "experiment: training on 40 items (resuming from its last checkpoint)" in resumed.stdout
    assert adapter_file.stat().st_mtime_ns == mtime  # the finished arm was not re-trained
    after = _state(run_dir)
    assert after["stages"]["small"]["arms"]["experiment"]["train"]["resumed_from"].startswith(
        "checkpoint-"
    )

    # The same ladder, never interrupted, in another directory.
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    for name in ("tunegate.yaml", "data"):
        os.symlink(example.parent / name, clean_dir / name)
    clean = run_cli("run", str(clean_dir / "tunegate.yaml"), "--until", "2")
    assert clean.returncode == 0
    reference = _state(clean_dir / "runs" / "metadata-experiment")
    for stage in ("environment", "micro", "small"):
        assert after["stages"][stage]["verdict"] == reference["stages"][stage]["verdict"] == "PASS"
    # Resuming restores adapter, optimizer, scheduler and RNG: the losses agree closely (CPU
    # kernels are not bit-exact across a restart, so not to the last digit).
    resumed_loss = after["stages"]["small"]["arms"]["experiment"]["train"]["eval_loss_after"]
    clean_loss = reference["stages"]["small"]["arms"]["experiment"]["train"]["eval_loss_after"]
    assert abs(resumed_loss - clean_loss) < 0.05 * clean_loss

    # MLflow: the resumed arm's loss history has every step exactly once, through the end.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=after["tracking_uri"])
    run_id = after["stages"]["small"]["arms"]["experiment"]["mlflow_run"]
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    total = after["stages"]["small"]["arms"]["experiment"]["train"]["steps"]
    assert sorted(steps) == list(range(1, total + 1))
