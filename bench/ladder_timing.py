"""How long the ladder takes on the embedded default, and what tunegate adds to stage 1.

Measures, on this machine, with the venv in place:
  1. stage 1 (both arms: 4-bit load, 10 steps, save, reload, generate, gates, tracking) through
     `tunegate run --stage 1`, against the baseline `bench/plain_trl_stage1.py` — the same work as
     a plain transformers+peft+trl script. Whole processes, imports included; median of N runs
     each, interleaved so both see the same machine noise; the ratio is tunegate / plain.
  2. the whole climb (`tunegate run`, stages 0–4) on the example, wall time and per stage.

`--model tiny-llama` (the default) uses `examples/metadata-experiment` and builds tiny-llama once
in a fresh cache. `--model smollm2-135m` uses the real-model example (`tunegate init --example
real-model`: chat-rendered prompts, 64 new tokens at stage 1) and the converted model already in
the cache (converted once before any timing if missing); no climb by default (stages 2–4 take
from ten minutes to hours on a CPU); the result goes to bench/results/ladder_timing-smollm2.json.

Usage: python bench/ladder_timing.py [--runs 5] [--climbs 1]
       python bench/ladder_timing.py --model smollm2-135m --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmodels import (
    MODELS,
    REAL_MODEL,
    LoadLog,
    cpu_model,
    run_quiet,
    tunegate_cmd,
    wait_for_idle,
    write_real_example,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "metadata-experiment"
PYTHON = sys.executable


def _copy_example(root: Path, model: str) -> Path:
    if model == REAL_MODEL:
        return write_real_example(root / "exp")
    target = root / "exp"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("runs"))
    return target / "tunegate.yaml"


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    run_quiet(cmd, env)
    return time.perf_counter() - started


@contextlib.contextmanager
def _model_cache(model: str, env: dict[str, str]) -> Iterator[None]:
    """tiny-llama: built once in a fresh cache, outside the timings. smollm2-135m: the cache as
    it is (converting again takes about a minute), converted once now if it is missing."""
    if model == REAL_MODEL:
        run_quiet(
            [PYTHON, "-c", f"from tunegate.models import resolve_model; resolve_model({model!r})"],
            env,
        )
        yield
        return
    with tempfile.TemporaryDirectory() as cache:
        env["TUNEGATE_CACHE"] = cache
        subprocess.run(
            [PYTHON, "-c", "from tunegate.models import ensure_tiny_llama; ensure_tiny_llama()"],
            check=True,
            env=env,
        )  # build once, outside the timings
        yield


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=MODELS, default="tiny-llama")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--climbs", type=int, default=None, help="Default: 1, 0 on smollm2.")
    parser.add_argument("--no-wait", action="store_true", help="Do not wait for a load below 1.5.")
    args = parser.parse_args()
    real = args.model == REAL_MODEL
    n_climbs = args.climbs if args.climbs is not None else (0 if real else 1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    plain_cmd = [PYTHON, str(REPO / "bench/plain_trl_stage1.py")]
    if real:
        plain_cmd += ["--model", args.model]
    loads = LoadLog()
    with _model_cache(args.model, env):
        load_at_start = wait_for_idle() if not args.no_wait else os.getloadavg()[0]
        tunegate_s: list[float] = []
        plain_s: list[float] = []
        stage1_own: list[float] = []

        def run_tunegate() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                plan = _copy_example(Path(tmp), args.model)
                cmd = [*tunegate_cmd(), "run", str(plan), "--stage", "1", "--force-stage", "1"]
                tunegate_s.append(_timed(cmd, env))
                name = "real-model" if real else "metadata-experiment"
                state = json.loads((plan.parent / f"runs/{name}/state.json").read_text())
                stage1_own.append(state["stages"]["micro"]["seconds"])

        def run_plain() -> None:
            plain_s.append(_timed(plain_cmd, env))

        for k in range(args.runs):
            # tiny-llama: tunegate first, as in the earlier results; otherwise alternate.
            order = (
                (run_tunegate, run_plain) if not real or k % 2 == 0 else (run_plain, run_tunegate)
            )
            for side in order:
                loads.sample()
                side()
            print(
                f"run {k + 1}: tunegate {tunegate_s[-1]:.1f} s, plain {plain_s[-1]:.1f} s",
                flush=True,
            )
        climbs = []
        for _ in range(n_climbs):
            with tempfile.TemporaryDirectory() as tmp:
                plan = _copy_example(Path(tmp), args.model)
                wall = _timed([*tunegate_cmd(), "run", str(plan)], env)
                name = "real-model" if real else "metadata-experiment"
                state = json.loads((plan.parent / f"runs/{name}/state.json").read_text())
                climbs.append(
                    (wall, {k: (v["verdict"], v["seconds"]) for k, v in state["stages"].items()})
                )
    t, p = statistics.median(tunegate_s), statistics.median(plain_s)
    print(
        f"machine: {cpu_model()}, {platform.machine()}, {os.cpu_count()} cores, "
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
    if real:
        report = {
            "model": args.model,
            "machine": f"{cpu_model()}, {platform.machine()}, {os.cpu_count()} cores",
            "date": time.strftime("%Y-%m-%d"),
            "runs": args.runs,
            "tunegate_stage1_process_s": {"median": t, "runs": tunegate_s},
            "tunegate_stage1_state_s": {
                "median": statistics.median(stage1_own),
                "runs": stage1_own,
            },
            "plain_script_s": {"median": p, "runs": plain_s},
            "ratio_tunegate_vs_plain": t / p,
            "load_average_1min": loads.summary(load_at_start),
        }
        (REPO / "bench" / "results").mkdir(exist_ok=True)
        (REPO / "bench" / "results" / "ladder_timing-smollm2.json").write_text(
            json.dumps(report, indent=2)
        )


if __name__ == "__main__":
    main()
