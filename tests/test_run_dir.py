"""A run directory survives its machine: one climber at a time, a copy or a move keeps every
stage it passed, and an adapter that is gone or changed is never reused or counted as passed.
All through the CLI, on the real trainer."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from conftest import EXAMPLE, TUNEGATE, run_cli

RUN = Path("runs") / "metadata-experiment"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _copy(plan: Path, to: Path) -> Path:
    """The whole experiment folder (plan, data, runs), as `cp -a` copies it."""
    shutil.copytree(plan.parent, to, symlinks=True)
    return to / plan.name


def test_a_second_climber_in_the_same_run_directory_is_refused(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("runs"))
    plan = exp / "tunegate.yaml"
    first = subprocess.Popen(
        [TUNEGATE, "run", str(plan), "--until", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert first.stdout is not None
    seen = []
    deadline = time.monotonic() + 300
    for line in first.stdout:  # wait until it trains: the lock is held, the arms are busy
        seen.append(line)
        if "training on" in line:
            break
        assert time.monotonic() < deadline, "".join(seen)
    started = time.monotonic()
    second = run_cli("run", str(plan), "--until", "1")
    took = time.monotonic() - started
    rest, _ = first.communicate(timeout=600)
    assert first.returncode == 0, "".join(seen) + rest
    assert second.returncode == 2
    message = _one_line(second.stdout + second.stderr)
    assert "another climb is running in this run directory" in message
    assert f"PID {first.pid} on host " in message and "since 20" in message
    assert "tunegate status" in message and "Traceback" not in message
    assert "training on" not in second.stdout
    assert took < 30  # imports and plan loading only: it never reached the store or a model
    # The first climb's record is whole and its own: every arm trained once.
    state = json.loads((exp / RUN / "state.json").read_text())
    assert state["stages"]["micro"]["verdict"] == "PASS"
    # The lock died with its holder: the next climb goes ahead.
    after = run_cli("run", str(plan), "--until", "1")
    assert after.returncode == 0 and "Every stage has passed" in _one_line(after.stdout)


def test_a_copied_or_moved_run_keeps_every_stage_it_passed(
    micro_climb: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere" / "deeper"
    plan = _copy(micro_climb, tmp_path / "copy")
    shutil.move(plan.parent, moved)  # copied, then moved: no path of the original is left
    plan = moved / plan.name
    result = run_cli("run", str(plan), "--until", "1")
    out = _one_line(result.stdout)
    assert result.returncode == 0, out
    assert "Every stage has passed" in out and "training on" not in out
    status = run_cli("status", "--plan", str(plan), cwd=moved)
    assert "GO so far" in _one_line(status.stdout), status.stdout
    # Run again on purpose: each arm reuses the adapter in the copy, not the original's.
    again = run_cli("run", str(plan), "--from", "1", "--until", "1")
    out = _one_line(again.stdout)
    assert again.returncode == 0, out
    assert out.count("trained adapter recorded at") == 2 and "training on" not in out
    assert f"{moved / RUN / 'stage-1-micro' / 'control' / 'adapter'}" in again.stdout.replace(
        "\n", ""
    )


def test_an_adapter_that_is_gone_or_changed_is_trained_again(
    micro_climb: Path, tmp_path: Path
) -> None:
    plan = _copy(micro_climb, tmp_path / "exp")
    stage = plan.parent / RUN / "stage-1-micro"
    (stage / "control" / "adapter" / "adapter_config.json").unlink()
    # A passed stage whose adapter is gone is not a pass: status says so ...
    status = _one_line(run_cli("status", "--plan", str(plan), cwd=plan.parent).stdout)
    assert "NOT A GO" in status
    assert "stage 1 (micro) passed, but control's adapter/adapter_config.json is missing" in status
    # ... and the climb runs it again, training that arm alone.
    result = run_cli("run", str(plan), "--until", "1")
    out = _one_line(result.stdout)
    assert result.returncode == 0, out
    assert "stage 1 (micro) passed, but control's adapter/adapter_config.json is missing" in out
    assert "control: adapter/adapter_config.json is missing since it was trained" in out
    assert "control: training on 5 items" in out and "experiment: training on" not in out
    assert "experiment: trained adapter recorded at" in out
    # Same size, other bytes: only the full check on reuse sees it.
    weights = stage / "experiment" / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    again = _one_line(run_cli("run", str(plan), "--from", "1", "--until", "1").stdout)
    assert "experiment: adapter/adapter_model.safetensors changed (its sha256" in again
    assert "experiment: training on 5 items" in again and "control: training on" not in again
    # The whole adapter folder deleted: noticed without re-running anything by hand.
    shutil.rmtree(stage / "control" / "adapter")
    final = _one_line(run_cli("run", str(plan), "--until", "1").stdout)
    assert "stage 1 (micro) passed, but control's adapter/" in final
    assert "control: training on 5 items" in final
    state = json.loads((plan.parent / RUN / "state.json").read_text())["stages"]["micro"]
    assert state["verdict"] == "PASS"
    assert "adapter/adapter_config.json" in state["arms"]["control"]["manifest"]


def test_the_stage_hash_holds_no_path(micro_climb: Path, tmp_path: Path) -> None:
    from tunegate.plan import load_plan

    original = load_plan(micro_climb)
    copied = load_plan(_copy(micro_climb, tmp_path / "copy"))
    assert original.arms["control"].data != copied.arms["control"].data
    assert all(original.stage_hash(i) == copied.stage_hash(i) for i in range(5))
    # What it does hold: the data's contents.
    path = copied.arms["control"].data
    path.write_text(path.read_text() + "\n")
    assert copied.stage_hash(2) != original.stage_hash(2)
