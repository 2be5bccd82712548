"""JavaScript programs: node in the sandbox, a fresh process each, usually started ahead of time.

JavaScript runs under plain `node` with the same guarantees as Python: a child inside the
isolation layers (its own session, killed as a group on timeout; rlimits on CPU, memory, file
size and open files; a fresh temporary directory; a scrubbed environment: no `NODE_OPTIONS`, no
`NODE_EXTRA_CA_CERTS`, nothing of the parent's), and a verdict that `process.exit(0)` or printing
"PASSED" cannot forge. The tests are a CommonJS file that `require('./program.js')` and assert
with node's own `assert`; the harness (`programs/javascript_harness.js`) loads the program, then
the tests (awaiting them if they export a function or a promise), and only then writes a nonce on
a separate fd. The nonce reaches the harness on stdin and is read before the program loads, so it
is in neither argv, the environment nor any file; `assert` is frozen before the program loads, so
stubbing it out does not make failing tests pass. The program shares the harness's isolate: the
layers around the process, not the harness, are what contain it.

node cannot fork a warmed interpreter, so `NodeSpares` keeps sandboxed node processes started
ahead (the ~45 ms start happens off the caller's path), each blocked on stdin until its job
arrives; every program still gets its own process, directory and namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Empty, Queue

from tunegate.sandbox.checks import NO_CHECKS
from tunegate.sandbox.isolation import finish, start
from tunegate.sandbox.process_wide import ProcessWide
from tunegate.sandbox.programs import source
from tunegate.sandbox.verdict import Execution, judge, read_channel, run_program

# Resolved once: the child's PATH is scrubbed, so the parent's PATH decides which node runs.
NODE = shutil.which("node")


def run_javascript(
    program: str, tests: str, *, timeout_s: float = 5.0, memory_mb: int = 1024
) -> Execution:
    """Run `program` as ./program.js, then the CommonJS `tests`; PASS only if they finished."""
    if NODE is None:
        return Execution("ERROR", None, 0.0, "node is not installed (needed for javascript)")
    with tempfile.TemporaryDirectory(prefix="tunegate-exec-") as work:
        _prepare_work_dir(Path(work))
        return run_program(
            _node_argv(memory_mb),
            Path(work),
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            stdin=lambda nonce: _node_job(nonce, program, tests),
        )


def _prepare_work_dir(work: Path) -> None:
    # An explicit package.json: a "type": "module" in some parent folder must not turn the
    # CommonJS files into ES modules.
    (work / "package.json").write_text('{"type": "commonjs"}\n')
    (work / "harness.js").write_text(source("javascript_harness.js"))


def _node_argv(memory_mb: int) -> list[str]:
    # V8's heap limit below the address-space limit: a memory bomb then fails as V8's own
    # out-of-memory abort instead of a failed mmap somewhere inside it.
    return [NODE or "node", f"--max-old-space-size={max(memory_mb // 2, 64)}", "harness.js"]


def _node_job(nonce: str, program: str, tests: str) -> bytes:
    return json.dumps({"nonce": nonce, "program": program, "tests": tests}).encode()


class _Spare:
    """A sandboxed node started ahead of time, blocked on stdin until it gets its job."""

    def __init__(self, timeout_s: float, memory_mb: int) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="tunegate-exec-"))
        _prepare_work_dir(self.work)
        self.read_fd, write_fd = os.pipe()
        self.started = start(
            [*_node_argv(memory_mb), str(write_fd)],
            self.work,
            channel_fd=write_fd,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
        )

    def run(self, program: str, tests: str, timeout_s: float) -> Execution:
        nonce = secrets.token_hex(16)
        started = time.perf_counter()
        try:
            job = _node_job(nonce, program, tests)
            timed_out, code, out = finish(self.started, job, timeout_s)
            channel = read_channel(self.read_fd).decode(errors="replace")
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        return judge(timed_out, code, NO_CHECKS.verify(channel, nonce), started, out)

    def discard(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.started.proc.pid, signal.SIGKILL)
        self.started.proc.wait()
        self.started.sink.close()
        os.close(self.read_fd)
        shutil.rmtree(self.work, ignore_errors=True)


class NodeSpares:
    """JavaScript's pre-warmed workers: `size` sandboxed node processes started ahead, each
    replaced as it is used. Verdicts are those of `run_javascript`."""

    def __init__(
        self, size: int | None = None, timeout_s: float = 5.0, memory_mb: int = 1024
    ) -> None:
        self.size = size or os.cpu_count() or 1
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self._ready: Queue[_Spare] = Queue()
        # --die-with-parent fires when the starting *thread* ends: one long-lived starter.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="tunegate-node-spawner")
        self._closed = False
        for _ in range(self.size):
            self._spawner.submit(self._refill)

    def _refill(self) -> None:
        if not self._closed:
            self._ready.put(_Spare(self.timeout_s, self.memory_mb))

    def run(self, program: str, tests: str, timeout_s: float = 5.0) -> Execution:
        if timeout_s != self.timeout_s:  # its CPU limit was set at start: start a fresh one
            return run_javascript(program, tests, timeout_s=timeout_s, memory_mb=self.memory_mb)
        try:
            spare = self._ready.get_nowait()
        except Empty:
            spare = self._spawner.submit(_Spare, self.timeout_s, self.memory_mb).result()
        self._spawner.submit(self._refill)
        return spare.run(program, tests, timeout_s)

    def close(self) -> None:
        self._closed = True
        self._spawner.shutdown(wait=True)
        while True:
            try:
                self._ready.get_nowait().discard()
            except Empty:
                break


# One spare per core, shared by the whole process; None where node is missing (`run_javascript`
# then says so).
default_spares: ProcessWide[NodeSpares] = ProcessWide(
    lambda: NodeSpares() if NODE is not None else None
)
