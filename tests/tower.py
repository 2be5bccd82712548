"""A second host for the remote-executor tests: the original plan's GPU tower, without the GPU.

A network namespace joined to this one by a veth pair, with its own sshd and its own dockerd; this
side reaches it only over SSH, at an address the test made. Nothing is shared with it but the
filesystem, which the executor must not rely on: the tower's work directory is a tmpfs of its own
(so a test can fill it), at a path this side never names in a plan.

Every change to the host is undone by `stop()`: the daemons are killed, their mounts unmounted,
the namespace deleted (with it the veth pair, the docker0 bridge, the nft rules and the
ip_forward setting dockerd made, all of which live in the namespace). Root only; `start()` raises
`TowerUnavailable` with the reason when a part is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
DOCKERD = "/usr/sbin/dockerd"
# The client on PATH (docker 28 here) speaks to the tower's 20.10 engine by API negotiation.
NEEDED = ("ip", "nsenter", "ssh", "ssh-keygen", "rsync", "docker", SSHD, DOCKERD)


class TowerUnavailable(RuntimeError):
    """A part the tower needs is missing here (not root, no sshd or dockerd): tests skip."""


def _run(*argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        if check:
            raise
        # Tearing down goes on: what did not answer in time is killed below.
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {err.timeout} s")
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


@dataclass
class Tower:
    """A host reached as `ssh -F <ssh_config> tower`. `start()` then `stop()`; idempotent stop."""

    root: Path  # this side's files for the tower: keys, daemon state, logs
    disk_mib: int = 2048  # the tower's work disk (a tmpfs)
    name: str = field(default_factory=lambda: f"tgtower{os.getpid() % 100000}")
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _mounts: list[Path] = field(default_factory=list)
    _made_run_sshd: bool = False

    @property
    def address(self) -> str:
        # 10.231.X.0/30 per namespace name: two test processes do not share a subnet.
        third = (sum(self.name.encode()) * 7 + os.getpid()) % 250 + 1
        return f"10.231.{third}.2"

    @property
    def local_address(self) -> str:
        return self.address.rsplit(".", 1)[0] + ".1"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def work(self) -> Path:
        """The tower's own disk, where the executor keeps its runs (a path only the tower uses)."""
        return self.root / "tower-disk"

    @property
    def docker_socket(self) -> Path:
        return self.root / "docker" / "docker.sock"

    def ssh(self, command: str, timeout: float = 60, check: bool = True) -> str:
        """Run `command` on the tower; its stdout."""
        done = _run(
            "ssh", "-F", str(self.ssh_config), "tower", command, timeout=timeout, check=check
        )
        return done.stdout

    @property
    def _outside(self) -> str:
        return f"{self.name[:11]}l"

    @contextlib.contextmanager
    def link_down(self) -> Iterator[None]:
        """The link between here and the tower cut (a cable pulled): packets are lost, not
        refused, as on a dropped connection; restored on leaving."""
        _run("ip", "link", "set", self._outside, "down")
        try:
            yield
        finally:
            _run("ip", "link", "set", self._outside, "up")

    def start(self) -> Tower:
        missing = [c for c in NEEDED if shutil.which(c) is None and not Path(c).exists()]
        if os.geteuid() != 0:
            raise TowerUnavailable("a network namespace and a second dockerd need root")
        if missing:
            raise TowerUnavailable(f"missing here: {', '.join(missing)}")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._network()
            self._disk()
            self._sshd()
            self._dockerd()
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            self.stop()  # a part that cannot start here (no netns, no tmpfs, an engine that fails)
            raise TowerUnavailable(str(err)) from err
        except BaseException:
            self.stop()
            raise
        return self

    def _network(self) -> None:
        inside, outside = f"{self.name[:11]}t", self._outside
        _run("ip", "netns", "add", self.name)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", self.name)
        _run("ip", "addr", "add", f"{self.local_address}/30", "dev", outside)
        _run("ip", "link", "set", outside, "up")
        for argv in (
            ("ip", "addr", "add", f"{self.address}/30", "dev", inside),
            ("ip", "link", "set", inside, "up"),
            ("ip", "link", "set", "lo", "up"),
        ):
            _run("ip", "netns", "exec", self.name, *argv)

    def _disk(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "tmpfs", "-o", f"size={self.disk_mib}m", "tmpfs", str(self.work))
        self._mounts.append(self.work)

    def _sshd(self) -> None:
        keys = self.root / "keys"
        keys.mkdir(exist_ok=True)
        for key in ("host_ed25519", "id_ed25519"):
            if not (keys / key).exists():
                _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / key))
        (keys / "authorized_keys").write_text((keys / "id_ed25519.pub").read_text())
        config = self.root / "sshd_config"
        config.write_text(
            f"ListenAddress {self.address}\n"
            f"HostKey {keys / 'host_ed25519'}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {keys / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            # What a login on the tower finds: its own engine.
            f"SetEnv DOCKER_HOST=unix://{self.docker_socket}\n"
        )
        if not Path("/run/sshd").exists():  # sshd's privilege-separation directory
            Path("/run/sshd").mkdir(mode=0o755)
            self._made_run_sshd = True
        log = (self.root / "sshd.log").open("wb")
        self._procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", self.name, SSHD, "-D", "-e", "-f", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        self.ssh_config.write_text(
            # Two names for one machine: a plan of two towers (arms trained at once) runs here.
            "Host tower tower-b\n"
            f"  HostName {self.address}\n  User root\n"
            f"  IdentityFile {keys / 'id_ed25519'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.root / 'known_hosts'}\n"
            "  StrictHostKeyChecking accept-new\n  BatchMode yes\n  ConnectTimeout 5\n"
            "  ServerAliveInterval 5\n  ServerAliveCountMax 3\n  LogLevel ERROR\n"
        )
        self._wait(
            lambda: (
                _run(
                    "ssh", "-F", str(self.ssh_config), "tower", "true", timeout=10, check=False
                ).returncode
                == 0
            ),
            "sshd",
        )

    def _dockerd(self) -> None:
        state = self.root / "docker"
        state.mkdir(exist_ok=True)
        log = (self.root / "dockerd.log").open("wb")
        # nsenter, not `ip netns exec`: that remounts /sys and hides the cgroup v1 mounts.
        self._procs.append(
            subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{self.name}",
                    DOCKERD,
                    "--data-root",
                    str(state / "data"),
                    "--exec-root",
                    str(state / "exec"),
                    "--pidfile",
                    str(state / "dockerd.pid"),
                    "-H",
                    f"unix://{self.docker_socket}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        self._wait(
            lambda: (
                _run(
                    "docker", "-H", f"unix://{self.docker_socket}", "info", timeout=10, check=False
                ).returncode
                == 0
            ),
            "dockerd",
        )

    def _wait(self, ready: object, what: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not ready():  # type: ignore[operator]
            if any(p.poll() is not None for p in self._procs) or time.monotonic() > deadline:
                log = (self.root / f"{what}.log").read_text(errors="replace")[-800:]
                raise TowerUnavailable(f"{what} did not start: {log.strip()}")
            time.sleep(0.1)

    def stop(self) -> None:
        # Containers first (their mounts and cgroups), then the engine, then sshd.
        if self.docker_socket.exists():
            ids = _run(
                "docker", "-H", f"unix://{self.docker_socket}", "ps", "-aq", timeout=20, check=False
            ).stdout.split()
            if ids:
                _run(
                    "docker",
                    "-H",
                    f"unix://{self.docker_socket}",
                    "rm",
                    "-f",
                    *ids,
                    timeout=60,
                    check=False,
                )
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self._procs.clear()
        # What dockerd left mounted under its state (overlay layers, netns files, shm).
        state = str(self.root / "docker")
        mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounted if m.startswith(state)), key=len, reverse=True):
            _run("umount", "-l", mount, check=False)
        for mount in self._mounts:
            _run("umount", "-l", str(mount), check=False)
        self._mounts.clear()
        _run("ip", "netns", "delete", self.name, check=False)
        if self._made_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)
            self._made_run_sshd = False
