"""A tracking store that is down, hangs, or dies mid-climb: every call has a deadline, and the
climb ends in bounded time with the reason, never a hang or a traceback (docs/reliability.md,
"Tracking server").

Real parts: MLflow's own client against a port nothing listens on (refused), a socket that
accepts and never answers (hung), and in the slow test a real `mlflow server` killed with
SIGKILL in the middle of an arm's training, then restarted for the resume.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import run_cli
from faults import FIRST_CHECKPOINT, climb_until_first_checkpoint
from test_mlflow_server import START_TIMEOUT_S, _free_port, _health, _stop

from tunegate.tracking import MLFLOW_HTTP_DEFAULTS, Tracker, TrackingFailed

RUN = Path("runs") / "metadata-experiment"


def _events(exp: Path) -> list[dict[str, object]]:
    lines = (exp / RUN / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _at(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["time"])).timestamp()


def _pointed_at(plan: Path, uri: str) -> None:
    text = plan.read_text()
    assert "  uri: null" in text, "the example's tracking block changed"
    plan.write_text(text.replace("  uri: null", f"  uri: {uri}", 1))


# --- each call has a deadline -------------------------------------------------------------------
def test_mlflow_retries_are_set_on_purpose_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in MLFLOW_HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # the user's own choice
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path)
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    # MLflow's defaults (7 retries, backoff factor 2, up to 120 s per wait) spent ~250 s on a
    # server that was down; these are what MLflow itself reads now.
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 4
    assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() == 1
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 30


def test_a_refused_server_fails_a_call_within_the_retry_budget(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingFailed) as failed:
        Tracker(uri, "exp", tmp_path)
    seconds = time.monotonic() - started
    # 5 attempts with 0 + 2 + 4 + 8 s (+ jitter) between them: a restart of a few seconds is
    # ridden out, a dead server is said in well under the 60 s the climb promises.
    assert 10 < seconds < 25, seconds
    assert "connection refused" in failed.value.reason
    assert failed.value.exit_code == 1 and "mlflow server" in str(failed.value)


def test_a_server_that_never_answers_is_cut_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEGATE_TRACKING_DEADLINE_S", "3")
    with socket.socket() as hung:  # listens, so connections are accepted by the kernel; no reply
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        uri = f"http://127.0.0.1:{hung.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(TrackingFailed, match=r"no answer in 3 s"):
            Tracker(uri, "exp", tmp_path)
        assert time.monotonic() - started < 5


def test_once_a_call_failed_the_next_ones_fail_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("TUNEGATE_TRACKING_DEADLINE_S", "2")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path)
    run = tracker.start("arm")
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        # The store goes silent mid-run (a client of the same kind, pointed at a hung server).
        tracker.client = MlflowClient(tracking_uri=f"http://127.0.0.1:{hung.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(TrackingFailed, match="log metrics: no answer in 2 s"):
            tracker.metrics(run, {"loss": 1.0}, 1)
        assert 2 <= time.monotonic() - started < 4
        started = time.monotonic()
        with pytest.raises(TrackingFailed, match="log metrics: no answer in 2 s"):
            tracker.tags(run, {"a": "b"})
        assert time.monotonic() - started < 0.1  # no second wait: the climb stops in one


# --- the climb ----------------------------------------------------------------------------------
def test_server_down_at_the_start_is_a_stage_0_fail_with_the_fix(example: Path) -> None:
    _pointed_at(example, f"http://127.0.0.1:{_free_port()}")
    result = run_cli("run", str(example), timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "FAIL tracking: http://127.0.0.1:" in out and "/health: connection refused" in out
    assert "start the MLflow server (`mlflow server`)" in out
    assert "FIX — stage 'environment' failed" in out
    exp = example.parent
    state = json.loads((exp / RUN / "state.json").read_text())
    assert state["stages"]["environment"]["verdict"] == "FAIL"
    assert "micro" not in state["stages"] and state["mlflow_parent"] is None
    events = {e["event"]: e for e in _events(exp)}
    # From the climb's opening to stage 0's verdict (the process's start, imports of torch and
    # the like, is not the tracking server's doing).
    took = _at(events["gate_decided"]) - _at(events["climb_opened"])
    assert took < 10, took
    print(f"\nclimb opened → stage 0 FAIL: {took:.1f} s")


def test_server_down_past_stage_0_is_one_line(example: Path) -> None:
    first = run_cli("run", str(example), "--until", "0", timeout=300)  # a local store: PASS
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    exp = example.parent
    _pointed_at(example, f"http://127.0.0.1:{_free_port()}")
    before = (exp / RUN / "state.json").read_text()
    started = time.time()
    result = run_cli("run", str(example), "--from", "1", timeout=300)
    ended = time.time()
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: Stage 1 (micro) not started: tracking http://127.0.0.1:")
    assert "/health: connection refused — start the MLflow server" in errors[0]
    # Nothing of the stage shows or is recorded: only the machine line every climb opens with.
    assert result.stdout.strip().startswith("Machine: ") and len(result.stdout.splitlines()) == 1
    assert (
        json.loads((exp / RUN / "state.json").read_text())["stages"] == json.loads(before)["stages"]
    )
    opened = next(e for e in _events(exp) if e["event"] == "climb_opened" and _at(e) >= started)
    took = ended - _at(opened)
    assert took < 10, took
    print(f"\nclimb opened → exit: {took:.1f} s; the whole command: {ended - started:.1f} s")


# --- killed mid-arm, then restarted ---------------------------------------------------------------
class Server:
    """A real `mlflow server` that a test can kill and start again on the same port and store."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        argv = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--workers", "1",
        ]  # fmt: skip
        with (self.root / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _health(self.uri):
            assert self.proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # no goodbye: as a crash or an OOM kill
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _stop(self.proc)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "mlflow-server"
    root.mkdir()
    running = Server(root)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.slow
def test_server_killed_mid_arm_fails_the_stage_and_a_resume_completes_mlflow(
    example: Path, server: Server
) -> None:
    from mlflow.tracking import MlflowClient

    steps = 40
    text = example.read_text().replace(
        "training: {max_steps: 10, batch_size: 1, save_steps: 5}",
        f"training: {{max_steps: {steps}, batch_size: 1, save_steps: 5}}",
    )
    example.write_text(text)
    _pointed_at(example, server.uri)
    exp = example.parent
    # The control arm's first checkpoint: training is under way, its steps go to MLflow.
    climb = climb_until_first_checkpoint(example, exp / RUN)
    server.kill()
    killed = time.monotonic()
    out, err = climb.communicate(timeout=300)
    took = time.monotonic() - killed
    print(f"\nserver killed → climb exited: {took:.1f} s")
    assert climb.returncode == 1, out[-3000:] + err[-3000:]
    assert took < 60
    assert "Traceback" not in out + err
    errors = err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: tracking {server.uri}: "), err
    assert "connection refused" in errors[0] and "`tunegate run` resumes" in errors[0]
    state = json.loads((exp / RUN / "state.json").read_text())
    micro = state["stages"]["micro"]
    assert micro["verdict"] == "FAIL" and [g["name"] for g in micro["gates"]] == ["tracking"]
    assert "✗ tracking: tracking http://127.0.0.1:" in out and "→ FAIL" in out
    # Training stopped soon after, with a checkpoint: the resume loses nothing.
    kept = (exp / RUN / FIRST_CHECKPOINT).parent
    checkpoints = sorted(kept.glob("checkpoint-*/trainer_state.json"))
    assert checkpoints and micro["arms"]["control"]["status"] == "failed"

    server.start()
    resumed = run_cli("run", str(example), "--until", "1", timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    # One run tree, each run once, every step of each arm logged exactly once.
    client = MlflowClient(tracking_uri=server.uri)
    experiment = client.get_experiment_by_name("tunegate-demo")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    levels = Counter(r.data.tags.get("tunegate.level") for r in runs)
    assert levels == {"ladder": 1, "stage": 2, "arm": 2}, levels
    state = json.loads((exp / RUN / "state.json").read_text())
    assert {r.info.run_id for r in runs if r.data.tags["tunegate.level"] == "ladder"} == {
        state["mlflow_parent"]
    }
    for arm in ("control", "experiment"):
        run_id = state["stages"]["micro"]["arms"][arm]["mlflow_run"]
        logged = [m.step for m in client.get_metric_history(run_id, "loss")]
        assert sorted(logged) == list(range(1, steps + 1)), (arm, logged)
    stage = client.get_run(state["stages"]["micro"]["mlflow_run"])
    assert stage.data.tags["tunegate.verdict"] == "PASS" and stage.info.status == "FINISHED"
