"""A full disk, said in one line: which path, how much is free there, and what to do.

A write that finds no space fails in several shapes: Python's `OSError` ENOSPC (a checkpoint, the
state, a report), sqlite's "database or disk is full" (MLflow's local store, wrapped in an
`MlflowException`), and whatever a handler that tried to record the failure raised on the same
full disk, chained to it. `disk_full` finds the original one in an exception's chain; the CLI
prints it as the one line a full disk ends with (exit 1), instead of the tracebacks of every
handler that tripped over it. Nothing is written on the way out: the state file is replaced
atomically, so the last one saved stands, and a resume continues from it.
"""

from __future__ import annotations

import errno
import io
import re
import shutil
from pathlib import Path

from tunegate.errors import UserError

# How a full disk reads when it is not an OSError carrying ENOSPC: sqlite's own message (MLflow's
# local store) and the C library's, quoted inside another library's exception.
_MESSAGES = re.compile(
    r"no space left on device|database or disk is full|disk quota exceeded", re.IGNORECASE
)
# torch's serializer says a short write in its own words, with no errno: "[enforce fail at
# inline_container.cc:672] . unexpected pos 64 vs 0", "PytorchStreamWriter failed writing file".
_TORCH_WRITE = re.compile(r"inline_container\.cc|PytorchStreamWriter|file write failed")
# Below this much free space where it wrote, such a failure is taken as the disk being full (the
# half-written file stays: the space is still gone when this looks).
LOW_SPACE = 16 * 2**20
# How far from where a write failed a path in the frames' locals still names its file.
_FRAMES = 3
# A path quoted in such a message: "[Errno 28] No space left on device: '/runs/x/state.json'".
_QUOTED_PATH = re.compile(r"""['"](/[^'"]+)['"]""")


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _existing(path: Path) -> Path:
    return next((p for p in [path, *path.parents] if p.exists()), Path("/"))


def _mount(path: Path) -> Path:
    """The mount point of the filesystem `path` is on."""
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def _free(path: Path) -> int:
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return LOW_SPACE  # cannot tell: not taken as full


class DiskFull(UserError):
    """A write that found no space. An environment to fix, as a failed check (exit 1), not bad
    input (2)."""

    exit_code = 1

    def __init__(self, path: Path | None, what: str) -> None:
        self.path, self.what = path, what
        self.free: int | None = None
        where = ""
        if path is not None:
            try:
                base = _existing(path)
                usage = shutil.disk_usage(base)
                self.free = usage.free
                where = (
                    f" {path}: {_size(usage.free)} free of {_size(usage.total)} on {_mount(base)}"
                )
            except OSError:  # a path that vanished or cannot be read: still one line
                where = f" {path}"
        super().__init__(
            f"disk full writing{where} ({what}). Free space there or move output_dir; "
            "`tunegate run` then resumes from the state saved last (it is intact)"
        )


def _written_path(err: BaseException) -> Path | None:
    """Where a failed write went when the error does not say (a write or flush after `open`
    carries no filename): a path among the locals of the innermost frames, such as
    `Path.write_text`'s `self` or `atomic_write_text`'s `path`, or an open file's name."""
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames[-_FRAMES:]):
        for value in frame.f_locals.values():
            if isinstance(value, Path):
                return value
            name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
            if isinstance(name, str) and name.startswith("/"):
                return Path(name)
    return None


def says_disk_full(text: str) -> bool:
    """Whether a message (another machine's log line) says a disk filled up."""
    return _MESSAGES.search(text) is not None or "disk full writing" in text


def disk_full(err: BaseException, path: Path | None = None) -> DiskFull | None:
    """The full disk in `err` or its chain, the original failure first; None when there is none.
    `path` is where the failed write went when the error does not say (a local MLflow store)."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    # One already said with its context (the arm's directory) stands, whatever a handler that
    # tripped over the same full disk raised after it (closing the events log flushes it).
    said = next((failure for failure in chain if isinstance(failure, DiskFull)), None)
    if said is not None:
        return said
    for failure in reversed(chain):
        if isinstance(failure, OSError) and failure.errno in (errno.ENOSPC, errno.EDQUOT):
            # The original write may name no file where a wrapper raised from it does.
            names = (
                e.filename for e in chain if isinstance(e, OSError) and e.errno == failure.errno
            )
            named = next((Path(n) for n in names if isinstance(n, str)), None)
            where = named or path or _written_path(failure)
            return DiskFull(where, failure.strerror or "no space")
        message = str(failure)
        if path is not None and _TORCH_WRITE.search(message) and _free(path) < LOW_SPACE:
            return DiskFull(path, f"a tensor file's write failed: {message.strip()[:80]}")
        found = _MESSAGES.search(message)
        if found:
            # The caller's path first: a message can quote other paths (an SQL statement's).
            quoted = _QUOTED_PATH.search(message)
            where = path or (Path(quoted.group(1)) if quoted else None)
            return DiskFull(where, found.group(0).lower())
    return None
