"""Run a generated Python program with its tests, in the sandbox, and judge the verdict.

The program and its tests run in a child inside `sandbox.spawn`'s layers (bubblewrap, no network,
unprivileged uid, rlimits, own session, scrubbed environment, fresh work directory). The verdict
is one that `sys.exit(0)`, `os._exit(0)`, printing "PASSED" or monkeypatching cannot forge: PASS
needs a clean exit *and* the harness's nonce, which reaches the runner on stdin (in neither argv,
the environment nor a file) and is written back on a separate pipe only after the tests ran to
their end. The runner shares the program's interpreter, so a program written to look for the
nonce in the runner's frame could still find it; everything it could do with it is contained.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tunegate.evaluate.sandbox import spawn, world_executable

Verdict = Literal["PASS", "FAIL", "TIMEOUT", "ERROR"]

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

_RUNNER = """\
import os, sys
def _run(fd, nonce):
    src = open("program.py").read() + "\\n" + open("tests.py").read()
    exec(compile(src, "program.py", "exec"), {"__name__": "__main__"})
    os.write(fd, nonce)
_run(int(sys.argv.pop(1)), sys.stdin.buffer.readline().strip())
"""


@dataclass
class Execution:
    verdict: Verdict
    exit_code: int | None
    seconds: float
    output_tail: str


def run_python(
    program: str, tests: str, *, timeout_s: float = 5.0, memory_mb: int = 1024
) -> Execution:
    """Execute `program` followed by `tests`; PASS only if the tests ran to the end."""
    with tempfile.TemporaryDirectory(prefix="tunegate-exec-") as work:
        Path(work, "program.py").write_text(program, encoding="utf-8")
        Path(work, "tests.py").write_text(tests, encoding="utf-8")
        return run_program(
            [PYTHON, "-I", "-S", "-c", _RUNNER],
            Path(work),
            timeout_s=timeout_s,
            memory_mb=memory_mb,
        )


def run_program(
    argv: list[str],
    work: Path,
    *,
    timeout_s: float,
    memory_mb: int,
    stdin: Callable[[str], bytes] = lambda nonce: nonce.encode() + b"\n",
) -> Execution:
    """Run `argv` + [channel fd] in `work` through the sandbox. The child reads a fresh nonce on
    stdin (`stdin(nonce)` is what it gets) and must write it back on the channel after its
    tests: PASS needs that and exit 0."""
    nonce = secrets.token_hex(16)
    started = time.perf_counter()
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as channel:
        timed_out, returncode, out = spawn(
            [*argv, str(write_fd)],
            work,
            stdin=stdin(nonce),
            channel_fd=write_fd,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
        )
        token = channel.read().decode(errors="replace").strip()
    return judge(timed_out, returncode, token == nonce, started, out)


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
