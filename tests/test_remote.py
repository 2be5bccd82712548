"""The original plan's topology, for real: the climb runs here and trains on a second host (the
tower) reached only over SSH, in the training container built there offline.

Real parts: a network namespace with its own sshd and dockerd (tests/tower.py), Debian's engine,
an image built with `tunegate image build --host` from a debootstrap base and the wheelhouse, the
real trainer on tiny-llama inside it. `make test-remote` sets up what these need (root, Debian's
docker.io, openssh-server, rsync; the base tarball and the wheelhouse) and runs them; elsewhere
they skip with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLE, TUNEGATE, run_cli
from tower import Tower, TowerUnavailable

pytestmark = [pytest.mark.slow, pytest.mark.remote]

BASE_TAR = Path(
    os.environ.get(
        "TUNEGATE_TEST_BASE_TAR", Path.home() / ".cache/tunegate/debian-bookworm-python.tar"
    )
)
BASE_IMAGE = "local/bookworm-python"
IMAGE = "tunegate-training"
# The user's cache, where `make tower` put the wheelhouse (read before the tests isolate theirs).
USER_CACHE = Path(os.environ.get("TUNEGATE_CACHE") or Path.home() / ".cache" / "tunegate")


@pytest.fixture(scope="module")
def tower(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tower]:
    if not BASE_TAR.is_file():
        pytest.skip(f"no Debian base image at {BASE_TAR} (make tower makes it)")
    try:
        host = Tower(tmp_path_factory.mktemp("tower")).start()
    except TowerUnavailable as err:
        pytest.skip(str(err))
    try:
        with BASE_TAR.open("rb") as tar:
            subprocess.run(
                ["ssh", "-F", str(host.ssh_config), "tower", f"docker import - {BASE_IMAGE}"],
                stdin=tar,
                check=True,
                capture_output=True,
                timeout=300,
            )
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="module")
def image(tower: Tower) -> str:
    """The training image, built on the tower by the command a user runs."""
    from tunegate.remote.image import wheelhouse_dir

    house = wheelhouse_dir(USER_CACHE)
    if not (house / ".complete").is_file():
        pytest.skip(f"no wheelhouse at {house} (make tower makes it, with the network)")
    started = time.monotonic()
    built = run_cli(
        "image", "build", "--host", "ssh://tower", "--ssh-config", str(tower.ssh_config),
        "--base", BASE_IMAGE, "--tag", IMAGE, "--wheelhouse", str(house), timeout=1800,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    print(f"\nimage built on the tower: {time.monotonic() - started:.0f} s")
    return IMAGE


def _plan_on_tower(
    tmp_path: Path, tower: Tower, micro_steps: int | None = None, **executor: object
) -> Path:
    """The example, training on the tower; each test in a directory of its own there.
    `micro_steps`: stage 1 trains that many steps, a checkpoint every 5 (time to hit it)."""
    target = tmp_path / "exp"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("runs"))
    plan = target / "tunegate.yaml"
    doc = yaml.safe_load(plan.read_text())
    doc["executor"] = {
        "kind": "docker",
        "host": "ssh://tower",
        "ssh_config": str(tower.ssh_config),
        "remote_dir": str(tower.work / tmp_path.name),
        "gpus": None,  # no GPU on the tower here: --gpus all fails (test_image…)
        **executor,
    }
    if micro_steps is not None:
        micro = next(s for s in doc["stages"] if s["name"] == "micro")
        micro["training"] = {"max_steps": micro_steps, "batch_size": 1, "save_steps": 5}
    plan.write_text(yaml.safe_dump(doc, sort_keys=False))
    return plan


def _on_tower(tower: Tower, plan: Path, stage: str, arm: str) -> Path:
    """An arm's directory on the tower's disk (the stage's directory there carries its hash)."""
    runs = tower.work / plan.parents[1].name / "runs" / "metadata-experiment"
    found = sorted(runs.glob(f"stage-*-{stage}-*"))
    return (found[0] if found else runs / f"(no {stage} yet)") / arm


def _climb_in_background(plan: Path, until: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [TUNEGATE, "run", str(plan), "--until", str(until)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def _wait_for(
    ready: Callable[[], bool], climb: subprocess.Popen[str], seconds: float = 600
) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if climb.poll() is not None or time.monotonic() > deadline:
            climb.kill()
            raise AssertionError(climb.communicate()[0][-3000:])
        time.sleep(0.05)


def _wait_for_control_metrics(run_dir: Path, climb: subprocess.Popen[str]) -> None:
    """Until the control arm trains on the tower: its first metric line has come back."""
    log = run_dir / "stage-1-micro" / "control" / "train.log"
    _wait_for(lambda: log.is_file() and "@tunegate-metrics " in log.read_text(), climb)


def _climb_until_checkpointed(
    tmp_path: Path, tower: Tower, arm: str
) -> tuple[Path, subprocess.Popen[str]]:
    """A climb of stage 1 at 80 steps, once `arm` has a complete checkpoint on the tower."""
    plan = _plan_on_tower(tmp_path, tower, micro_steps=80)
    climb = _climb_in_background(plan, 1)
    checkpoints = lambda: _on_tower(tower, plan, "micro", arm) / "checkpoints"  # noqa: E731
    _wait_for(lambda: any(checkpoints().glob("checkpoint-*/trainer_state.json")), climb)
    return plan, climb


def test_the_image_builds_offline_and_runs_the_trainer(tower: Tower, image: str) -> None:
    # --network=none at build: every package came from the wheelhouse.
    helped = tower.ssh(f"docker run --rm --network=none {image} --help", timeout=120)
    assert "DATASET_PATH" in helped and "MAX_STEPS" in helped
    versions = tower.ssh(
        f"docker run --rm --network=none --entrypoint python {image} -c "
        "'import transformers, peft, trl; print(transformers.__version__, peft.__version__)'",
        timeout=120,
    ).split()
    import peft
    import transformers

    assert versions == [transformers.__version__, peft.__version__]  # this environment's
    # No GPU here: the daemon refuses --gpus all at once, with its own message.
    gpus = subprocess.run(
        ["ssh", "-F", str(tower.ssh_config), "tower", f"docker run --rm --gpus all {image}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gpus.returncode == 125
    assert "could not select device driver" in gpus.stderr


def test_a_climb_trains_on_the_tower(tmp_path: Path, tower: Tower, image: str) -> None:
    plan = _plan_on_tower(tmp_path, tower)
    started = time.monotonic()
    climbed = run_cli("run", str(plan), "--until", "2", timeout=1800)
    seconds = time.monotonic() - started
    out = climbed.stdout + climbed.stderr
    assert climbed.returncode == 0, out[-4000:]
    print(f"\nstages 0-2 through the tower: {seconds:.0f} s")
    assert "training on ssh://tower in container" in " ".join(climbed.stdout.split())
    run_dir = plan.parent / "runs" / "metadata-experiment"
    state = json.loads((run_dir / "state.json").read_text())
    for stage in ("micro", "small"):
        assert state["stages"][stage]["verdict"] == "PASS"
        for arm in ("control", "experiment"):
            arm_dir = next(run_dir.glob(f"stage-*-{stage}/{arm}"))
            # The adapter came back, checked; the checkpoints stayed on the tower, indexed here.
            assert (arm_dir / "adapter" / "adapter_model.safetensors").is_file()
            assert not (arm_dir / "checkpoints").exists()
            index = json.loads((arm_dir / "checkpoints-index.json").read_text())
            assert index["host"] == "ssh://tower" and index["checkpoints"]
            remote = Path(index["dir"])
            assert remote.is_relative_to(tower.work)  # the tower's own disk
            assert (remote / index["checkpoints"][-1]["name"]).is_dir()
            # The log streamed back with the trainer's metric lines.
            log = (arm_dir / "train.log").read_text()
            assert "@tunegate-metrics " in log and "Model saved to /work/" in log
    # The tower's containers are gone once their results are fetched.
    assert tower.ssh("docker ps -aq --filter name=tunegate-").strip() == ""
    where = "ssh://tower, docker tunegate-training"
    assert _trained_on(run_dir) == {
        f"stage {i}: {stage} / {arm}": where
        for i, stage in ((1, "micro"), (2, "small"))
        for arm in ("control", "experiment")
    }
    _print_stage_times("one tower, arms in sequence", state)


def _trained_on(run_dir: Path) -> dict[str, str]:
    """Where each arm ran, as MLflow has it (its `trained_on` parameter); checked against the
    state and the report's training table."""
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / "state.json").read_text())
    client = MlflowClient(state["tracking_uri"])
    runs = client.search_runs(
        [state["mlflow_experiment_id"]], filter_string="tags.`tunegate.level` = 'arm'"
    )
    found = {r.info.run_name: r.data.params["trained_on"] for r in runs}
    report = (run_dir / "report" / "report.md").read_text()
    for stage in state["stages"].values():
        for arm in stage["arms"].values():
            assert arm["trained_on"] in found.values()
            assert f"| {arm['trained_on']} |" in report  # the training table's last column
    return found


def _print_stage_times(how: str, state: dict[str, object]) -> None:
    stages = state["stages"]
    assert isinstance(stages, dict)
    for name in ("micro", "small"):
        if name in stages:
            record = stages[name]
            trains = [a["train"]["train_seconds"] for a in record["arms"].values()]
            print(
                f"\n{how}: stage {name} {record['seconds']:.1f} s, arms at once "
                f"{record['arms_at_once']}, training {' + '.join(f'{t:.1f}' for t in trains)} s"
            )


def test_a_dropped_connection_ends_clearly_and_the_climb_reattaches(
    tmp_path: Path, tower: Tower, image: str
) -> None:
    plan = _plan_on_tower(tmp_path, tower, reconnect_s=5)
    run_dir = plan.parent / "runs" / "metadata-experiment"
    climb = _climb_in_background(plan, 1)
    _wait_for_control_metrics(run_dir, climb)
    remote_arm = _on_tower(tower, plan, "micro", "control").parent
    with tower.link_down():
        out, _ = climb.communicate(timeout=300)
        text = " ".join(out.split())
        assert climb.returncode == 1, out[-3000:]
        assert "Traceback" not in out
        assert "ssh://tower: " in text and "; reconnecting for up to 5 s" in text, text[-3000:]
        assert "it goes on: `tunegate run` reattaches to it" in text, text[-3000:]
        # Meanwhile the arm finishes on the tower, unattended.
        deadline = time.monotonic() + 600
        while not (remote_arm / "control" / "result.json").is_file():
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finished = (remote_arm / "control" / "result.json").stat().st_mtime_ns
    resumed = run_cli("run", str(plan), "--until", "1", timeout=1200)
    text = " ".join(resumed.stdout.split())
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # Fetched, not trained again: the tower's result is the one written while the link was down.
    assert "finished on ssh://tower while away: fetching" in text, text[-3000:]
    assert (run_dir / "stage-1-micro" / "control" / "adapter").is_dir()
    assert (remote_arm / "control" / "result.json").stat().st_mtime_ns == finished
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stages"]["micro"]["verdict"] == "PASS"


def test_kind_ssh_trains_in_a_python_environment_on_the_tower(tmp_path: Path, tower: Tower) -> None:
    # The tower's Python environment: this one (the namespace shares the filesystem; nothing
    # else is shared, the arm's data and the model are shipped to the tower's own disk).
    plan = _plan_on_tower(tmp_path, tower, kind="ssh", python=sys.executable)
    climbed = run_cli("run", str(plan), "--until", "1", timeout=1200)
    text = " ".join(climbed.stdout.split())
    assert climbed.returncode == 0, climbed.stdout[-3000:] + climbed.stderr[-3000:]
    assert "training on ssh://tower in job tunegate-" in text
    arm_dir = plan.parent / "runs" / "metadata-experiment" / "stage-1-micro" / "experiment"
    # The trainer wrote the tower's paths in its result (fetched as it is, checked by sha256);
    # the climb's record names the fetched copies.
    remote = json.loads((arm_dir / "result.json").read_text())["adapter_dir"]
    assert Path(remote).is_relative_to(tower.work)
    state = json.loads((arm_dir.parents[1] / "state.json").read_text())
    record = state["stages"]["micro"]["arms"]["experiment"]["train"]
    assert Path(record["adapter_dir"]) == arm_dir / "adapter"
    assert "@tunegate-metrics " in (arm_dir / "train.log").read_text()


def test_a_tower_out_of_reach_fails_stage_0_with_its_fix(tmp_path: Path, tower: Tower) -> None:
    plan = _plan_on_tower(tmp_path, tower, host="ssh://tower:2222")  # nothing listens there
    started = time.monotonic()
    climbed = run_cli("run", str(plan), "--until", "1", timeout=300)
    out = " ".join(climbed.stdout.split())
    assert climbed.returncode == 1, climbed.stdout[-3000:] + climbed.stderr[-3000:]
    assert "Traceback" not in climbed.stdout + climbed.stderr
    assert "tower ssh: ssh://tower:2222:" in out and "Connection refused" in out, out[-3000:]
    assert "— check the tower is up and reachable" in out, out[-3000:]
    assert "docker daemon" not in out  # not guessed at behind an unreachable tower
    assert "Stage 1" not in out  # nothing trained, nothing shipped
    assert time.monotonic() - started < 120


def test_two_towers_train_both_arms_at_once(tmp_path: Path, tower: Tower, image: str) -> None:
    # Two names for the namespace host (its ssh config): two towers as a plan sees them. They
    # share this VM's 2 cores: a thread each, as two machines' arms would not fight over cores.
    plan = _plan_on_tower(
        tmp_path, tower, hosts=["ssh://tower-b"], extra_args=["-e", "OMP_NUM_THREADS=1"]
    )
    climbed = run_cli("run", str(plan), "--until", "2", timeout=1800)
    assert climbed.returncode == 0, climbed.stdout[-3000:] + climbed.stderr[-3000:]
    run_dir = plan.parent / "runs" / "metadata-experiment"
    state = json.loads((run_dir / "state.json").read_text())
    for stage in ("micro", "small"):
        record = state["stages"][stage]
        assert record["verdict"] == "PASS" and record["arms_at_once"] == 2
        assert record["arms"]["control"]["trained_on"] == "ssh://tower, docker tunegate-training"
        assert (
            record["arms"]["experiment"]["trained_on"] == "ssh://tower-b, docker tunegate-training"
        )
    assert set(_trained_on(run_dir).values()) == {
        "ssh://tower, docker tunegate-training",
        "ssh://tower-b, docker tunegate-training",
    }
    # The forecasts after stage 2 know both arms train at once, on two paid devices.
    ahead = state["forecasts"]["small"]
    assert all("2 arms at once" in f["basis"] for f in ahead.values())
    _print_stage_times("two towers, arms at once", state)


def test_a_missing_image_fails_stage_0_with_its_build_command(tmp_path: Path, tower: Tower) -> None:
    plan = _plan_on_tower(tmp_path, tower, image="tunegate-absent")
    climbed = run_cli("run", str(plan), "--until", "1", timeout=300)
    out = " ".join(climbed.stdout.split())
    assert climbed.returncode == 1, climbed.stdout[-3000:] + climbed.stderr[-3000:]
    assert "Traceback" not in climbed.stdout + climbed.stderr
    assert "docker image" in out and "tunegate-absent not on ssh://tower's engine" in out, out
    assert "tunegate image build --tag tunegate-absent --host ssh://tower" in out, out
    assert "Stage 1" not in out


def test_gpu_access_on_a_tower_without_one_fails_stage_0_with_the_daemons_words(
    tmp_path: Path, tower: Tower, image: str
) -> None:
    plan = _plan_on_tower(tmp_path, tower, gpus="all")
    climbed = run_cli("run", str(plan), "--until", "0", timeout=300)
    out = " ".join(climbed.stdout.split())
    assert climbed.returncode == 1, climbed.stdout[-3000:] + climbed.stderr[-3000:]
    assert "Traceback" not in climbed.stdout + climbed.stderr
    # A trial container with the arms' --gpus, refused by the tower's daemon in its own words.
    assert "docker gpu runtime: `--gpus all` refused:" in out, out[-3000:]
    assert 'could not select device driver "" with capabilities: [[gpu]]' in out, out[-3000:]
    assert "nvidia-ctk runtime configure" in out


def test_a_killed_container_fails_clearly_and_resumes_from_its_checkpoint(
    tmp_path: Path, tower: Tower, image: str
) -> None:
    plan, climb = _climb_until_checkpointed(tmp_path, tower, "control")
    tower.ssh("docker kill tunegate-metadata-experiment-micro-control")
    out, _ = climb.communicate(timeout=600)
    text = " ".join(out.split())
    assert climb.returncode == 1, out[-3000:]
    assert "Traceback" not in out
    assert "on ssh://tower stopped, exit 137 (killed)" in text, text[-3000:]
    assert "`tunegate run` starts it again from its last checkpoint there" in text
    # The experiment arm trained meanwhile: kept, not trained again.
    experiment = _on_tower(tower, plan, "micro", "experiment") / "result.json"
    finished = experiment.stat().st_mtime_ns
    resumed = run_cli("run", str(plan), "--until", "1", timeout=1200)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    state = json.loads((plan.parent / "runs/metadata-experiment/state.json").read_text())
    arms = state["stages"]["micro"]["arms"]
    assert arms["control"]["train"]["resumed_from"].startswith("checkpoint-")
    assert arms["control"]["train"]["steps"] == 80
    assert experiment.stat().st_mtime_ns == finished


def test_a_full_disk_on_the_tower_fails_clearly_and_resumes(
    tmp_path: Path, tower: Tower, image: str
) -> None:
    plan, climb = _climb_until_checkpointed(tmp_path, tower, "experiment")
    filler = tower.work / "filler"
    # Every byte left, while the trainer writes too: dd stops where the disk does.
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=4M"], capture_output=True, timeout=300
    )
    assert os.statvfs(tower.work).f_bavail < 64
    try:
        out, _ = climb.communicate(timeout=600)
    finally:
        filler.unlink()
    text = " ".join(out.split())
    assert climb.returncode == 1, out[-3000:]
    assert "Traceback" not in out
    assert "the disk of ssh://tower is full" in text, text[-3000:]
    control = _on_tower(tower, plan, "micro", "control") / "result.json"
    finished = control.stat().st_mtime_ns
    resumed = run_cli("run", str(plan), "--until", "1", timeout=1200)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    state = json.loads((plan.parent / "runs/metadata-experiment/state.json").read_text())
    assert state["stages"]["micro"]["verdict"] == "PASS"
    assert state["stages"]["micro"]["arms"]["experiment"]["train"]["steps"] == 80
    assert control.stat().st_mtime_ns == finished  # the finished arm was not trained again


def test_a_climb_killed_here_reattaches_to_its_arm_on_the_tower(
    tmp_path: Path, tower: Tower, image: str
) -> None:
    plan = _plan_on_tower(tmp_path, tower, micro_steps=80)
    run_dir = plan.parent / "runs" / "metadata-experiment"
    climb = _climb_in_background(plan, 1)
    _wait_for_control_metrics(run_dir, climb)
    climb.kill()  # the laptop's climb dies (SIGKILL): nothing of it says goodbye
    climb.communicate(timeout=60)
    resumed = run_cli("run", str(plan), "--until", "1", timeout=1200)
    text = " ".join(resumed.stdout.split())
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert (
        "reattached to tunegate-metadata-experiment-micro-control on ssh://tower" in text
        or "tunegate-metadata-experiment-micro-control finished on ssh://tower while away" in text
    ), text[-3000:]
    state = json.loads((run_dir / "state.json").read_text())
    control = state["stages"]["micro"]["arms"]["control"]["train"]
    assert control["resumed_from"] is None and control["steps"] == 80  # one run, never restarted
