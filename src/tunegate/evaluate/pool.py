"""Pre-warmed Python workers: the sandbox's layers, at a fork's cost per program.

A fresh interpreter costs 15–20 ms before the first line of a program runs, bubblewrap another
10. A worker pays that once: it is a small fork server (`_SERVER`) started inside the same
layers as `sandbox.spawn` (bubblewrap namespaces, read-only root, no network, uid nobody,
rlimits), with the standard modules generated code imports already loaded. Per program it
compiles the source (a fork's first compile would pay for its copy-on-write faults), then forks
a child that takes its own session, its rlimits, a fresh directory in the worker's private /tmp
and a scrubbed environment, runs the program and its tests (their checks recorded, see
`checks`), and writes the nonce on a pipe only after they finish. The worker waits on the
child's pidfd with the timeout, then kills the child's group and sweeps every other process in
its PID namespace (double-forked daemons included) before the next program. A program that
kills its worker (it runs as the same uid) gets ERROR, and the worker is replaced.

`WorkerPool.map` runs programs on all workers in parallel; each program's verdict is what a
sequential run gives (every run starts from the same pristine fork).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Empty, Queue

from tunegate.evaluate.checks import NO_CHECKS, RECORDER, instrument
from tunegate.evaluate.execute import CHANNEL_LIMIT, PYTHON, Execution, judge, read_channel
from tunegate.evaluate.sandbox import (
    MAX_PROCESSES,
    _bwrap_args,
    detect,
    nobody_tasks,
    reap_orphans,
    scrubbed_env,
    seccomp_fd,
)

# Modules most generated programs import: loaded once in the worker, free in each fork. Each
# one also makes every fork dearer (page tables to copy): the heavier standard modules (decimal,
# statistics, random, json…) would double a fork's cost for all programs to save the few that
# import them a millisecond, so they are left out.
_PRELOAD = "math re collections itertools functools typing string heapq bisect operator traceback"

_SERVER = (
    RECORDER
    + r"""
import os, sys, gc, json, fcntl, struct, select, signal, resource, time, traceback
for _m in PRELOAD.split():
    __import__(_m)
import _blake2  # the recorder's digest
gc.freeze()  # the server's objects stay out of every child's collections: fewer pages copied
inp, outp = sys.stdin.buffer, sys.stdout.buffer
me = os.getpid()

def recv():
    head = inp.read(4)
    if len(head) < 4:
        sys.exit(0)
    return json.loads(inp.read(struct.unpack(">I", head)[0]))

def send(obj):
    data = json.dumps(obj).encode()
    outp.write(struct.pack(">I", len(data)) + data)
    outp.flush()

def remove(d):
    # shutil and tempfile stay unimported: every module in this server makes each fork dearer.
    for root, dirs, files in os.walk(d, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(root, name))
            except OSError:
                pass
        for name in dirs:
            path = os.path.join(root, name)
            try:
                os.rmdir(path)
            except OSError:
                try:
                    os.unlink(path)  # a symlink to a directory
                except OSError:
                    pass
    os.rmdir(d)

def sweep():
    # Everything in this PID namespace but this server and its init (kill(-1) spares both),
    # daemons included, until nothing else is left: a fork bomb may fork during a round.
    for _ in range(200):
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (me, 1)]:
            return
        time.sleep(0.001)

def drain(r, channel):
    # Whatever the pipe holds now, up to MAX_CHANNEL bytes kept; True at end of file.
    while True:
        try:
            chunk = os.read(r, 65536)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        if sum(map(len, channel)) < MAX_CHANNEL:
            channel.append(chunk)

def child(job, code, d, w, out):
    os.setsid()
    os.chdir(d)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.closerange(3, w)
    os.closerange(w + 1, 1024)
    cpu, mem = job["cpu_s"], job["memory_mb"] << 20
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    os.environ.clear()
    os.environ.update(PATH="/usr/bin:/bin", HOME=d, TMPDIR=d, LANG="C.UTF-8")
    nonce = job.pop("nonce").encode()
    record, pair = _tg_recorder(w)
    scope = {"__name__": "__main__", "__tg_record__": record, "__tg_pair__": pair}
    status = 1
    try:
        if code is None:
            code = compile(job.pop("program") + "\n" + job.pop("tests"), "program.py", "exec")
        exec(code, scope)
        os.write(w, b"E " + nonce + b"\n")
        status = 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)

serial = 0
while True:
    job = recv()
    # Compiled here, not in the child: a fork's first compile pays ~200 copy-on-write page
    # faults (0.8 ms, a quarter of a program's cost). Compiling runs none of the program's code;
    # the rare source that does not compile (or is huge) is compiled in the child, under its
    # limits, which reports the error as the program's.
    code = None
    if len(job["program"]) + len(job["tests"]) < 1 << 18:
        try:
            code = compile(job["program"] + "\n" + job["tests"], "program.py", "exec")
        except BaseException:
            pass
    serial += 1
    d = "/tmp/job-%d-%d" % (me, serial)
    os.mkdir(d, 0o700)
    out = os.open(os.path.join(d, ".out"), os.O_WRONLY | os.O_CREAT, 0o600)
    r, w = os.pipe()
    # Room for every record a test suite writes (deduplicated per check: a few KB), so the
    # child never blocks on it and the server need not wake for each one; pages are only
    # allocated as they fill.
    try:
        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, MAX_CHANNEL)
    except OSError:
        pass  # past the user's pipe quota: the default 64 KiB still holds a test suite's records
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        child(job, code, d, w, out)
    os.close(w)
    os.close(out)
    fd = os.pidfd_open(pid)
    ready, _, _ = select.select([fd], [], [], job["timeout_s"])
    timed_out = not ready
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    sweep()
    os.set_blocking(r, False)
    channel = []
    drain(r, channel)
    os.close(r)
    token = b"".join(channel)[:MAX_CHANNEL].decode(errors="replace")
    with open(os.path.join(d, ".out"), "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - 8192))
        tail = f.read().decode(errors="replace")
    try:
        remove(d)
    except OSError:
        pass
    code = os.waitstatus_to_exitcode(status)
    send({"timed_out": timed_out, "returncode": code, "token": token, "tail": tail})
""".replace("PRELOAD", repr(_PRELOAD)).replace("MAX_CHANNEL", str(CHANNEL_LIMIT))
)


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        iso = detect()
        argv = [PYTHON, "-I", "-S", "-c", _SERVER]
        # The worker's children share this limit: room for them above what nobody already runs.
        limit = MAX_PROCESSES * 4 + (nobody_tasks() if iso.drop_uid else 0)
        filter_fd = seccomp_fd() if iso.seccomp else None
        if iso.bwrap:
            argv = [iso.bwrap, *_bwrap_args(None, filter_fd), *argv]  # its own private /tmp
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=scrubbed_env("/tmp"),
            cwd="/",
            preexec_fn=lambda: _server_limits(iso.drop_uid, limit),
            pass_fds=(filter_fd,) if filter_fd is not None else (),
        )
        if filter_fd is not None:
            os.close(filter_fd)

    def run(self, job: dict) -> dict | None:
        """One program; None when the server died (killed by the program, or crashed)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        data = json.dumps(job).encode()
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
            head = self.proc.stdout.read(4)
            if len(head) < 4:
                return None
            return json.loads(self.proc.stdout.read(struct.unpack(">I", head)[0]))
        except (BrokenPipeError, OSError, ValueError):
            return None

    def close(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass


def _server_limits(drop_uid: bool, limit: int) -> None:
    """The server runs as nobody with the process limit (so a child's fork bomb is bounded);
    its children set CPU, memory, file size and descriptor limits themselves."""
    import resource

    from tunegate.evaluate.sandbox import _drop_privileges

    os.setsid()
    if drop_uid:
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        _drop_privileges()


class WorkerPool:
    """`workers` pre-warmed Python sandboxes; thread-safe."""

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
        worker = self._spawner.submit(_Worker, self.memory_mb).result()
        with self._lock:
            self._all.append(worker)
        return worker

    def run(self, program: str, tests: str, timeout_s: float = 5.0) -> Execution:
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
        try:
            answer = worker.run(job)
        finally:
            if worker.proc.poll() is None:
                self._idle.put(worker)
            else:
                worker.close()
                self._idle.put(self._start())
        if answer is None:
            return Execution(
                "ERROR", None, time.perf_counter() - started, "the program killed its worker"
            )
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


_default: WorkerPool | None = None
_default_lock = threading.Lock()


def default_pool() -> WorkerPool | None:
    """The process-wide pool, one worker per core, started on first use and closed at exit;
    None where bubblewrap is missing (programs then run one fresh process each)."""
    global _default
    with _default_lock:
        if _default is None and detect().bwrap is not None:
            _default = WorkerPool()
            atexit.register(_default.close)
        return _default


class _NodeSpare:
    """A sandboxed node started ahead of time, blocked on stdin until it gets its job."""

    def __init__(self, timeout_s: float, memory_mb: int) -> None:
        from tunegate.evaluate.execute_more import node_argv, prepare_node_dir
        from tunegate.evaluate.sandbox import start

        self.work = Path(tempfile.mkdtemp(prefix="tunegate-exec-"))
        prepare_node_dir(self.work)
        self.read_fd, write_fd = os.pipe()
        self.started = start(
            [*node_argv(memory_mb), str(write_fd)],
            self.work,
            channel_fd=write_fd,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
        )

    def run(self, program: str, tests: str, timeout_s: float) -> Execution:
        from tunegate.evaluate.execute_more import node_job
        from tunegate.evaluate.sandbox import finish

        nonce = secrets.token_hex(16)
        started = time.perf_counter()
        try:
            timed_out, code, out = finish(self.started, node_job(nonce, program, tests), timeout_s)
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
    """JavaScript's pre-warmed workers. node cannot fork a warmed interpreter, so the pool keeps
    `size` sandboxed node processes started ahead (the ~45 ms start happens off the caller's
    path) and replaces each one as it is used. Every program still gets its own process,
    directory and namespaces; verdicts are those of `run_javascript`."""

    def __init__(self, size: int | None = None, timeout_s: float = 5.0, memory_mb: int = 1024):
        self.size = size or os.cpu_count() or 1
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self._ready: Queue[_NodeSpare] = Queue()
        # --die-with-parent fires when the starting *thread* ends: one long-lived starter.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="tunegate-node-spawner")
        self._closed = False
        for _ in range(self.size):
            self._spawner.submit(self._refill)

    def _refill(self) -> None:
        if not self._closed:
            self._ready.put(_NodeSpare(self.timeout_s, self.memory_mb))

    def run(self, program: str, tests: str, timeout_s: float = 5.0) -> Execution:
        from tunegate.evaluate.execute_more import run_javascript

        if timeout_s != self.timeout_s:  # its CPU limit was set at start: start a fresh one
            return run_javascript(program, tests, timeout_s=timeout_s, memory_mb=self.memory_mb)
        try:
            spare = self._ready.get_nowait()
        except Empty:
            spare = self._spawner.submit(_NodeSpare, self.timeout_s, self.memory_mb).result()
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


_node_default: NodeSpares | None = None


def default_node_spares() -> NodeSpares:
    """The process-wide JavaScript spares, started on first use and closed at exit."""
    global _node_default
    with _default_lock:
        if _node_default is None:
            _node_default = NodeSpares()
            atexit.register(_node_default.close)
        return _node_default


def close_default_pools() -> None:
    """Close the process-wide Python pool and JavaScript spares (the next use starts new ones)."""
    global _default, _node_default
    with _default_lock:
        if _default is not None:
            _default.close()
        if _node_default is not None:
            _node_default.close()
        _default = _node_default = None
