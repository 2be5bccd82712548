"""One arm trained on the tower: shipped, started detached, followed, fetched and checked.

Each step can be taken again after any failure, so `tunegate run` always continues:

1. **ship**: the base model to `<remote_dir>/models/<its directory's name>` (the name carries its
   fingerprint; rsync sends nothing when it is there already), the arm's data to its directory
   `<remote_dir>/runs/<plan>/<stage>/<arm>`.
2. **start**, unless the arm runs there already (reattach) or finished (fetch):
   `docker run --detach` with the original plan's environment variables and `--gpus`, or, for
   `kind: ssh`, `tunegate train` under setsid with its exit status written beside its log. Either
   outlives the SSH connection that started it. An arm that stopped (a killed container, a full
   disk) starts again on the same directory, and the trainer resumes from its last checkpoint
   there: nothing finished is trained again.
3. **follow**: the log streams back line by line; the trainer's metric lines (`METRICS_MARK`) are
   recorded here, by the climb, in the plan's tracking store, which only this machine needs to
   reach. A dropped connection is retried for `executor.reconnect_s`; the lines already seen are
   not shown again.
4. **fetch**: the outputs (adapter, result, tracking record), not the checkpoints, which stay on
   the tower for a resume (an index of them comes back), each checked against the tower's sha256.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunegate.diskspace import says_disk_full
from tunegate.plan import ExecutorConfig
from tunegate.remote.host import Host, HostUnreachable, RemoteError, quote
from tunegate.remote.sync import pull, push, remote_checksums, verify
from tunegate.train.docker import BASE, WORK, container_name, run_argv
from tunegate.train.watch import STREAM_ENV

# What stays on the tower: the data it was sent, the checkpoints (a resume's), the job's status
# files and its log (streamed here already, line by line), the trainer's own tracking store.
NOT_FETCHED = ("data", "checkpoints", "exit_code", "pid", "train.log", "mlflow.db")
# Between tries to reach the tower again after a dropped connection.
RETRY_EVERY_S = 5.0
EXIT_FILE, PID_FILE, LOG_FILE = "exit_code", "pid", "train.log"


class RemoteArmStopped(RemoteError):
    """The job on the tower ended without its result (killed, crashed, its disk full there).
    What it says is the tower's, never this machine's: a full disk in its log is the tower's."""


@dataclass(frozen=True)
class JobStatus:
    state: Literal["absent", "running", "exited"]
    exit_code: int | None = None


@dataclass(frozen=True)
class RemoteArm:
    """One arm's training job on the tower: a container (`kind: docker`) or a process group
    (`kind: ssh`), named `name`, working in `arm_dir` there."""

    host: Host
    executor: ExecutorConfig
    name: str
    arm_dir: str  # absolute, on the tower; the trainer's OUTPUT_DIR/MODEL_NAME
    model_dir: str  # the shipped base model, on the tower

    @classmethod
    def on_tower(
        cls,
        executor: ExecutorConfig,
        *,
        plan: str,
        stage: str,
        stage_hash: str,
        arm_dir: Path,
        model_dir: Path,
    ) -> RemoteArm:
        """The job of the local arm `arm_dir` (of `plan`'s `stage`) on `executor.host`: its
        directory `<remote_dir>/runs/<plan>/<stage dir>-<stage hash>/<arm>` there, the base
        model in `<remote_dir>/models/`. Makes `remote_dir` on the tower. The hash keeps a
        changed stage from resuming the checkpoints of its old configuration there."""
        assert executor.host is not None
        host = Host.parse(executor.host, executor.ssh_config)
        root = remote_root(host, executor.remote_dir)
        # The model's directory name carries its fingerprint (embedded models); a user's path
        # gets one from where it is, so two models of one name never share a directory there.
        model_dir = model_dir.resolve()
        where = hashlib.sha256(str(model_dir).encode()).hexdigest()[:8]
        return cls(
            host=host,
            executor=executor,
            name=container_name(plan, stage, arm_dir.name),
            arm_dir=f"{root}/runs/{plan}/{arm_dir.parent.name}-{stage_hash[:12]}/{arm_dir.name}",
            model_dir=f"{root}/models/{model_dir.name}-{where}",
        )

    def describe(self) -> str:
        if self.in_docker:
            return f"container {self.name} ({self.executor.image})"
        return f"job {self.name}"

    @property
    def in_docker(self) -> bool:
        return self.executor.kind == "docker"

    @property
    def work(self) -> str:
        """The arm's directory as the trainer sees it."""
        return f"{WORK}/{self.arm_dir.rpartition('/')[2]}" if self.in_docker else self.arm_dir

    @property
    def base(self) -> str:
        return BASE if self.in_docker else self.model_dir

    def status(self) -> JobStatus:
        if self.in_docker:
            out = self.host.run(
                f"docker inspect --format '{{{{.State.Status}}}} {{{{.State.ExitCode}}}}' "
                f"{quote(self.name)} 2>/dev/null || echo absent",
                timeout=60,
            ).stdout.split()
        else:
            d = quote(self.arm_dir)
            out = self.host.run(
                f"cd {d} 2>/dev/null || {{ echo absent; exit 0; }}; "
                f"if [ -f {EXIT_FILE} ]; then echo exited $(cat {EXIT_FILE}); "
                f"elif [ -f {PID_FILE} ] && kill -0 $(cat {PID_FILE}) 2>/dev/null; then "
                "echo running; "
                # Gone without writing its status: killed with the shell that would have.
                f"elif [ -f {PID_FILE} ]; then echo exited 137; else echo absent; fi",
                timeout=60,
            ).stdout.split()
        if not out or out[0] == "absent":
            return JobStatus("absent")
        if out[0] in ("running", "restarting", "created", "paused"):
            return JobStatus("running")
        return JobStatus("exited", int(out[1]) if len(out) > 1 and out[1].isdigit() else None)

    def start(self, env: dict[str, str]) -> None:
        env = {**env, STREAM_ENV: "1", "PYTHONUNBUFFERED": "1"}
        if self.in_docker:
            # A container of the same name left by an earlier try: its log is in train.log.
            self.host.run(f"docker rm -f {quote(self.name)} >/dev/null 2>&1 || true", timeout=120)
            argv = run_argv(
                self.executor.model_copy(update={"docker_host": None}),
                name=self.name,
                env=env,
                arm_dir=self.arm_dir,
                model_dir=self.model_dir,
                detach=True,
            )
            self.host.run(quote(*argv), timeout=300)
            return
        assignments = " ".join(quote(f"{k}={v}") for k, v in {**env, "HF_HUB_OFFLINE": "1"}.items())
        job = (
            f"env {assignments} {quote(self.executor.python)} -m tunegate.cli train "
            f"> {LOG_FILE} 2>&1; echo $? > {EXIT_FILE}"
        )
        self.host.run(
            f"cd {quote(self.arm_dir)} && rm -f {EXIT_FILE} && "
            f"{{ setsid sh -c {quote(job)} </dev/null >/dev/null 2>&1 & echo $! > {PID_FILE}; }}",
            timeout=60,
        )

    def follow_script(self) -> str:
        """The remote command that prints the log from its start and returns when the job
        ends."""
        if self.in_docker:
            return f"docker logs --follow {quote(self.name)} 2>&1"
        d = quote(self.arm_dir)
        return f"cd {d} && tail -n +1 --pid=$(cat {PID_FILE}) -F {LOG_FILE} 2>/dev/null"

    def log_tail(self, lines: int = 5) -> str:
        if self.in_docker:
            script = f"docker logs --tail {lines} {quote(self.name)} 2>&1"
        else:
            script = f"tail -n {lines} {quote(self.arm_dir + '/' + LOG_FILE)}"
        out = self.host.run(script, timeout=60, check=False).stdout
        return " | ".join(line.strip() for line in out.strip().splitlines() if line.strip())

    def save_log(self) -> None:
        """A container's log, kept in the arm's directory on the tower (the next start replaces
        the container, and the log with it)."""
        if self.in_docker:
            self.host.run(
                f"docker logs {quote(self.name)} > {quote(self.arm_dir + '/' + LOG_FILE)} 2>&1",
                timeout=120,
                check=False,
            )

    def remove(self) -> None:
        if self.in_docker:
            self.host.run(f"docker rm -f {quote(self.name)} >/dev/null 2>&1 || true", timeout=120)


def remote_root(host: Host, remote_dir: str) -> str:
    """`remote_dir` on the tower, made and made absolute (relative: under the remote home)."""
    made = host.run(f"mkdir -p {quote(remote_dir)} && cd {quote(remote_dir)} && pwd", timeout=60)
    return made.stdout.strip()


def follow(
    job: RemoteArm,
    on_line: Callable[[str], None],
    reconnect_s: float,
    say: Callable[[str], None],
) -> JobStatus:
    """Stream the job's log to `on_line` until it ends; its final status. A dropped connection
    is retried for `reconnect_s`: then HostUnreachable (the job goes on there)."""
    seen = 0
    lost_at: float | None = None
    while True:
        try:
            status = job.status()
            if status.state == "absent":
                return status
            stream = job.host.popen(job.follow_script())
            assert stream.stdout is not None
            lost_at = None
            for index, line in enumerate(stream.stdout):
                if index >= seen:  # after a reconnect the log starts over: skip what was shown
                    on_line(line.rstrip("\n"))
                    seen = index + 1
            stream.wait(timeout=60)
            status = job.status()
            if status.state == "exited":
                return status
            if stream.returncode != 255:
                continue  # the follower ended, the job did not (a log rotated): follow again
            raise HostUnreachable(f"{job.host}: the connection dropped")
        except HostUnreachable as err:
            now = time.monotonic()
            if lost_at is None:
                lost_at = now
                say(f"{err}; reconnecting for up to {reconnect_s:g} s")
            if now - lost_at >= reconnect_s:
                raise HostUnreachable(
                    f"{job.host}: unreachable for {reconnect_s:g} s while {job.name} trains "
                    "there; it goes on: `tunegate run` reattaches to it"
                ) from err
            time.sleep(RETRY_EVERY_S)


def fetch(job: RemoteArm, local_arm: Path) -> int:
    """Copy the arm's outputs back into `local_arm`, check each against the tower's sha256, and
    write the index of the checkpoints left there; the number of files checked."""
    pull(job.host, job.arm_dir, local_arm, exclude=NOT_FETCHED)
    sums = remote_checksums(job.host, job.arm_dir, exclude=NOT_FETCHED)
    checked = verify(local_arm, sums)
    listing = job.host.run(
        f"cd {quote(job.arm_dir)}/checkpoints 2>/dev/null "
        "&& du -sb checkpoint-* 2>/dev/null || true",
        timeout=120,
    ).stdout
    index = [
        {"name": name, "bytes": int(size)}
        for size, _, name in (line.partition("\t") for line in listing.splitlines())
        if size.isdigit()
    ]
    (local_arm / "checkpoints-index.json").write_text(
        json.dumps(
            {"host": str(job.host), "dir": f"{job.arm_dir}/checkpoints", "checkpoints": index},
            indent=1,
        )
    )
    return checked


def local_paths(result: dict[str, Any], job: RemoteArm, local_arm: Path) -> dict[str, Any]:
    """The result's paths, which are the trainer's, as this machine has them after the fetch."""
    out = dict(result)
    for key in ("adapter_dir", "merged_dir"):
        value = out.get(key)
        if isinstance(value, str) and (value == job.work or value.startswith(job.work + "/")):
            out[key] = str(local_arm / value[len(job.work) :].lstrip("/"))
    return out


def train_remote(
    job: RemoteArm,
    *,
    local_arm: Path,
    local_model: Path,
    env: dict[str, str],
    on_line: Callable[[str], None],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Train one arm on the tower (ship, start or reattach, follow, fetch); its result.json,
    with local paths. A guard's stop or a failed job raises RemoteArmStopped; an unreachable
    tower HostUnreachable; a fetched file that differs ChecksumMismatch."""
    status = job.status()
    if status.state == "running":
        say(f"  reattached to {job.name} on {job.host}, still training")
    elif status.state == "exited" and status.exit_code == 0 and _has_result(job):
        say(f"  {job.name} finished on {job.host} while away: fetching")
    else:
        # Arms training at the same time share the tower's copy of the model: one ships it.
        with _shipping(job.model_dir):
            push(job.host, local_model, job.model_dir)
        push(job.host, local_arm / "data", f"{job.arm_dir}/data")
        job.start(env)
    status = follow(job, on_line, job.executor.reconnect_s, say)
    if status.state != "exited" or status.exit_code != 0:
        tail = job.log_tail()
        job.save_log()
        code = "no status" if status.exit_code is None else f"exit {status.exit_code}"
        killed = " (killed)" if status.exit_code in (137, 143) else ""
        full = (
            f"the disk of {job.host} is full (free space there, or set executor.remote_dir); "
            if says_disk_full(tail)
            else ""
        )
        raise RemoteArmStopped(
            f"{job.name} on {job.host} stopped, {code}{killed}: {full}{tail or 'no output'}; "
            "`tunegate run` starts it again from its last checkpoint there"
        )
    job.save_log()
    fetch(job, local_arm)
    result_file = local_arm / "result.json"
    if not result_file.is_file():
        raise RemoteError(f"{job.name} on {job.host} finished without {result_file.name}")
    result = local_paths(json.loads(result_file.read_text()), job, local_arm)
    job.remove()
    return result


_SHIPPING: dict[str, threading.Lock] = {}
_SHIPPING_GUARD = threading.Lock()


def _shipping(remote_path: str) -> threading.Lock:
    """The lock of one remote path: two rsyncs into one directory would race."""
    with _SHIPPING_GUARD:
        return _SHIPPING.setdefault(remote_path, threading.Lock())


def _has_result(job: RemoteArm) -> bool:
    path = f"{job.arm_dir}/result.json"
    return job.host.run(f"test -f {quote(path)}", timeout=60, check=False).returncode == 0
