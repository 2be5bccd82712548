"""Run a generated Python program with its tests in a child process, bounded and isolated.

This is the baseline the sandbox issue hardens (bubblewrap, network namespace, unprivileged uid,
pre-warmed workers). What it already guarantees: a fresh process in its own session, killed as a
group on timeout; rlimits on CPU, memory, file size and open files; a fresh temporary directory,
removed afterwards; a scrubbed environment; and a verdict that `sys.exit(0)`, `os._exit(0)` or
printing "PASSED" cannot forge — PASS needs the harness's nonce, written *after* the tests ran, on
a pipe separate from the program's output. The nonce and pipe still live in the program's own
interpreter, so a program that goes looking for them can find them; moving them out of its reach
is the sandbox issue's work.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Verdict = Literal["PASS", "FAIL", "TIMEOUT", "ERROR"]

_RUNNER = """\
import os, sys
def _run(fd, nonce):
    out = os.fdopen(fd, "w")
    src = open("program.py").read() + "\\n" + open("tests.py").read()
    exec(compile(src, "program.py", "exec"), {"__name__": "__main__"})
    out.write(nonce)
    out.flush()
_run(int(sys.argv.pop(1)), sys.argv.pop(1))
"""


@dataclass
class Execution:
    verdict: Verdict
    exit_code: int | None
    seconds: float
    output_tail: str


def _limits(cpu_s: int, memory_mb: int) -> None:
    os.setsid()  # own session: a timeout kills the whole group
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def run_python(
    program: str, tests: str, *, timeout_s: float = 5.0, memory_mb: int = 1024
) -> Execution:
    """Execute `program` followed by `tests`; PASS only if the tests ran to the end."""
    nonce = secrets.token_hex(16)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tunegate-exec-") as work:
        Path(work, "program.py").write_text(program, encoding="utf-8")
        Path(work, "tests.py").write_text(tests, encoding="utf-8")
        read_fd, write_fd = os.pipe()
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _RUNNER, str(write_fd), nonce],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                preexec_fn=lambda: _limits(int(timeout_s) + 1, memory_mb),
            )
        except BaseException:
            os.close(read_fd)  # no fd leak when the process cannot start (EMFILE, ENOMEM)
            raise
        finally:
            os.close(write_fd)
        timed_out = False
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            out = b""
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # no survivors, daemons included
            if timed_out:
                out, _ = proc.communicate()
        with os.fdopen(read_fd, "rb") as channel:
            token = channel.read().decode(errors="replace")
    return judge(timed_out, proc.returncode, token == nonce, started, out)


def judge(
    timed_out: bool, returncode: int, nonce_seen: bool, started: float, out: bytes
) -> Execution:
    """The harness's verdict: PASS needs a clean exit *and* the nonce written after the tests."""
    seconds = time.perf_counter() - started
    tail = out.decode(errors="replace")[-2000:]
    if timed_out:
        return Execution("TIMEOUT", None, seconds, tail)
    if returncode == 0 and nonce_seen:
        return Execution("PASS", 0, seconds, tail)
    if returncode < 0:
        return Execution("ERROR", returncode, seconds, tail)
    return Execution("FAIL", returncode, seconds, tail)
