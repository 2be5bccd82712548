"""The run directory: everything a run writes, and its state, written atomically.

`state.json` is replaced with write-temp → fsync → rename, so a kill at any instant leaves either
the old state or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import tempfile
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
