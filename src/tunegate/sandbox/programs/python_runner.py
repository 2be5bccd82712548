"""The one-shot Python runner: a program and its tests in one fresh sandboxed interpreter.

Started by `sandbox.python.run_python` as `python -I -S -c <this text> <channel fd>` in a work
directory holding program.py and tests.py. It reads the nonce on stdin (so it is in neither argv,
the environment nor a file), runs the program then the tests with their checks recorded on the
channel, and writes `E <nonce>` there only once the tests have run to their end.

With `-I -S` nothing but the standard library is importable: the recorder's import below is
replaced by the recorder's own text before this runs (`programs.source`).
"""

from __future__ import annotations

import os
import sys

from tunegate.sandbox.programs.recorder import recorder


def run(fd: int, nonce: bytes) -> None:
    # `fd` and `nonce` are reachable from the program's frames: the verdict rests on the checks.
    record, pair = recorder(fd)
    with open("program.py") as program, open("tests.py") as tests:
        src = program.read() + "\n" + tests.read()
    scope = {"__name__": "__main__", "__tg_record__": record, "__tg_pair__": pair}
    exec(compile(src, "program.py", "exec"), scope)
    os.write(fd, b"E " + nonce + b"\n")


if __name__ == "__main__":
    run(int(sys.argv.pop(1)), sys.stdin.buffer.readline().strip())
