"""The pre-warmed Python worker: a fork server that runs inside the sandbox's layers.

Started by `sandbox.python.WorkerPool` as `python -I -S -c <this text> <channel bytes> <output
bytes>` (the most it keeps of each) inside bubblewrap (its private /tmp is the only writable
place), as nobody, under the process limit. Jobs arrive on stdin and answers leave on stdout,
each a 4-byte length and JSON. Per job it
compiles the source, then forks a child that takes its own session, its rlimits, a fresh
directory and a scrubbed environment, runs the program and its tests (their checks recorded on a
pipe) and writes the nonce there only after they finish. The server waits on the child's pidfd
with the timeout, kills its group and sweeps everything else in the PID namespace (double-forked
daemons included) before answering.

Standard library only (with `-I -S` nothing else is importable: the recorder's import below is
replaced by its own text, `programs.source`), and as few modules as possible: every module this
server loads makes each of its forks dearer.
"""

from __future__ import annotations

import contextlib  # loaded by traceback and typing (PRELOAD) anyway
import fcntl
import gc
import json
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback

from tunegate.sandbox.programs.recorder import recorder

# Modules most generated programs import: loaded once here, free in each fork. Each one also
# makes every fork dearer (page tables to copy): the heavier standard modules (decimal,
# statistics, random, json…) would double a fork's cost for all programs to save the few that
# import them a millisecond, so they are left out.
PRELOAD = (
    "math", "re", "collections", "itertools", "functools", "typing", "string", "heapq", "bisect",
    "operator", "traceback",
)  # fmt: skip
# Sources past this size are compiled in the child, under its limits (see `run_job`).
COMPILE_IN_SERVER_BELOW = 1 << 18


def recv() -> dict:
    head = sys.stdin.buffer.read(4)
    if len(head) < 4:
        sys.exit(0)  # the pool closed our stdin: nothing more to run
    return json.loads(sys.stdin.buffer.read(struct.unpack(">I", head)[0]))


def send(answer: dict) -> None:
    data = json.dumps(answer).encode()
    sys.stdout.buffer.write(struct.pack(">I", len(data)) + data)
    sys.stdout.buffer.flush()


def remove(d: str) -> None:
    # shutil and tempfile stay unimported: every module in this server makes each fork dearer.
    for root, dirs, files in os.walk(d, topdown=False):
        for name in files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(root, name))
        for name in dirs:
            path = os.path.join(root, name)
            try:
                os.rmdir(path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # a symlink to a directory
    os.rmdir(d)


def sweep(me: int) -> None:
    # Everything in this PID namespace but this server and its init (kill(-1) spares both),
    # daemons included, until nothing else is left: a fork bomb may fork during a round.
    for _ in range(200):
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (me, 1)]:
            return
        time.sleep(0.001)


def drain(r: int, limit: int) -> bytes:
    # Whatever the (non-blocking) pipe holds, up to `limit` bytes kept.
    channel: list[bytes] = []
    while True:
        try:
            chunk = os.read(r, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        if sum(map(len, channel)) < limit:
            channel.append(chunk)
    return b"".join(channel)[:limit]


def child(job: dict, code: object, d: str, w: int, out: int) -> None:
    """The forked child: confine itself, run the program and tests, and never return."""
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
    # `w` and `nonce` are reachable from the program's frames: the verdict rests on the checks.
    nonce = job.pop("nonce").encode()
    record, pair = recorder(w)
    scope = {"__name__": "__main__", "__tg_record__": record, "__tg_pair__": pair}
    status = 1
    try:
        if code is None:
            code = compile(job.pop("program") + "\n" + job.pop("tests"), "program.py", "exec")
        exec(code, scope)  # type: ignore[arg-type]  # compiled by the server, or just above
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


def precompile(job: dict) -> object:
    # Compiled here, not in the child: a fork's first compile pays ~200 copy-on-write page
    # faults (0.8 ms, a quarter of a program's cost). Compiling runs none of the program's code;
    # the rare source that does not compile (or is huge) is compiled in the child, under its
    # limits, which reports the error as the program's.
    if len(job["program"]) + len(job["tests"]) >= COMPILE_IN_SERVER_BELOW:
        return None
    try:
        return compile(job["program"] + "\n" + job["tests"], "program.py", "exec")
    except BaseException:
        return None


def read_tail(path: str, size_limit: int) -> str:
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - size_limit))
        return f.read().decode(errors="replace")


def run_job(job: dict, d: str, limits: tuple[int, int], me: int) -> dict:
    """One program in a fresh child under `d`; the answer the pool judges. `limits`: the most
    bytes kept of the result channel and of the output."""
    channel_limit, tail_limit = limits
    code = precompile(job)
    os.mkdir(d, 0o700)
    out = os.open(os.path.join(d, ".out"), os.O_WRONLY | os.O_CREAT, 0o600)
    r, w = os.pipe()
    # Room for every record a test suite writes (deduplicated per check: a few KB), so the
    # child never blocks on it and the server need not wake for each one; pages are only
    # allocated as they fill. Past the user's pipe quota this fails: the default 64 KiB still
    # holds a suite's records.
    with contextlib.suppress(OSError):
        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, channel_limit)
    sys.stdout.flush()
    try:
        pid = os.fork()
    except OSError as e:
        # EAGAIN: the uid's process limit, set when this server started, is taken by other
        # sandboxes since. The pool starts a fresh server (with a fresh limit) for the job.
        for fd in (r, w, out):
            os.close(fd)
        with contextlib.suppress(OSError):
            remove(d)
        return {"unavailable": f"the worker could not fork: {os.strerror(e.errno or 0)}"}
    if pid == 0:
        child(job, code, d, w, out)
    os.close(w)
    os.close(out)
    fd = os.pidfd_open(pid)
    ready, _, _ = select.select([fd], [], [], job["timeout_s"])
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    sweep(me)
    os.set_blocking(r, False)
    token = drain(r, channel_limit).decode(errors="replace")
    os.close(r)
    tail = read_tail(os.path.join(d, ".out"), tail_limit)
    with contextlib.suppress(OSError):
        remove(d)
    returncode = os.waitstatus_to_exitcode(status)
    return {"timed_out": not ready, "returncode": returncode, "token": token, "tail": tail}


def main() -> None:
    # Popped: the programs see the argv they always saw.
    limits = int(sys.argv.pop(1)), int(sys.argv.pop(1))
    for name in (*PRELOAD, "_blake2"):  # _blake2: the recorder's digest
        __import__(name)
    gc.freeze()  # the server's objects stay out of every child's collections: fewer pages copied
    me = os.getpid()
    serial = 0
    while True:
        job = recv()
        serial += 1
        answer = run_job(job, f"/tmp/job-{me}-{serial}", limits, me)
        send(answer)
        if "unavailable" in answer:
            sys.exit(0)  # replaced by the pool


if __name__ == "__main__":
    main()
