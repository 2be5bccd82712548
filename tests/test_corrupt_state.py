"""Whatever `state.json` holds, `status`, `report` and `run` answer in one line with a way
forward, and leave it as it was; Ctrl-C during a climb says what it cut short and how to resume.

The corpus is written into the example's run directory (`runs/metadata-experiment/`, with the
`plan.json` a climb writes there first) and run through the installed `tunegate`, as a user would.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import TUNEGATE, run_cli

from tunegate.plan import dump_plan, load_plan
from tunegate.rundir import RunDir
from tunegate.state import STATE_SCHEMA

PLAN_NAME = "metadata-experiment"
STAGE = {"index": 0, "hash": "0123456789abcdef", "status": "done", "verdict": "PASS"}


def _state(**fields: object) -> dict[str, object]:
    """A well-formed state of the example plan, with `fields` over it."""
    return {"schema": STATE_SCHEMA, "plan_name": PLAN_NAME, "stages": {}, **fields}


def _json(data: object) -> Callable[[Path], None]:
    return lambda path: path.write_text(json.dumps(data, indent=2))


def _text(text: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(text)


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(19).randbytes(512))  # seeded: the same bytes every run


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside.txt").write_text("kept\n")


def _truncated(path: Path) -> None:
    whole = json.dumps(_state(stages={"environment": STAGE}), indent=2)
    path.write_text(whole[: len(whole) // 2])  # a copy cut short


def _nested(path: Path) -> None:
    path.write_text("[" * 100_000)


# A field of the wrong type. The machine record is read tolerantly (a container's, another
# version's), and a null among its CPU flags crashed `report` (it joins them) until checked.
_BAD_MACHINE = {"cpu": "x", "cpu_flags": ["avx2", None], "threads": 2}

# (what state.json holds, what the one line says about it)
CORPUS = [
    pytest.param(_random_bytes, "corrupt state (not UTF-8 text", id="bytes"),
    pytest.param(_text(""), "an empty file", id="empty"),
    pytest.param(_truncated, "truncated?", id="truncated"),
    pytest.param(_nested, "nested too deep", id="nested"),
    pytest.param(_json({}), "names no plan_name", id="{}"),
    pytest.param(_json([]), "a JSON list, not an object", id="[]"),
    pytest.param(_json(None), "a JSON null, not an object", id="null"),
    pytest.param(
        _json({"stages": None}), "stages: Input should be a valid dictionary", id="stages-null"
    ),
    pytest.param(
        _json(_state(stages={"micro": "passed"})),
        "stages.micro: Input should be a valid dictionary",
        id="string-stage",
    ),
    pytest.param(
        _json(_state(machine=_BAD_MACHINE)),
        "machine.cpu_flags.1: Input should be a valid string",
        id="wrong-type",
    ),
    pytest.param(
        _json(_state(schema="tunegate.state/3")),
        "schema 'tunegate.state/3' is from a newer tunegate",
        id="future-schema",
    ),
    pytest.param(
        _json(_state(plan_name="another-experiment")),
        "the state of plan 'another-experiment', not of 'metadata-experiment'",
        id="other-plan",
    ),
    pytest.param(_directory, "a directory, where the run's state file belongs", id="directory"),
]


@pytest.fixture
def run_dir(example: Path) -> Path:
    """The example's run directory as a climb begins it: `plan.json`, no state yet."""
    root = example.parent / "runs" / PLAN_NAME
    root.mkdir(parents=True)
    (root / "plan.json").write_text(json.dumps(dump_plan(load_plan(example)), indent=2))
    return root


def _snapshot(top: Path) -> dict[str, bytes | None]:
    """Every path under `top` with its bytes (None for a directory)."""
    return {
        str(p.relative_to(top)): None if p.is_dir() else p.read_bytes()
        for p in sorted(top.rglob("*"))
    }


def _refusal(result: subprocess.CompletedProcess[str], path: Path, problem: str) -> list[str]:
    """The one line of a refusal, checked; returns its way forward, the mv command, split."""
    context = result.stdout[-2000:] + result.stderr[-2000:]
    assert result.returncode == 2, context
    assert "Traceback" not in context and result.stdout == "", context
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, context
    assert lines[0].startswith(f"error: {path}: ") and problem in lines[0], lines[0]
    way = lines[0].split("move the run directory aside: ")
    assert len(way) == 2, lines[0]
    return shlex.split(way[1])


@pytest.mark.parametrize(("write", "problem"), CORPUS)
def test_a_corrupt_state_is_refused_in_one_line_and_left_as_it_was(
    example: Path, run_dir: Path, write: Callable[[Path], None], problem: str
) -> None:
    path = run_dir / "state.json"
    write(path)
    before = _snapshot(example.parent)
    commands = [("status", str(run_dir)), ("report", str(run_dir)), ("run", str(example))]
    # The three at once: each pays its imports (~1–3 s) and none of them writes.
    with ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda args: run_cli(*args, timeout=120), commands))
    for (command, _), result in zip(commands, results, strict=True):
        move = _refusal(result, path, problem)
        assert move == ["mv", str(run_dir), f"{run_dir}.aside"], (command, move)
    # Byte-identical, and `run` refused before anything: no stage, no tracking store, no log.
    assert _snapshot(example.parent) == before


def test_the_way_forward_works_and_keeps_the_file(example: Path, run_dir: Path) -> None:
    """The printed command, run as printed: the state is kept whole beside, and the run is new."""
    _truncated(run_dir / "state.json")
    kept = (run_dir / "state.json").read_bytes()
    move = _refusal(run_cli("status", str(run_dir)), run_dir / "state.json", "truncated?")
    subprocess.run(move, check=True)
    assert (Path(move[2]) / "state.json").read_bytes() == kept
    after = run_cli("status", str(run_dir))
    assert after.returncode == 2 and "no run yet" in after.stderr, after.stderr


def test_a_sound_state_is_read(run_dir: Path) -> None:
    """The refusals are not blanket: a small well-formed state of this plan shows as not run."""
    (run_dir / "state.json").write_text(json.dumps(_state()))
    result = run_cli("status", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "NOT RUN" in result.stdout


def _interrupt_at(plan: Path, text: str, timeout: float = 600) -> tuple[int, str]:
    """`tunegate run PLAN --until 1`, sent Ctrl-C once `text` is printed: SIGINT to its whole
    process group, as a terminal sends it. Its exit code and output (stdout and stderr)."""
    proc = subprocess.Popen(
        [TUNEGATE, "run", str(plan), "--until", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,
    )
    watchdog = threading.Timer(timeout, proc.kill)  # a climb that never gets there fails, not hangs
    watchdog.start()
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if text in line:
                os.killpg(proc.pid, signal.SIGINT)
                break
        seen.append(proc.communicate()[0])
    finally:
        watchdog.cancel()
    return proc.returncode, "".join(seen)


@pytest.mark.slow  # two climbs through stage 1, start-up included: about a minute
def test_ctrl_c_says_what_it_cut_short_and_how_to_resume(example: Path) -> None:
    code, output = _interrupt_at(example, "training on")
    assert code == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert (
        "Interrupted stage 1 (micro), while training arm control; the state is saved.\n"
        f"Resume with: tunegate run {example} --until 1\n"
    ) in output, output[-3000:]
    state = RunDir(example.parent / "runs" / PLAN_NAME).load_state(PLAN_NAME)  # whole, valid
    assert state.verdict("environment") == "PASS"
    assert state.stages["micro"].status == "running"
    assert state.stages["micro"].arms["control"].status == "training"
    # The printed command resumes at the stage cut short and finishes it.
    again = run_cli("run", str(example), "--until", "1")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Stage 0" not in again.stdout and "Stage 1 · micro" in again.stdout
