"""Files to and from the tower: rsync over the same ssh, and sha256 to prove what came back.

Why rsync, not `docker cp` or the build context:
- the base model is shipped once per host and found there again by every later arm and stage
  (rsync compares sizes and times and sends nothing for an unchanged directory), where `docker cp`
  would copy gigabytes into every container and a build context into every image;
- a copy cut by a dropped link resumes where it stopped (`--partial`), and `--timeout` ends a
  stalled one instead of waiting on it;
- it works the same for `kind: ssh`, which has no container to copy into, and needs nothing on
  the tower but rsync and the ssh server already there.

What comes back is checked against the tower's own `sha256sum` of the same files: a file cut
short or changed on the way fails the arm (ChecksumMismatch) rather than being evaluated.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from pathlib import Path

from tunegate.remote.host import Host, HostUnreachable, RemoteError, quote

# rsync gives up on a transfer that moves no data for this long (a dead link, a stuck disk).
IO_TIMEOUT_S = 60
# rsync's own exit statuses that mean the link, not the files: 12 protocol stream, 30 timeout,
# 35 daemon timeout, 255 ssh.
_LINK_FAILED = {12, 30, 35, 255}


class ChecksumMismatch(RemoteError):
    """A fetched file differs from the tower's copy."""


def _rsync(host: Host, source: str, dest: str, extra: list[str], timeout: float) -> None:
    argv = [
        "rsync",
        "-a",
        "--partial",
        f"--timeout={IO_TIMEOUT_S}",
        "-e",
        shlex.join(host.ssh_argv()),
        *extra,
        source,
        dest,
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise HostUnreachable(f"{host}: rsync {source} → {dest} took over {timeout:g} s") from None
    if done.returncode in _LINK_FAILED:
        raise HostUnreachable(f"{host}: rsync: {done.stderr.strip().splitlines()[-1:]}")
    if done.returncode != 0:
        raise RemoteError(
            f"{host}: rsync {source} → {dest} exited {done.returncode}: "
            + " | ".join(done.stderr.strip().splitlines()[-2:])
        )


def push(host: Host, local: Path, remote: str, *, timeout: float = 3600) -> None:
    """Make the tower's directory `remote` hold what `local` holds (files in `remote` that
    `local` lacks stay: a resumed arm's checkpoints)."""
    host.run(f"mkdir -p {quote(remote)}", timeout=60)
    _rsync(host, f"{local}/", f"{host.destination}:{remote}/", [], timeout)


def pull(
    host: Host,
    remote: str,
    local: Path,
    *,
    exclude: tuple[str, ...] = (),
    timeout: float = 3600,
) -> None:
    """Copy the tower's directory `remote` into `local`, less what `exclude` names."""
    local.mkdir(parents=True, exist_ok=True)
    extra = [f"--exclude={pattern}" for pattern in exclude]
    _rsync(host, f"{host.destination}:{remote}/", f"{local}/", extra, timeout)


def remote_checksums(host: Host, remote: str, *, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under the tower's `remote`, by path relative to it."""
    prune = " ".join(f"-not -path {quote('./' + p.rstrip('/') + '/*')}" for p in exclude)
    prune += " " + " ".join(f"-not -name {quote(p)}" for p in exclude)
    done = host.run(
        f"cd {quote(remote)} && find . -type f {prune} -print0 | xargs -0 -r sha256sum",
        timeout=600,
    )
    sums = {}
    for line in done.stdout.splitlines():
        digest, _, path = line.partition("  ")
        if digest and path:
            sums[path.removeprefix("./")] = digest
    return sums


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def verify(local: Path, sums: dict[str, str]) -> int:
    """Every file the tower summed is here with the same sha256; the number checked."""
    for relative, digest in sorted(sums.items()):
        path = local / relative
        if not path.is_file():
            raise ChecksumMismatch(f"{path}: fetched from the tower but missing here")
        if sha256(path) != digest:
            raise ChecksumMismatch(f"{path}: sha256 differs from the tower's copy")
    return len(sums)
