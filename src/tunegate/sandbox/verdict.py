"""The one verdict rule, and the nonce-and-channel protocol every interpreter's run follows.

A program and its tests run in a child inside the isolation layers (`isolation.spawn`). The
verdict is one that `sys.exit(0)`, `os._exit(0)`, printing "PASSED", monkeypatching or an object
whose `__eq__` is always True cannot forge. PASS needs three things:
- a clean exit;
- the harness's nonce. It reaches the child on stdin (so it is in neither argv, the environment
  nor a file) and is written back on a separate channel only after the tests ran to their end;
- every literal check the tests make holding, judged here by `checks.Instrumented.verify` against
  expected values that never entered the sandbox.

The child's harness shares the program's interpreter, so a program written to hunt for the nonce
could find it. What it cannot find are the expected values, which is why those checks carry the
verdict.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tunegate.sandbox.checks import NO_CHECKS, Instrumented, Outcome
from tunegate.sandbox.isolation import spawn

Verdict = Literal["PASS", "FAIL", "TIMEOUT", "ERROR"]

# The most a program's result channel may carry: records are deduplicated per check, so a
# real test suite writes a few kilobytes; anything past this is not read.
CHANNEL_LIMIT = 1 << 20


@dataclass
class Execution:
    """What running one program with its tests gave."""

    verdict: Verdict
    exit_code: int | None
    seconds: float
    output_tail: str
    checks: str = ""  # e.g. "7/7 test checks verified outside the program"


def run_program(
    argv: list[str],
    work: Path,
    *,
    timeout_s: float,
    memory_mb: int,
    stdin: Callable[[str], bytes] = lambda nonce: nonce.encode() + b"\n",
    checks: Instrumented = NO_CHECKS,
) -> Execution:
    """Run `argv` + [channel fd] in `work` through the sandbox. The child reads a fresh nonce on
    stdin (`stdin(nonce)` is what it gets), writes its check records on the channel, and the
    line `E <nonce>` after its tests: PASS needs that, exit 0 and every check holding."""
    nonce = secrets.token_hex(16)
    started = time.perf_counter()
    read_fd, write_fd = os.pipe()
    received: list[bytes] = []
    # Drained while the child runs: a full pipe would block it until its timeout.
    reader = threading.Thread(target=lambda: received.append(read_channel(read_fd)))
    reader.start()
    try:
        timed_out, returncode, out = spawn(
            [*argv, str(write_fd)],
            work,
            stdin=stdin(nonce),
            channel_fd=write_fd,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
        )
    finally:
        reader.join()
    outcome = checks.verify(received[0].decode(errors="replace"), nonce)
    return judge(timed_out, returncode, outcome, started, out)


def read_channel(fd: int) -> bytes:
    """Everything written on a result channel until its last writer is gone (up to the limit);
    closes `fd`."""
    chunks, size = [], 0
    with os.fdopen(fd, "rb", buffering=0) as channel:
        while chunk := channel.read(65536):
            if size < CHANNEL_LIMIT:
                chunks.append(chunk)
                size += len(chunk)
    return b"".join(chunks)[:CHANNEL_LIMIT]


def judge(
    timed_out: bool, returncode: int, outcome: Outcome, started: float, out: bytes
) -> Execution:
    """The harness's verdict. A recorded mismatch is a FAIL whatever followed it (a plain
    `assert` would have stopped the tests there); PASS needs a clean exit, the nonce written
    after the tests, and every required check run and holding."""
    seconds = time.perf_counter() - started
    tail = out.decode(errors="replace")[-2000:]
    if outcome.failures or (outcome.missing and not timed_out and returncode == 0):
        report = "\n".join(["failed checks:", *outcome.failures, *outcome.missing][:12])
        tail = (tail.rstrip() + "\n" + report).lstrip()[-2000:]
    if outcome.failures:
        code = None if timed_out else returncode
        return Execution("FAIL", code, seconds, tail, outcome.summary)
    if timed_out:
        return Execution("TIMEOUT", None, seconds, tail, outcome.summary)
    if returncode == 0 and outcome.nonce_seen and not outcome.missing:
        return Execution("PASS", 0, seconds, tail, outcome.summary)
    if returncode < 0:
        return Execution("ERROR", returncode, seconds, tail, outcome.summary)
    return Execution("FAIL", returncode, seconds, tail, outcome.summary)
