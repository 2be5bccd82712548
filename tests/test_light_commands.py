"""The commands that only read (`status`, `plan`, `--help`) and a `run` the state refuses answer
in a blink: none of them imports torch, transformers or MLflow (seconds of imports each). Checked
with `python -X importtime`, which lists every module a process imports; their latencies are
measured in `bench/fixed_cost.py`, not asserted here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "mlflow", "peft", "trl", "bitsandbytes", "matplotlib")


def _imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tunegate.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    modules = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", result.stderr, re.M))
    return result, {m.split(".")[0] for m in modules}


@pytest.mark.parametrize("args", [["--help"], ["plan"], ["run", "--stage", "1"]])
def test_light_commands_import_no_ml_library(example: Path, args: list[str]) -> None:
    result, top = _imported(*args, cwd=example.parent)
    assert result.returncode in (0, 1), result.stdout + result.stderr[-2000:]
    assert top & set(HEAVY) == set(), f"tunegate {' '.join(args)} imported {top & set(HEAVY)}"
    if args[0] == "run":  # refused: stage 0 has not run
        assert result.returncode == 1
        assert "Stage 1 (micro) not started: stage 0 (environment) is not run" in result.stdout
        # Refused before the climb opened anything: no state, events, tracking store or report.
        run_dir = example.parent / "runs" / "metadata-experiment"
        assert not (run_dir / "state.json").exists() and not (run_dir / "events.jsonl").exists()
        assert not list(example.parent.glob("runs/*.db"))


def test_status_imports_no_ml_library(micro_climb: Path) -> None:
    result, top = _imported("status", cwd=micro_climb.parent)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "micro" in result.stdout and "PASS" in result.stdout
    assert top & set(HEAVY) == set(), f"tunegate status imported {top & set(HEAVY)}"
