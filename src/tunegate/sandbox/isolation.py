"""The isolation layers around generated code: a child process inside every one this machine
offers. What runs in there, and how its verdict is judged, is the rest of the package's business.

Layers, outermost first, each detected once and reported (`tunegate doctor`, `tunegate exec`):

1. a fresh temporary work directory, the only writable place, removed afterwards;
2. a scrubbed environment (PATH, HOME and TMPDIR pointing at the work directory, LANG: nothing
   of the parent's, so no API keys, tokens or NODE_EXTRA_CA_CERTS);
3. its own session and process group, killed as a group on timeout;
4. rlimits: CPU seconds, address space, file size, open files and processes;
5. an unprivileged uid (nobody, 65534) when tunegate runs as root, so the process limit applies
   (the kernel exempts root from RLIMIT_NPROC) and root-only files are out of reach;
6. bubblewrap, when installed and working: new user, PID, network, IPC and UTS namespaces (no
   network at all, no view of the harness's processes or their /proc/<pid>/environ), a read-only
   root, a private /tmp, all capabilities dropped, and everything killed with the sandbox's PID 1.

Missing layers are reported with a one-time warning on stderr, never silently.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

NOBODY = 65534
MAX_PROCESSES = 32  # a test that needs more threads or children than this is not a unit test
OUTPUT_TAIL_BYTES = 8192  # what the harness reads back of a program's output


# Denied with EPERM inside the sandbox: nothing a test needs, everything an escape or a probe of
# the host would start with.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root",
    "chroot", "unshare", "setns", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "reboot", "swapon", "swapoff", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup", "personality", "acct",
    "quotactl", "open_by_handle_at", "name_to_handle_at", "syslog", "fanotify_init", "mknod",
    "mknodat",
)  # fmt: skip


@functools.cache
def seccomp_program() -> bytes | None:
    """The filter as BPF for bubblewrap's --seccomp; None where libseccomp is missing."""
    try:
        import pyseccomp

        rules = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
        for name in DENIED_SYSCALLS:
            with contextlib.suppress(Exception):  # a syscall this architecture lacks
                rules.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
        with tempfile.TemporaryFile() as f:
            rules.export_bpf(f)
            f.seek(0)
            return f.read()
    except Exception:  # no pyseccomp, no libseccomp.so.2
        return None


def seccomp_fd() -> int | None:
    """A fresh fd holding the filter: bubblewrap reads it to the end once."""
    program = seccomp_program()
    if program is None:
        return None
    fd = os.memfd_create("tunegate-seccomp")
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@dataclass(frozen=True)
class Isolation:
    """What `detect` found: the layers this machine gives the sandbox's children."""

    bwrap: str | None  # path of a working bubblewrap, else None
    drop_uid: bool  # running as root: children run as nobody
    problem: str = ""  # why bubblewrap is not used, when it is not
    seccomp: bool = False  # bubblewrap applies the seccomp filter

    @property
    def layers(self) -> dict[str, bool]:
        return {
            "work directory": True,
            "scrubbed environment": True,
            "process group": True,
            "rlimits (cpu, memory, file size, files, processes)": True,
            "unprivileged uid": self.drop_uid or os.geteuid() != 0,
            "no network (namespace)": self.bwrap is not None,
            "read-only root, private /tmp": self.bwrap is not None,
            "pid namespace": self.bwrap is not None,
            "seccomp filter": self.seccomp,
        }

    @property
    def level(self) -> str:
        return "strong" if all(self.layers.values()) else "degraded"

    def describe(self) -> str:
        on = [name for name, ok in self.layers.items() if ok]
        off = [name for name, ok in self.layers.items() if not ok]
        text = f"{self.level}: " + ", ".join(on)
        if off:
            text += f"; missing: {', '.join(off)} ({self.problem})"
        return text


def _bwrap_args(work: str | None, seccomp: int | None = None) -> list[str]:
    """bubblewrap's options; `work` is bound read-write (None: the private /tmp only);
    `seccomp`, an fd of the BPF filter it installs just before running the program."""
    bind = ["--bind", work, work, "--chdir", work] if work else ["--chdir", "/tmp"]
    if seccomp is not None:
        bind += ["--seccomp", str(seccomp)]
    return [
        "--unshare-all",  # user, pid, net, ipc, uts, cgroup namespaces
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into the harness's terminal
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",  # the sandbox's own PID namespace: the harness is not in it
        "--tmpfs", "/tmp",
        *bind,
        "--cap-drop", "ALL",
        "--",
    ]  # fmt: skip


def world_executable(path: str) -> bool:
    """Can any uid run `path`: o+x on the file and on every directory above it?"""
    p = Path(path)
    if not p.is_file():
        return False
    return all(os.stat(d).st_mode & 0o001 for d in [p, *p.parents])


def _drop_privileges() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _become_subreaper() -> None:
    """bubblewrap's outer process exits as soon as the program does; its namespace's init then
    dies of --die-with-parent, orphaned. Orphans go to the host's init, which may take seconds
    to reap them, and until then they count against nobody's RLIMIT_NPROC. As a subreaper this
    process receives them instead and reaps them itself (`reap_orphans`)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_orphans() -> None:
    """Reap sandbox processes (uid nobody) that were orphaned to this process, by pid only:
    never a child some other code waits for."""
    me = os.getpid()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or _uid(p) != NOBODY:
            continue
        try:
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(int(p.name), os.WNOHANG)


@functools.cache
def detect() -> Isolation:
    """Probe bubblewrap once (as the children will run it) and warn once if a layer is missing."""
    drop = os.geteuid() == 0
    if drop:
        _become_subreaper()
    path = shutil.which("bwrap")
    problem = ""
    if path is None:
        problem = "bubblewrap is not installed: apt install bubblewrap"
    seccomp = False
    if path is not None:
        fd = seccomp_fd()
        try:
            probe = subprocess.run(
                [path, *_bwrap_args(None, fd), "/bin/true"],
                capture_output=True,
                timeout=10,
                preexec_fn=_drop_privileges if drop else None,
                pass_fds=(fd,) if fd is not None else (),
                check=False,
            )
        finally:
            if fd is not None:
                os.close(fd)
        if probe.returncode != 0:
            reason = probe.stderr.decode(errors="replace").strip().splitlines()
            problem = f"bubblewrap does not work here: {reason[-1] if reason else probe.returncode}"
            path = None
        elif fd is None:
            problem = "no seccomp filter: pyseccomp or libseccomp2 is missing"
        seccomp = fd is not None and path is not None
    reap_orphans()
    isolation = Isolation(bwrap=path, drop_uid=drop, problem=problem, seccomp=seccomp)
    if isolation.level != "strong":
        print(f"tunegate: sandbox {isolation.describe()}", file=sys.stderr)
    return isolation


def _limits(cpu_s: int, memory_mb: int, drop_uid: bool, nproc: int) -> None:
    os.setsid()  # own session: a timeout kills the whole group
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    if drop_uid:
        _become_nobody(nproc)


def _become_nobody(nproc: int) -> None:
    # Counted per uid, in tasks (threads too), so this bounds a fork bomb. `nproc` adds the tasks
    # nobody already has (other sandboxes: idle workers, node's threads, namespaces still being
    # torn down), which would otherwise make the start fail with EAGAIN.
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    _drop_privileges()


def scrubbed_env(work: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}


@dataclass
class Started:
    """A sandboxed child that has started and waits for its stdin (see `start`)."""

    proc: subprocess.Popen[bytes]
    sink: IO[bytes]
    drop_uid: bool
    bwrap: bool


def start(
    argv: list[str], work: Path, *, channel_fd: int, timeout_s: float, memory_mb: int
) -> Started:
    """Start `argv` in `work` inside every available layer; it blocks on stdin until `finish`.

    `channel_fd` (a pipe's write end) is passed through to the child and closed here.
    """
    iso = detect()
    if iso.drop_uid:
        os.chown(work, NOBODY, NOBODY)
        for child in work.iterdir():
            os.chown(child, NOBODY, NOBODY)
    filter_fd = seccomp_fd() if iso.seccomp else None
    extra = (filter_fd,) if filter_fd is not None else ()
    full = [iso.bwrap, *_bwrap_args(str(work), filter_fd), *argv] if iso.bwrap else argv
    nproc = MAX_PROCESSES + (nobody_tasks() if iso.drop_uid else 0)
    # Output goes to an unnamed file, not a pipe: RLIMIT_FSIZE caps what a flood can write
    # (the child dies of SIGXFSZ), and the harness never holds more than the tail in memory.
    sink = tempfile.TemporaryFile(prefix="tunegate-out-")  # noqa: SIM115 (closed by finish)
    try:
        proc = subprocess.Popen(
            full,
            cwd=work,
            env=scrubbed_env(str(work)),
            stdin=subprocess.PIPE,
            stdout=sink,
            stderr=subprocess.STDOUT,
            pass_fds=(channel_fd, *extra),
            preexec_fn=lambda: _limits(int(timeout_s) + 1, memory_mb, iso.drop_uid, nproc),
        )
    except BaseException:
        sink.close()
        raise
    finally:
        os.close(channel_fd)  # ours closed, or the channel never sees EOF
        for fd in extra:
            os.close(fd)
    return Started(proc, sink, iso.drop_uid, iso.bwrap is not None)


def finish(started: Started, stdin: bytes, timeout_s: float) -> tuple[bool, int, bytes]:
    """Feed a started child its stdin and wait; returns (timed out, exit code, output tail)."""
    proc, sink = started.proc, started.sink
    timed_out = False
    try:
        proc.communicate(input=stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        # The group (bubblewrap and, without it, the program and its children) dies; with
        # bubblewrap, its PID 1 dies with it and the kernel ends the whole namespace.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with sink:
        size = sink.seek(0, os.SEEK_END)
        sink.seek(max(0, size - OUTPUT_TAIL_BYTES))
        out = sink.read()
    if started.drop_uid and not started.bwrap:
        _kill_strays()
    if started.drop_uid and started.bwrap:
        reap_orphans()
    return timed_out, proc.returncode, out


def spawn(
    argv: list[str],
    work: Path,
    *,
    stdin: bytes,
    channel_fd: int,
    timeout_s: float,
    memory_mb: int,
) -> tuple[bool, int, bytes]:
    """Run `argv` in `work` inside every available layer; returns (timed out, exit code, output).

    `channel_fd` (a pipe's write end) is passed through to the child and closed here.
    """
    started = start(argv, work, channel_fd=channel_fd, timeout_s=timeout_s, memory_mb=memory_mb)
    return finish(started, stdin, timeout_s)


def start_server(argv: list[str], *, processes: int) -> subprocess.Popen[bytes]:
    """Start a long-lived `argv` (a server that confines its own children: their CPU, memory,
    files and directories) inside bubblewrap, whose private /tmp is its only writable place.

    It runs in its own session as nobody, with room for `processes` tasks above those nobody
    already has; jobs go in on its stdin and answers come back on its stdout."""
    iso = detect()
    if iso.bwrap is None:
        # Without a PID namespace a server could not tell its programs' daemons from other
        # processes of the same uid, nor sweep them.
        raise RuntimeError("a sandboxed server needs bubblewrap (apt install bubblewrap)")
    nproc = processes + (nobody_tasks() if iso.drop_uid else 0)
    filter_fd = seccomp_fd() if iso.seccomp else None
    try:
        return subprocess.Popen(
            [iso.bwrap, *_bwrap_args(None, filter_fd), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=scrubbed_env("/tmp"),
            cwd="/",
            preexec_fn=lambda: _server_limits(iso.drop_uid, nproc),
            pass_fds=(filter_fd,) if filter_fd is not None else (),
        )
    finally:
        if filter_fd is not None:
            os.close(filter_fd)


def _server_limits(drop_uid: bool, nproc: int) -> None:
    """Its own session and, as nobody, the process limit (so a child's fork bomb is bounded);
    the server's children set their CPU, memory, file size and descriptor limits themselves."""
    os.setsid()
    if drop_uid:
        _become_nobody(nproc)


def _kill_strays() -> None:
    """Without a PID namespace, a double-forked daemon leaves the process group: end every
    process of the sandbox's uid (nothing else runs as nobody here)."""
    for _ in range(3):
        strays = nobody_processes()
        if not strays:
            return
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def nobody_tasks() -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) of the sandbox's uid."""
    total = 0
    for pid in nobody_processes():
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/task"))
    return total


def nobody_processes() -> list[int]:
    """Pids owned by the sandbox's uid (nothing else runs as nobody on a tunegate host), after
    reaping those orphaned to this process."""
    reap_orphans()
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _uid(p) == NOBODY]


def _uid(proc_dir: Path) -> int | None:
    try:
        return proc_dir.stat().st_uid
    except OSError:
        return None
