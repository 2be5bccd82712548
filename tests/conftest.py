"""Shared fixtures: one tiny-llama build per session, example experiments in temporary dirs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "metadata-experiment"
# `tunegate data example`'s files, shipped as package data (tools/seed_scenarios generates them).
SCENARIO_EXAMPLE = REPO / "src" / "tunegate" / "resources" / "seed-scenarios"
TUNEGATE = str(Path(sys.executable).with_name("tunegate"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build tiny-llama once per session, away from the user's ~/.cache; never touch a hub."""
    os.environ["TUNEGATE_CACHE"] = str(tmp_path_factory.mktemp("tunegate-cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example experiment; returns its plan file."""
    target = tmp_path / "exp"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("runs"))
    return target / "tunegate.yaml"


@pytest.fixture(scope="session")
def micro_climb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example climbed through stage 1 once a session, never interrupted; returns its plan.
    Tests that compare against it or only read it share it: do not write into it."""
    target = tmp_path_factory.mktemp("micro-climb") / "exp"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("runs"))
    result = run_cli("run", str(target / "tunegate.yaml"), "--until", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return target / "tunegate.yaml"


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the installed `tunegate` command, as a user would."""
    return subprocess.run(
        [TUNEGATE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def run_in_terminal(
    *args: str, cwd: Path | None = None, timeout: float = 900, columns: int = 160
) -> tuple[int, str]:
    """Run `tunegate` on a pseudo-terminal, as a user at a shell does: it sees a TTY and shows
    its progress bars. Returns the exit code and the screen output, escape codes removed."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        [TUNEGATE, *args],
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)},
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        else:
            proc.kill()
            raise TimeoutError(f"tunegate {' '.join(args)} ran past {timeout} s")
    finally:
        os.close(master)
    code = proc.wait(timeout=60)
    return code, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """smollm2-135m converted once per session into the isolated cache (~50 s on 2 cores)."""
    from tunegate.models import resolve_model

    return resolve_model("smollm2-135m")
