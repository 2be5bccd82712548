"""The run directory: everything a run writes, and its state, written atomically.

`state.json` is replaced with write-temp → fsync → rename, so a kill at any instant leaves either
the old state or the new one, never half of either.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.errors import UserError

if TYPE_CHECKING:
    from tunegate.state import LadderState


def current_umask() -> int:
    """The process umask, read without setting it (`os.umask` would change it for every
    thread for an instant)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp makes the file 0600; the file it replaces is one anyone may open (a report
        # to share, a state file a teammate reads), so give it what open() would have.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a crash
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


class RunLock:
    """One climber per run directory: an exclusive `flock` on `<run>/.lock`.

    The OS releases it when its holder exits, however it exits (`kill -9` included), so a
    crashed climb never leaves a stale lock to clean up. The holder writes who it is into the
    file, for the message the next climber gets. Readers (`status`, `report`) take no lock:
    the state is replaced atomically, so they always read a whole one."""

    def __init__(self, root: Path) -> None:
        self.path = root / ".lock"
        self._fd: int | None = None

    def acquire(self, command: str) -> None:
        """Hold the lock, or raise a UserError naming its holder (PID, host, since when)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.read(fd, 4096))
            os.close(fd)
            raise UserError(
                f"another climb is running in this run directory ({holder}); wait for it or "
                "stop it. `tunegate status` reads the run meanwhile",
                where=str(self.path.parent),
            ) from None
        except BaseException:
            os.close(fd)
            raise
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command or " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # nobody holds it: a later reader sees no stale holder
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _holder(raw: bytes) -> str:
    """'PID 123 on host h since 2026-…, `tunegate run …`', from the lock file's contents."""
    try:
        who = json.loads(raw.decode("utf-8"))
        text = f"PID {who['pid']} on host {who['host']} since {who['since']}"
        command = str(who.get("command") or "")
        return text + (f": `{command[:200]}`" if command else "")
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"


class RunDir:
    """One ladder run: `<output_dir>/<plan name>/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_path = root / "state.json"

    def stage_dir(self, index: int, name: str) -> Path:
        return self.root / f"stage-{index}-{name}"

    def exists(self) -> bool:
        return self.state_path.is_file()

    def load_state(self) -> LadderState:
        """The run's state (migrated from an earlier schema); a fresh one when there is none.
        A file that is not valid JSON or not a state this version reads is a UserError."""
        from tunegate.state import LadderState, StateError, parse_state

        if not self.state_path.is_file():
            return LadderState()
        try:
            return parse_state(json.loads(self.state_path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise UserError(f"corrupt state ({err.msg})", where=str(self.state_path)) from None
        except StateError as err:
            raise UserError(str(err), where=str(self.state_path)) from None

    def save_state(self, state: LadderState) -> None:
        atomic_write_json(self.state_path, state.to_json())
