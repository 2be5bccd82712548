"""A machine reached over SSH: the original plan's GPU tower.

Every command goes through the system `ssh` with BatchMode (a prompt for a password or a host key
would hang an unattended climb), a connect timeout and keep-alives (a dropped link is noticed in
about 15 s, not at TCP's hours), and a deadline of its own. An ssh config file (`executor.
ssh_config`) carries what the URL cannot: the key, the known-hosts file, a jump host.

Exit 255 is ssh's own failure (no route, refused, authentication, a dropped link), said as
`HostUnreachable`; any other non-zero exit is the remote command's, said as `RemoteFailed` with
its last lines.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tunegate.errors import UserError

SSH_FAILED = 255  # ssh's exit status for its own failures; a remote command's is passed through
# Probes every 5 s, gives up after 3 unanswered: a dead link is seen within ~15 s.
KEEPALIVE = ("-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3")


class RemoteError(RuntimeError):
    """A remote step that failed: the arm's FAIL reason, or stage 0's check detail."""


class HostUnreachable(RemoteError):
    """ssh itself failed: no route, refused, authentication, host key, or a dropped link."""


class RemoteFailed(RemoteError):
    """The remote command ran and exited non-zero."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "no output"


@dataclass(frozen=True)
class Host:
    """`ssh://[user@]host[:port]`, reached with the system ssh (and `config`, when given)."""

    destination: str  # [user@]host, or an alias of the ssh config
    port: int | None = None
    config: Path | None = None
    connect_timeout: int = 10

    @classmethod
    def parse(cls, url: str, config: Path | None = None, *, where: str = "executor.host") -> Host:
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/"):
            raise UserError(f"'{url}' is not ssh://[user@]host[:port]", where=where)
        try:
            port = parts.port
        except ValueError:
            raise UserError(f"'{url}': the port is not a number", where=where) from None
        user = f"{parts.username}@" if parts.username else ""
        return cls(f"{user}{parts.hostname}", port, config)

    def __str__(self) -> str:
        return f"ssh://{self.destination}" + (f":{self.port}" if self.port else "")

    def ssh_argv(self) -> list[str]:
        """`ssh` and its options, up to (not including) the destination."""
        argv = ["ssh"]
        if self.config is not None:
            argv += ["-F", str(self.config)]
        if self.port:
            argv += ["-p", str(self.port)]
        return [
            *argv,
            *("-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"),
            *KEEPALIVE,
        ]

    def argv(self, script: str) -> list[str]:
        """The local argv that runs `script` in the remote user's shell."""
        return [*self.ssh_argv(), self.destination, script]

    def run(
        self,
        script: str,
        *,
        timeout: float,
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run `script` remotely and wait at most `timeout` seconds for it."""
        try:
            done = subprocess.run(
                self.argv(script),
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise HostUnreachable(f"{self}: no answer in {timeout:g} s") from None
        if done.returncode == SSH_FAILED:
            raise HostUnreachable(f"{self}: {_last_lines(done.stderr, 1)}")
        if check and done.returncode != 0:
            raise RemoteFailed(
                f"{self}: `{_short(script)}` exited {done.returncode}: "
                f"{_last_lines(done.stderr or done.stdout)}",
                done.returncode,
            )
        return done

    def popen(self, script: str) -> subprocess.Popen[str]:
        """Start `script` remotely, its stdout (and stderr) a line stream; for following a log."""
        return subprocess.Popen(
            self.argv(script),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            errors="replace",
        )


def _short(script: str, width: int = 60) -> str:
    one = " ".join(script.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def quote(*words: str) -> str:
    """Words for the remote shell, each quoted."""
    return " ".join(shlex.quote(w) for w in words)
