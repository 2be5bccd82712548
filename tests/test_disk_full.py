"""A disk that fills up: a stage that will not fit does not start, and a disk that fills during
training ends the climb with one line naming the path and the free space, the state intact
(docs/reliability.md, "Disk").

Real parts: a 256 MiB tmpfs mounted for the test (root only: skipped elsewhere), filled by a
second process while the climb trains, as another writer on a shared disk would.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLE, run_cli
from faults import climb_until_first_checkpoint

from tunegate.diskspace import disk_full
from tunegate.doctor import disk_need, stage_disk_need
from tunegate.events import Notice
from tunegate.events.jsonl import JsonLinesSink
from tunegate.plan import load_plan
from tunegate.train.memory import gib

RUN = Path("runs") / "metadata-experiment"
DISK_MIB = 256


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 256 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        # -l: a process still holding a file there must not fail the teardown.
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def _example_on(disk: Path) -> Path:
    target = disk / "exp"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("runs"))
    return target / "tunegate.yaml"


def _fill(disk: Path, leave: int = 0) -> Path:
    """Take the disk's free space down to `leave` bytes (to the last byte when 0)."""
    filler = disk / "filler"
    with filler.open("ab", buffering=0) as f:
        for chunk in (2**20, 4096, 1):
            try:
                while shutil.disk_usage(disk).free - chunk >= leave:
                    f.write(b"\0" * chunk)
            except OSError:  # full: the next, smaller chunk finds the last bytes
                pass
    return filler


def test_each_stage_needs_its_share_of_the_plan(example: Path) -> None:
    plan = load_plan(example)
    whole = disk_need(plan)
    stages = [stage_disk_need(plan, i) for i, s in enumerate(plan.stages) if s.kind == "train"]
    # The same parts, counted stage by stage; each stage also counts its own checkpoint in flight
    # (the plan counts the largest once) and its share of the tracking allowance.
    for part in ("adapters", "data", "merged models"):
        assert sum(s.parts[part] for s in stages) == whole.parts[part]
    assert sum(s.parts["tracking"] for s in stages) == whole.parts["tracking"]
    assert sum(s.parts["checkpoints"] for s in stages) >= whole.parts["checkpoints"]
    micro = stages[0]
    assert micro.parts["checkpoints"] > 0 and micro.total == sum(micro.parts.values())


def test_a_stage_that_will_not_fit_is_not_started(small_disk: Path) -> None:
    plan = _example_on(small_disk)
    need = stage_disk_need(load_plan(plan), 1).total
    _fill(small_disk, leave=8 * 2**20)  # others have written to the disk
    # Stage 1 alone (forced: stage 0 would FAIL on this disk first, with the whole plan's need).
    result = run_cli("run", str(plan), "--stage", "1", "--force-stage", "1", timeout=300)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "Stage 1 (micro) not started, not enough disk: needs ~" in out
    assert f"needs ~{gib(need)} at {plan.parent / RUN} (adapters " in out, out
    assert "MiB free: free space there or move output_dir" in out, out
    state = json.loads((plan.parent / RUN / "state.json").read_text())
    micro = state["stages"]["micro"]
    assert micro["verdict"] == "FAIL" and micro["gates"][0]["name"] == "disk"
    assert not (plan.parent / RUN / "stage-1-micro" / "control").exists()  # nothing trained


def _filled_during_training(disk: Path) -> tuple[Path, Path, str, str]:
    """Climb to stage 1 on `disk`, fill it once the control arm's first checkpoint is written;
    returns the plan, the filler, the climb's stderr and the state saved before the fill."""
    plan = _example_on(disk)
    run_dir = plan.parent / RUN
    # The control arm's first checkpoint is on disk: fill the disk; the next one cannot be.
    climb = climb_until_first_checkpoint(plan, run_dir)
    # Paused while the disk fills: filling takes longer than the toy's whole arm.
    climb.send_signal(signal.SIGSTOP)
    state_before = (run_dir / "state.json").read_text()
    filler = _fill(disk)
    climb.send_signal(signal.SIGCONT)
    filled = time.monotonic()
    out, err = climb.communicate(timeout=300)
    print(f"\ndisk full → climb exited: {time.monotonic() - filled:.1f} s")
    assert climb.returncode == 1, out[-3000:] + err[-3000:]
    assert "Traceback" not in out + err
    return plan, filler, err, state_before


def test_a_disk_that_fills_during_training_ends_in_one_line(small_disk: Path) -> None:
    plan, _, err, state_before = _filled_during_training(small_disk)
    run_dir = plan.parent / RUN
    errors = err.strip().splitlines()
    assert len(errors) == 1, err
    line = errors[0]
    # The write that meets the full disk is a checkpoint or state file in the run directory, or
    # the tracking store beside it in output_dir, whichever comes first.
    assert line.startswith(f"error: disk full writing {plan.parent / 'runs'}/"), line
    assert f": 0.0 MiB free of {DISK_MIB:.1f} MiB on {small_disk} " in line, line
    # The state is the one saved last, whole: the stage and its arm were under way.
    assert (run_dir / "state.json").read_text() == state_before
    state = json.loads(state_before)
    assert state["stages"]["micro"]["status"] == "running"
    assert state["stages"]["micro"]["arms"]["control"]["status"] == "training"


@pytest.mark.slow
def test_after_a_full_disk_the_climb_resumes(small_disk: Path) -> None:
    plan, filler, _, _ = _filled_during_training(small_disk)
    filler.unlink()  # space again: the climb resumes from the last whole checkpoint
    resumed = run_cli("run", str(plan), "--until", "1", timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "control: training on 5 items (resuming from its last checkpoint)" in resumed.stdout
    state = json.loads((plan.parent / RUN / "state.json").read_text())
    assert state["stages"]["micro"]["verdict"] == "PASS"


def test_the_events_log_names_its_file_when_the_disk_is_full() -> None:
    # /dev/full: every write finds no space, as on a full disk; a flush names no file by itself.
    stream = open("/dev/full", "w", encoding="utf-8")  # noqa: SIM115
    try:
        with pytest.raises(OSError) as raised:
            JsonLinesSink(stream).emit(Notice("a line"))
    finally:
        with contextlib.suppress(OSError):  # the buffer still holds the line
            stream.close()
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == "/dev/full"
    full = disk_full(raised.value)
    assert full is not None and str(full).startswith("disk full writing /dev/full"), full


def test_a_full_disk_said_once_stands_over_what_tripped_over_it() -> None:
    # The arm says the full disk with its own directory; closing the events log on the way out
    # meets the same full disk and raises a bare OSError. The line is the arm's.
    log = open("/dev/full", "w", encoding="utf-8")  # noqa: SIM115
    arm_dir = Path("/runs/plan/stage-1-micro/control")
    with pytest.raises(OSError) as raised:
        try:
            try:
                log.write("a step\n")
                log.flush()
            except OSError as err:
                said = disk_full(err, arm_dir)
                assert said is not None
                raise said from err
        finally:
            log.close()
    assert raised.value.filename is None  # the close's failure, which names no file
    full = disk_full(raised.value)
    assert full is not None and full.path == arm_dir, full
