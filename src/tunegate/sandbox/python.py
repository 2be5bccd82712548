"""Python programs: a fresh sandboxed interpreter each, or a pre-warmed worker from a pool.

A fresh interpreter (`run_python`) costs 15–20 ms before the first line of a program runs,
bubblewrap another 10. A worker (`WorkerPool`) pays that once: it is a small fork server
(`programs/python_worker.py`) started inside the same layers (bubblewrap namespaces, read-only
root, no network, uid nobody, rlimits) with the standard modules generated code imports already
loaded, and each program costs a fork. A program that kills its worker (it runs as the same uid)
gets ERROR, and the worker is replaced (the program is tried once more on the new one first: a
worker that died while idle, or that can no longer fork because other sandboxes took the uid's
process limit since it started, looks the same from here). Both give the same verdicts: every
program starts from the same pristine state, and the one verdict rule (`verdict.judge`) decides.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue
from typing import Any

from tunegate.sandbox.checks import instrument
from tunegate.sandbox.isolation import (
    MAX_PROCESSES,
    OUTPUT_TAIL_BYTES,
    detect,
    reap_orphans,
    start_server,
    world_executable,
)
from tunegate.sandbox.process_wide import ProcessWide
from tunegate.sandbox.programs import source
from tunegate.sandbox.verdict import CHANNEL_LIMIT, Execution, judge, run_program

# An interpreter the sandbox's uid (nobody) can run: this one's real path if every directory
# above it is open to others (a pyenv under /root is not), else the system's. `-I -S` needs only
# the standard library.
PYTHON = next(
    (
        p
        for p in (os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3")
        if world_executable(p)
    ),
    os.path.realpath(sys.executable),
)


def run_python(
    program: str, tests: str, *, timeout_s: float = 5.0, memory_mb: int = 1024
) -> Execution:
    """Execute `program` followed by `tests` in a fresh process; PASS only if the tests ran to
    the end and held."""
    checks = instrument(tests)
    with tempfile.TemporaryDirectory(prefix="tunegate-exec-") as work:
        Path(work, "program.py").write_text(program, encoding="utf-8")
        Path(work, "tests.py").write_text(checks.tests, encoding="utf-8")
        return run_program(
            [PYTHON, "-I", "-S", "-c", source("python_runner.py")],
            Path(work),
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            checks=checks,
        )


class _Worker:
    """One fork server and its pipes: a job in, an answer out."""

    def __init__(self) -> None:
        argv = [PYTHON, "-I", "-S", "-c", source("python_worker.py")]
        # The worker's children share its process limit: room for them all.
        self.proc = start_server(
            [*argv, str(CHANNEL_LIMIT), str(OUTPUT_TAIL_BYTES)], processes=MAX_PROCESSES * 4
        )

    def run(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """One program; None when the server died (killed by the program, or crashed)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        data = json.dumps(job).encode()
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
            head = self.proc.stdout.read(4)
            if len(head) < 4:
                return None
            answer: dict[str, Any] = json.loads(self.proc.stdout.read(struct.unpack(">I", head)[0]))
            return answer
        except (BrokenPipeError, OSError, ValueError):
            return None

    def close(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass


class WorkerPool:
    """`workers` pre-warmed Python sandboxes; thread-safe. `map` runs programs on all of them in
    parallel, each program's verdict being what a sequential run gives."""

    def __init__(self, workers: int | None = None, memory_mb: int = 1024) -> None:
        if detect().bwrap is None:
            # Without a PID namespace a worker could not tell its programs' daemons from other
            # processes of the same uid: programs then run one fresh process each.
            raise RuntimeError("the worker pool needs bubblewrap (apt install bubblewrap)")
        self.size = workers or os.cpu_count() or 1
        self.memory_mb = memory_mb
        self._idle: Queue[_Worker] = Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        # bubblewrap's --die-with-parent fires when the *thread* that started it ends, so every
        # worker is started from this one long-lived thread, not from a caller's short-lived one.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="tunegate-pool-spawner")
        for _ in range(self.size):
            self._idle.put(self._start())

    def _start(self) -> _Worker:
        reap_orphans()  # a replaced worker's namespace init, orphaned to us
        worker = self._spawner.submit(_Worker).result()
        with self._lock:
            self._all.append(worker)
        return worker

    def _ask(self, worker: _Worker, job: dict[str, Any]) -> dict[str, Any] | None:
        """The worker's answer; None when it died (killed by the program, or while idle)."""
        return worker.run(job)

    def _replace(self, worker: _Worker) -> None:
        """Forget a dead or spent worker (its namespace is reaped by the next start)."""
        worker.close()
        with self._lock:
            self._all.remove(worker)

    def run(self, program: str, tests: str, timeout_s: float = 5.0) -> Execution:
        """`program` then `tests` on an idle worker: `run_python`'s verdict, in milliseconds."""
        nonce = secrets.token_hex(16)
        checks = instrument(tests)
        job = {
            "program": program,
            "tests": checks.tests,
            "nonce": nonce,
            "timeout_s": timeout_s,
            "cpu_s": int(timeout_s) + 1,
            "memory_mb": self.memory_mb,
        }
        started = time.perf_counter()
        worker = self._idle.get()
        answer = self._ask(worker, job)
        if answer is None or "unavailable" in answer:
            # The worker died while idle, or can no longer fork: the uid's process limit it was
            # started with (room above the tasks nobody had then) is taken since by other
            # sandboxes (pools and spares of other tunegate processes). A fresh worker gets a
            # fresh limit and runs the program; one that kills its worker kills that one too.
            self._replace(worker)
            worker = self._start()
            started = time.perf_counter()
            answer = self._ask(worker, job)
        if answer is None or "unavailable" in answer:
            self._replace(worker)
            self._idle.put(self._start())
            why = "the program killed its worker" if answer is None else answer["unavailable"]
            return Execution("ERROR", None, time.perf_counter() - started, why)
        if worker.proc.poll() is None:
            self._idle.put(worker)
        else:  # it answered, then died (the program's daemon killed it on its way out)
            self._replace(worker)
            self._idle.put(self._start())
        return judge(
            answer["timed_out"],
            answer["returncode"],
            checks.verify(answer["token"], nonce),
            started,
            answer["tail"].encode(),
        )

    def map(self, jobs: list[tuple[str, str]], timeout_s: float = 5.0) -> list[Execution]:
        """Run (program, tests) pairs on all workers; results in input order."""
        for tests in {t for _, t in jobs}:
            # Rewritten up front, while the workers are idle: done in the threads, it would hold
            # the GIL while they wait for their next job.
            instrument(tests)
        with ThreadPoolExecutor(max_workers=self.size) as ex:
            return list(ex.map(lambda job: self.run(job[0], job[1], timeout_s), jobs))

    def pids(self) -> set[int]:
        """The workers' own processes (bubblewrap, its init, the server), for checks that
        nothing else is left running."""
        with self._lock:
            roots = {w.proc.pid for w in self._all if w.proc.poll() is None}
        children: dict[int, list[int]] = {}
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(p.name))
        found, todo = set(), list(roots)
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo += children.get(pid, [])
        return found

    def close(self) -> None:
        with self._lock:
            for worker in self._all:
                worker.close()
            self._all.clear()
        self._spawner.shutdown(wait=False)
        reap_orphans()


# One worker per core, shared by the whole process; None without bubblewrap (programs then run
# one fresh process each).
default_pool: ProcessWide[WorkerPool] = ProcessWide(
    lambda: WorkerPool() if detect().bwrap is not None else None
)
