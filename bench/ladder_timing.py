"""How long the ladder takes on the embedded default, and what tunegate adds to stage 1.

Measures, on this machine, with the venv in place:
  1. stage 1 (both arms: 4-bit load, 10 steps, save, reload, generate, gates, tracking) through
     `tunegate run --stage 1`, against the baseline `bench/plain_trl_stage1.py` — the same work as
     a plain transformers+peft+trl script. Whole processes, imports included; median of N runs
     each, interleaved so both see the same machine noise; the ratio is tunegate / plain.
  2. the whole climb (`tunegate run`, stages 0–4) on the example, wall time and per stage.

Usage: python bench/ladder_timing.py [--runs 5] [--climbs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "metadata-experiment"
BIN = Path(sys.executable).parent


def _copy_example(root: Path) -> Path:
    target = root / "exp"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("runs"))
    return target / "tunegate.yaml"


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--climbs", type=int, default=1)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as cache:
        env["TUNEGATE_CACHE"] = cache
        subprocess.run(
            [
                str(BIN / "python"),
                "-c",
                "from tunegate.models import ensure_tiny_llama; ensure_tiny_llama()",
            ],
            check=True,
            env=env,
        )  # build once, outside the timings
        tunegate_s, plain_s, stage1_own = [], [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                plan = _copy_example(Path(tmp))
                tunegate_s.append(
                    _timed(
                        [
                            str(BIN / "tunegate"),
                            "run",
                            str(plan),
                            "--stage",
                            "1",
                            "--force-stage",
                            "1",
                        ],
                        env,
                    )
                )
                state = json.loads(
                    (plan.parent / "runs/metadata-experiment/state.json").read_text()
                )
                stage1_own.append(state["stages"]["micro"]["seconds"])
            plain_s.append(
                _timed([str(BIN / "python"), str(REPO / "bench/plain_trl_stage1.py")], env)
            )
        climbs = []
        for _ in range(args.climbs):
            with tempfile.TemporaryDirectory() as tmp:
                plan = _copy_example(Path(tmp))
                wall = _timed([str(BIN / "tunegate"), "run", str(plan)], env)
                state = json.loads(
                    (plan.parent / "runs/metadata-experiment/state.json").read_text()
                )
                climbs.append(
                    (wall, {k: (v["verdict"], v["seconds"]) for k, v in state["stages"].items()})
                )
    t, p = statistics.median(tunegate_s), statistics.median(plain_s)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        f"stage 1 via tunegate (process wall, median of {args.runs}): {t:.1f} s  "
        f"{[round(x, 1) for x in tunegate_s]}"
    )
    print(f"  of which the stage itself (state.json): {statistics.median(stage1_own):.1f} s")
    print(
        f"plain TRL script, same work (median of {args.runs}): {p:.1f} s  "
        f"{[round(x, 1) for x in plain_s]}"
    )
    print(f"ratio tunegate / plain: {t / p:.2f}")
    for wall, stages in climbs:
        detail = ", ".join(f"{k} {v[0]} {v[1]:.1f} s" for k, v in stages.items())
        print(f"full climb: {wall:.1f} s wall ({detail})")


if __name__ == "__main__":
    main()
