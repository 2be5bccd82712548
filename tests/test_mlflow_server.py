"""Tracking against a real `mlflow server`, not a local sqlite store.

One server per module (the venv's own mlflow, sqlite backend, artifacts proxied through the
server to a local directory) on a free loopback port. Against it:

- `tunegate doctor --json` reads the server's `/health` and `/version` and reports the version
  the server actually runs;
- `tunegate run --until 1` records the ladder → stage → arm hierarchy, per-step losses and the
  stage verdicts over HTTP, and its artifacts travel through the server's artifact proxy (they
  land in the server's artifact directory and download back), while nothing is written to a
  local store next to the plan.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from conftest import run_cli, run_in_terminal
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

# The server answers /health in ~5 s on a 2-core machine; 60 s tolerates a loaded CI box.
START_TIMEOUT_S = 60.0
# uvicorn drains and exits in about a second on SIGTERM; after this the group is SIGKILLed.
STOP_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(uri: str) -> bool:
    # No proxy: an http_proxy in the environment must not intercept loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{uri}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _group_gone(proc: subprocess.Popen[bytes], wait_s: float) -> bool:
    """Whether every process of `proc`'s group has exited within `wait_s`."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, or it stays in the group as a zombie
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole group (mlflow → uvicorn worker), SIGKILL what outlives the grace."""
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if _group_gone(proc, wait_s):
            break
    proc.wait(timeout=5)


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's working directory: its sqlite store, artifact root and log."""
    return tmp_path_factory.mktemp("mlflow-server")


@pytest.fixture(scope="module")
def mlflow_server(server_dir: Path) -> Iterator[str]:
    """A real `mlflow server` on a free loopback port; yields its URI."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log = server_dir / "server.log"
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--backend-store-uri", f"sqlite:///{server_dir / 'mlflow.db'}",
        # --serve-artifacts is the default in 3.x: new experiments get mlflow-artifacts:/ roots
        # and the server stores their files here.
        "--artifacts-destination", str(server_dir / "artifacts"),
        "--workers", "1",
    ]  # fmt: skip
    env = {
        **os.environ,
        # Otherwise the server also starts a job runner with seven huey consumers and leaves a
        # directory in /dev/shm behind; tracking needs none of it.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=server_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own group: teardown kills uvicorn's worker too
        )
    try:
        deadline = started + START_TIMEOUT_S
        while not _health(uri):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited with {proc.returncode}"
                    if proc.returncode is not None
                    else f"gave no /health in {START_TIMEOUT_S:g} s"
                )
                pytest.fail(f"mlflow server {why}:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        print(f"\nmlflow server {uri} up in {time.monotonic() - started:.1f} s")
        yield uri
    finally:
        _stop(proc)


def _pointed_at(plan: Path, uri: str) -> Path:
    """The example plan with tracking.uri set to `uri`."""
    text = plan.read_text()
    assert "  uri: null" in text, "the example's tracking block changed"
    plan.write_text(text.replace("  uri: null", f"  uri: {uri}", 1))
    return plan


def test_doctor_reads_a_real_server_health_and_version(example: Path, mlflow_server: str) -> None:
    plan = _pointed_at(example, mlflow_server)
    result = run_cli("doctor", str(plan), "--json", timeout=120)
    body = json.loads(result.stdout)
    checks = {c["name"]: c for c in body["checks"]}
    failed = [name for name, c in checks.items() if c["status"] == "FAIL"]
    assert result.returncode == (1 if failed else 0), result.stderr[-2000:]

    tracking = checks["tracking"]
    assert tracking["status"] == "PASS", tracking
    # The version came from the server's /version, and /health's body was read.
    assert tracking["value"].startswith(f"{mlflow_server}: MLflow {mlflow.__version__} "), tracking
    assert "/health OK" in tracking["value"], tracking


def _one(runs: list[Run], **tags: str) -> Run:
    found = [r for r in runs if all(r.data.tags.get(k) == v for k, v in tags.items())]
    assert len(found) == 1, f"{len(found)} runs tagged {tags}"
    return found[0]


def test_a_short_ladder_against_a_real_server(
    example: Path,
    mlflow_server: str,
    server_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # With credentials in the URI, as a team server behind basic auth is often reached (this
    # server ignores them): they must not reach state.json, the report or MLflow's description.
    with_password = mlflow_server.replace("http://", "http://tunegate:s3cret@")
    plan = _pointed_at(example, with_password)
    # On a terminal, as a user runs it: the training steps show as progress bars with the loss
    # (logs and pipes get none; every other test reads piped output).
    code, screen = run_in_terminal("run", str(plan), "--until", "1", timeout=600)
    assert code == 0, screen[-3000:]
    assert "control: train" in screen and "experiment: train" in screen, screen[-3000:]
    assert re.search(r"10/10 +loss \d+\.\d{4}", screen), screen[-3000:]
    assert "Report: " in screen

    out_dir = example.parent / "runs"
    state = json.loads((out_dir / "metadata-experiment" / "state.json").read_text())
    assert state["tracking_uri"] == mlflow_server.replace("http://", "http://tunegate:***@")
    # Tracking went to the server: no local store or artifact directory next to the plan.
    assert not (out_dir / "mlflow.db").exists()
    for local in ("mlruns", "mlartifacts"):
        assert not (example.parent / local).exists()
        assert not (out_dir / local).exists()

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("tunegate-demo")
    assert exp is not None
    # The server chose the artifact root: its proxy, not a path on this machine.
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location
    runs = client.search_runs([exp.experiment_id], max_results=100)

    ladder = _one(runs, **{"tunegate.level": "ladder"})
    assert ladder.info.run_id == state["mlflow_parent"]
    assert ladder.info.status == "FINISHED"

    stages = {
        r.data.tags["tunegate.stage"]: r
        for r in runs
        if r.data.tags.get("tunegate.level") == "stage"
    }
    assert sorted(stages) == ["environment", "micro"]
    for index, name in enumerate(("environment", "micro")):
        stage = stages[name]
        assert stage.data.tags["mlflow.parentRunId"] == ladder.info.run_id
        assert stage.data.tags["tunegate.stage_index"] == str(index)
        assert stage.info.run_name == f"stage {index}: {name}"
        assert stage.data.tags["tunegate.verdict"] == "PASS"
        assert stage.data.metrics["passed"] == 1.0
        assert stage.info.status == "FINISHED"
        assert stage.info.run_id == state["stages"][name]["mlflow_run"]

    micro = stages["micro"]
    arms = [r for r in runs if r.data.tags.get("tunegate.level") == "arm"]
    assert len(arms) == 2
    for arm in ("control", "experiment"):
        run = _one(arms, **{"tunegate.arm": arm})
        assert run.data.tags["tunegate.role"] == arm
        assert run.data.tags["tunegate.stage"] == "micro"
        assert run.data.tags["mlflow.parentRunId"] == micro.info.run_id
        assert run.info.run_id == state["stages"]["micro"]["arms"][arm]["mlflow_run"]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert len(steps) == len(set(steps)) == 10, steps  # one point per step, none twice
        assert max(steps) == 10

    # verdict.json went up through the server's artifact proxy and comes back down.
    listed = [a.path for a in client.list_artifacts(micro.info.run_id)]
    assert "verdict.json" in listed, listed
    stored = list((server_dir / "artifacts").rglob(f"{micro.info.run_id}/**/verdict.json"))
    assert len(stored) == 1, "the server's artifact directory does not hold the verdict"
    local = client.download_artifacts(micro.info.run_id, "verdict.json", str(tmp_path))
    verdict = json.loads(Path(local).read_text())
    assert verdict["stage"] == "micro" and verdict["index"] == 1
    assert verdict["verdict"] == "PASS"

    # The report of this partial climb, written after the stage, is on the ladder run.
    listed = {a.path for a in client.list_artifacts(ladder.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/plots"} <= listed, listed
    plots = {a.path for a in client.list_artifacts(ladder.info.run_id, "report/plots")}
    assert plots == {"report/plots/loss-1-micro.svg"}
    html_file = client.download_artifacts(ladder.info.run_id, "report/report.html", str(tmp_path))
    html = Path(html_file).read_text()
    assert "GO so far — passed through &#39;micro&#39;" in html
    assert html.count("<td>not run</td>") == 3  # small, pilot, production
    # Each stage's arms side by side in the server's compare view.
    compare = f"{mlflow_server}/#/compare-runs?runs="
    assert compare in html and state["stages"]["micro"]["arms"]["control"]["mlflow_run"] in html
    description = client.get_run(ladder.info.run_id).data.tags["mlflow.note.content"]
    assert "| 1 | micro | PASS |" in description and "report/report.html" in description
    written = [p for p in (out_dir / "metadata-experiment").rglob("*") if p.is_file()]
    shared = [p for p in written if p.suffix in (".json", ".html", ".md")]
    leaks = [p for p in shared if b"s3cret" in p.read_bytes()]
    assert leaks == [] and "s3cret" not in html + description
