"""The run directory: everything a run writes, and its state, written atomically.

`state.json` is replaced with write-temp → fsync → rename, so a kill at any instant leaves either
the old state or the new one, never half of either.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.errors import UserError

if TYPE_CHECKING:
    from tunegate.plan import Plan
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
        """Whether anything is at `state.json`: a run, or something that must be refused as one
        (a directory there is not "no run yet")."""
        return self.state_path.exists() or self.state_path.is_symlink()

    def load_state(self, plan_name: str | None = None) -> LadderState:
        """The run's state (migrated from an earlier schema); a fresh one when there is none.

        Whatever else is at `state.json` is a UserError of one line that names the file and says
        how to go on: not a file, not UTF-8, not JSON (truncated), not a state, from a newer
        tunegate, or the state of a plan other than `plan_name` (default: the one `plan.json`
        names). Nothing is rewritten: the file is the user's evidence.
        """
        data = self._read_state()
        if data is None:
            from tunegate.state import LadderState

            return LadderState()
        # Imported only now: the state's records pull in scipy (seconds), and what is plainly
        # broken is refused above without them.
        from tunegate.state import StateError, parse_state

        try:
            state = parse_state(data)
        except StateError as err:
            raise self._refused(str(err)) from None
        expected = plan_name or self._plan_json_name()
        if state.plan_name is None:
            # Every climb names its plan before its first save: no tunegate wrote this one.
            raise self._refused("not a run's state (it names no plan_name)")
        if expected is not None and state.plan_name != expected:
            raise self._refused(
                f"the state of plan {state.plan_name!r}, not of {expected!r} (copied from "
                "another run?)"
            )
        return state

    def check_state(self) -> None:
        """Refuse a `state.json` that is plainly not a state (not a file, not UTF-8, not a JSON
        object) in a blink, before a command's heavy imports; `load_state` checks the rest."""
        self._read_state()

    def _read_state(self) -> dict[str, Any] | None:
        """`state.json` decoded, when it is a JSON object; None when there is nothing there."""
        path = self.state_path
        if not self.exists():
            return None
        if not path.is_file():
            kind = "a directory" if path.is_dir() else "not a regular file"
            raise self._refused(f"{kind}, where the run's state file belongs")
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise self._refused(f"cannot be read ({err.strerror})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise self._refused(
                f"corrupt state (not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start})"
            ) from None
        if not text.strip():
            raise self._refused("corrupt state: an empty file (a copy cut short? a full disk?)")
        try:
            data = json.loads(text)
        except RecursionError:
            raise self._refused("corrupt state: not JSON this reads (nested too deep)") from None
        except json.JSONDecodeError as err:
            # The writer is atomic, so a file that stops short was cut by something else (a copy
            # interrupted, a full disk on another machine): say so.
            cut = "" if text.rstrip().endswith("}") else ", truncated?"
            raise self._refused(
                f"corrupt state: not JSON ({err.msg}: line {err.lineno} column {err.colno}{cut})"
            ) from None
        if not isinstance(data, dict):
            raise self._refused(f"not a run's state (a JSON {_json_kind(data)}, not an object)")
        return data

    def _plan_json_name(self) -> str | None:
        """The plan this run directory belongs to, as its `plan.json` names it."""
        try:
            name = json.loads((self.root / "plan.json").read_text(encoding="utf-8")).get("name")
        except (OSError, ValueError, AttributeError):
            return None  # no (readable) plan.json: the readers that need one say so
        return name if isinstance(name, str) else None

    def _refused(self, problem: str) -> UserError:
        """A UserError for `state.json` that ends in the way forward: the exact command that
        moves the run directory aside (kept whole, the file included), after which `tunegate
        run` starts afresh. The whole directory, not the file alone: without a state to say
        which configuration they belong to, a stage's checkpoints must not be resumed."""
        aside = self.root.with_name(f"{self.root.name}.aside")
        n = 1
        while aside.exists() or aside.is_symlink():
            aside = self.root.with_name(f"{self.root.name}.aside-{n}")
            n += 1
        command = f"mv {shlex.quote(str(self.root))} {shlex.quote(str(aside))}"
        return UserError(
            f"{problem}; to keep it and start afresh, move the run directory aside: {command}",
            where=str(self.state_path),
        )

    def save_state(self, state: LadderState) -> None:
        atomic_write_json(self.state_path, state.to_json())


def _json_kind(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    kinds = {list: "list", str: "string", int: "number", float: "number"}
    return kinds.get(type(value), type(value).__name__)


def run_dir_for(plan: Plan) -> RunDir:
    """The plan's run directory: `<output_dir>/<plan name>/`."""
    return RunDir(plan.output_dir / plan.name)
