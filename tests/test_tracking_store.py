"""A new local MLflow store is a copy of an empty, migrated one: the same store MLflow would have
made, without running every schema migration again (about 3 s on 2 cores)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tunegate.tracking import Tracker, seed_local_store


def test_a_new_store_is_seeded_and_works_like_one_mlflow_made(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    first = Tracker(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", "exp", tmp_path / "a")
    run = first.start("one", tags={"tunegate.level": "ladder"})
    first.metrics(run, {"loss": 1.5}, 3)
    assert first.history(run, "loss") == [(3, 1.5)]
    # MLflow's own Default experiment, made on first open where this process runs, as always.
    default = first.client.get_experiment("0")
    assert default.name == "Default" and default.artifact_location == str(tmp_path / "mlruns/0")
    mode = stat.S_IMODE((tmp_path / "a" / "mlflow.db").stat().st_mode)
    assert mode == 0o666 & ~0o022 or mode == 0o644  # what open() gives, not mkstemp's 0600

    # The template is kept per MLflow version in tunegate's cache; a second store copies it.
    import mlflow

    template = (
        Path(os.environ["TUNEGATE_CACHE"]) / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    )
    assert template.is_file()
    second = Tracker(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}", "exp", tmp_path / "b")
    assert [e.name for e in second.client.search_experiments()] == ["exp", "Default"]
    assert second.client.search_runs([second.experiment_id]) == []  # nothing of the first's


def test_an_existing_store_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not touched")
    seed_local_store(f"sqlite:///{db}")
    assert db.read_bytes() == b"not touched"
    seed_local_store("http://127.0.0.1:1")  # not a local store: nothing to do


def test_two_processes_creating_one_store_both_get_it(tmp_path: Path) -> None:
    # Migrating one store from two processes at once failed ("table experiments already exists");
    # a copy is linked into place once, and the loser simply opens the winner's.
    code = (
        "import sys; from pathlib import Path; from tunegate.tracking import Tracker; "
        f"t = Tracker('sqlite:///{tmp_path / 'shared' / 'mlflow.db'}', 'exp', Path('{tmp_path}')); "
        "print(t.experiment_id)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] and outputs[0] == outputs[1]  # one experiment, whoever created it


def test_the_tracker_process_gives_tracker_answers_and_its_death_is_one_failure(
    tmp_path: Path,
) -> None:
    """The ladder's MLflow client runs in a child process (MLflow's imports off the climb's
    critical path): it answers as `Tracker` does, and a child killed mid-climb is a tracking
    failure within a second, after which every call fails at once (the store is down)."""
    import signal
    import time

    import pytest

    from tunegate.tracking import TrackerProcess, TrackingFailed

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = TrackerProcess(uri, "exp", tmp_path).opened()
    assert client.experiment_id
    parent = client.start("ladder", tags={"tunegate.level": "ladder"})
    run = client.start("arm", parent=parent)
    assert client.start("arm", run_id=run) == run  # re-attached, as a resume does
    client.params(run, {"lr": 0.003})
    sink = client.step_sink(run)
    sink([({"loss": 2.0}, 1), ({"loss": 1.5}, 2)])
    sink([({"loss": 1.5}, 2), ({"loss": 1.0}, 3)])  # a replayed step is logged once
    client.end(run)
    # What the child wrote is in the store, read here by MLflow itself.
    in_process = Tracker(uri, "exp", tmp_path)
    assert in_process.history(run, "loss") == [(1, 2.0), (2, 1.5), (3, 1.0)]
    assert in_process.client.get_run(run).data.tags["mlflow.parentRunId"] == parent

    os.kill(client._proc.pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(TrackingFailed, match="the tracking process ended"):
        client.metrics(run, {"loss": 0.5}, 4)
    assert time.monotonic() - started < 5
    with pytest.raises(TrackingFailed, match="the tracking process ended"):
        client.end(parent)  # down: at once, no new wait
    client.close()


def test_a_tracker_process_that_cannot_open_its_store_says_why(tmp_path: Path) -> None:
    import pytest

    from tunegate.tracking import TrackerProcess, TrackingFailed

    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    client = TrackerProcess(f"sqlite:///{blocked / 'mlflow.db'}", "exp", blocked)
    with pytest.raises(TrackingFailed, match=f"File exists: {blocked}") as raised:
        client.opened()
    assert str(raised.value).count("\n") == 0  # one line
    client.close()
