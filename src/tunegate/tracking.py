"""Tracking: MLflow. A parent run per ladder run, a child per stage, a grandchild per arm.

Uses `MlflowClient` with explicit run ids rather than mlflow's global active-run stack, so a
resumed ladder re-attaches to the same runs (ids recorded in the run directory's state).

Every call has a deadline. MLflow's own HTTP defaults retry 7 times with a backoff of up to
120 s: a call to a server that is down failed only after about 250 s, and a climb that made
several such calls looked hung. Here MLflow's settings give up within about 16 s when the
connection is refused (riding out a restart of a few seconds), and each call also runs under a
hard deadline that nothing can stretch (a server that accepts and never answers, a locked store).
The first call that fails marks the store down for this process: later calls fail at once, so a
climb that stops on it does so within one deadline, not one per call (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NoReturn, Protocol, TypeVar

from tunegate.diskspace import DiskFull, disk_full
from tunegate.errors import UserError
from tunegate.plan import Plan, redact

T = TypeVar("T")

# MLflow's HTTP client as tunegate sets it; each is a default the user's environment overrides
# (names from mlflow/environment_variables.py). A request times out after 10 s of silence; 4
# retries sleep 0, 2, 4 and 8 s (+ up to 0.5 s jitter each): about 16 s in all when refused.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    # MLflow 3 prints "🏃 View run … at: URL" on stdout as each run of a server ends, in the
    # middle of the console's lines; the report links every run.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# The hard bound on one tracking call, whatever MLflow's settings: a hung server's 5 attempts of
# 10 s would take 65 s. TUNEGATE_TRACKING_DEADLINE_S overrides it (a slow link, a big artifact).
CALL_DEADLINE_S = 45.0
RESUMES = (
    "then `tunegate run` resumes: nothing is lost (the run directory's events.jsonl and "
    "state.json have every event), MLflow runs are re-attached and steps already logged are "
    "skipped"
)
TRACKING_FIX = (
    "start the MLflow server (`mlflow server`) or fix tracking.uri / MLFLOW_TRACKING_URI; "
    + RESUMES
)


class TrackingFailed(UserError):
    """A tracking call failed, or gave no answer within its deadline: said on one line, exit 1
    (an environment to fix, as a failed check; not bad input)."""

    exit_code = 1

    def __init__(self, reason: str, fix: str = TRACKING_FIX) -> None:
        self.reason, self.fix = reason, fix
        super().__init__(f"{reason} — {fix}")


def apply_mlflow_defaults() -> None:
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # A local store's failure is said once, by the TrackingFailed or DiskFull it becomes; MLflow
    # would log it first, with its traceback.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def call_deadline_s() -> float:
    return float(os.environ.get("TUNEGATE_TRACKING_DEADLINE_S") or CALL_DEADLINE_S)


def _reason(err: BaseException) -> str:
    """One short cause: 'connection refused', not MLflow's 400-character retry report."""
    text = str(err)
    found = re.search(r"\[Errno -?\d+\]\s*([^'\")]*)", text)
    if found and found.group(1).strip():
        return found.group(1).strip().lower()
    status = re.search(r"too many (\d{3}) error responses|error code (\d{3}) != 200", text)
    if status:
        return f"HTTP {status.group(1) or status.group(2)} from the server"
    if "timeout" in text.lower() or "timed out" in text.lower():
        return "timed out"
    first = (text.strip().splitlines() or [type(err).__name__])[0]
    return f"{type(err).__name__}: {first[:200]}"


def tracking_uri(plan: Plan) -> str:
    if plan.tracking.uri:
        return plan.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(plan.output_dir / 'mlflow.db').resolve()}"


def metric_key(name: str) -> str:
    """An MLflow-valid key: `pass@10` → `pass_at_10` (MLflow refuses `@`); `/` → `_`."""
    return re.sub(r"[^A-Za-z0-9_\-. :]", "_", name.replace("@", "_at_").replace("/", "_"))


def seed_local_store(uri: str) -> None:
    """Create a new local sqlite store by copying an empty, migrated one instead of migrating it
    anew: MLflow runs every schema migration on a new store (~3 s on 2 cores), and each stage's
    first process, each test and each `tunegate train` paid it. The template (one per MLflow
    version, in tunegate's cache) holds no experiment, so MLflow creates its `Default` one on
    first open exactly as for a new store. A store that exists is left alone."""
    import contextlib
    import shutil
    import sqlite3
    import tempfile

    import mlflow

    from tunegate.models import cache_dir
    from tunegate.rundir import current_umask

    path = Path(uri.removeprefix("sqlite:///"))
    if not uri.startswith("sqlite:///") or path.exists() or str(path) in ("", ":memory:"):
        return
    template = cache_dir() / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    if not template.is_file():
        from mlflow.tracking import MlflowClient

        template.parent.mkdir(parents=True, exist_ok=True)
        fd, raw = tempfile.mkstemp(prefix=".empty-store-", suffix=".db", dir=template.parent)
        os.close(fd)
        os.unlink(raw)  # MLflow creates the file itself
        try:
            MlflowClient(tracking_uri=f"sqlite:///{raw}").search_experiments()
            with sqlite3.connect(raw) as db:
                db.execute("DELETE FROM experiments")  # its Default points at this process's cwd
            os.replace(raw, template)  # atomic: a concurrent builder's copy is as good
        finally:
            if os.path.exists(raw):
                os.unlink(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # as MLflow would have created it, not 0600
    os.close(fd)
    try:
        shutil.copyfile(template, tmp)
        with contextlib.suppress(FileExistsError):  # another process created it meanwhile
            os.link(tmp, path)  # never over it
    finally:
        os.unlink(tmp)


class Tracker:
    def __init__(self, uri: str, experiment: str, local_dir: Path) -> None:
        """`local_dir` holds a local sqlite store's artifacts (a server keeps its own). Raises
        TrackingFailed when the store does not answer within the deadline."""
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        apply_mlflow_defaults()
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.shown = redact(uri)
        self.deadline_s = call_deadline_s()
        self.down: TrackingFailed | None = None  # the first failure: later calls fail at once
        # A local store's file: where a full disk is (its messages do not say).
        self.store: Path | None = None
        if self.uri.startswith("sqlite:"):
            local_dir.mkdir(parents=True, exist_ok=True)
            seed_local_store(self.uri)
            self.store = Path(self.uri.removeprefix("sqlite:///"))
        self.client = MlflowClient(tracking_uri=self.uri)
        existing = self._call("open the experiment", self.client.get_experiment_by_name, experiment)
        if existing is not None:
            self.experiment_id = existing.experiment_id
        else:
            artifacts = None
            if self.uri.startswith("sqlite:"):
                artifacts = (local_dir / "mlartifacts").resolve().as_uri()
            try:
                self.experiment_id = self._call(
                    "create the experiment",
                    self.client.create_experiment,
                    experiment,
                    artifact_location=artifacts,
                    answers=("RESOURCE_ALREADY_EXISTS",),
                )
            except Exception as err:  # another process created it since we looked
                if getattr(err, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = self._call(
                    "open the experiment", self.client.get_experiment_by_name, experiment
                )
                if found is None:
                    raise
                self.experiment_id = found.experiment_id

    @classmethod
    def for_plan(cls, plan: Plan) -> Tracker:
        return cls(tracking_uri(plan), plan.tracking.experiment, plan.output_dir)

    def _call(
        self, what: str, fn: Callable[..., T], *args: Any, answers: tuple[str, ...] = (), **kw: Any
    ) -> T:
        """`fn(*args, **kw)` within the deadline. An MLflow error whose code is in `answers` is
        the store's answer and is raised as is (the caller handles it); a full local disk is
        DiskFull; anything else, or no answer in time, is TrackingFailed and marks the store down.

        The call runs in a daemon thread: one that never returns is left behind, and neither
        the caller nor the interpreter's exit waits for it."""
        if self.down is not None:
            raise TrackingFailed(self.down.reason, self.down.fix)
        outcome: list[Any] = []

        def work() -> None:
            try:
                outcome.append((True, fn(*args, **kw)))
            except BaseException as err:  # handed to the caller's thread
                outcome.append((False, err))

        started = time.monotonic()
        thread = threading.Thread(target=work, name=f"tunegate tracking: {what}", daemon=True)
        thread.start()
        thread.join(self.deadline_s)
        if not outcome:
            self._fail(f"{what}: no answer in {self.deadline_s:g} s")
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[no-any-return]
        if getattr(value, "error_code", None) in answers:
            raise value
        full = disk_full(value, self.store)
        if full is not None and self.store is not None:
            raise full from value
        self._fail(f"{what}: {_reason(value)} (after {time.monotonic() - started:.0f} s)", value)

    def _fail(self, reason: str, cause: BaseException | None = None) -> NoReturn:
        fix = TRACKING_FIX
        if self.store is not None:
            fix = f"check the local store {self.store} (its disk, a lock on it); {RESUMES}"
        self.down = TrackingFailed(f"tracking {self.shown}: {reason}", fix)
        raise self.down from cause

    def system_metrics(self, run_id: str, interval_s: float = 5.0) -> Any:
        """MLflow's system-metrics monitor (CPU, memory, disk, GPU via pynvml where present) on
        `run_id`; returns it started (call `.finish()`), or None where it cannot run."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(
                run_id, sampling_interval=interval_s, resume_logging=True, tracking_uri=self.uri
            )
            monitor.start()
            return monitor
        except Exception:  # psutil missing, an old mlflow: training goes on without them
            return None

    def start(
        self,
        name: str,
        *,
        parent: str | None = None,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Return `run_id` re-opened if given and present, else a new run."""
        if run_id:
            try:
                run = self._call(
                    "re-open a run",
                    self.client.get_run,
                    run_id,
                    answers=("RESOURCE_DOES_NOT_EXIST",),
                )
                if run.info.status != "RUNNING":
                    self._call("re-open a run", self.client.update_run, run_id, status="RUNNING")
                return run_id
            except Exception as err:
                # Only a store that lost the run (a deleted db) starts a new one; a server that
                # is briefly down must not split a resumed ladder into two run trees.
                if getattr(err, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                    raise
        all_tags = dict(tags or {})
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = self._call(
            "open a run", self.client.create_run, self.experiment_id, run_name=name, tags=all_tags
        )
        return str(run.info.run_id)

    def params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self._call("read params", self.client.get_run, run_id).data.params
        fresh = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        if fresh:
            self._call("log params", self.client.log_batch, run_id, params=fresh)

    def metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()]
        if batch:
            self._call("log metrics", self.client.log_batch, run_id, metrics=batch)

    def step_metrics(self, run_id: str, entries: list[tuple[dict[str, float], int]]) -> None:
        """Log many steps in few requests (log_batch takes up to 1000 metrics)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(k.replace("/", "_"), float(v), now, step)
            for metrics, step in entries
            for k, v in metrics.items()
        ]
        for start in range(0, len(batch), 1000):
            chunk = batch[start : start + 1000]
            self._call("log training steps", self.client.log_batch, run_id, metrics=chunk)

    def step_sink(self, run_id: str) -> Any:
        """A trainer metric sink for `run_id` that logs each step once: a resumed run replays
        its checkpoint's history, and steps the run already holds are skipped."""
        logged = {step for step, _ in self.history(run_id, "loss")}

        def sink(entries: list[tuple[dict[str, float], int]]) -> None:
            fresh = [(m, step) for m, step in entries if step not in logged]
            self.step_metrics(run_id, fresh)
            logged.update(step for _, step in fresh)

        return sink

    def tags(self, run_id: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self._call("set a tag", self.client.set_tag, run_id, k, v)

    def artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self._call(
                "upload artifacts", self.client.log_artifacts, run_id, str(path), artifact_path
            )
        elif path.is_file():
            self._call(
                "upload an artifact", self.client.log_artifact, run_id, str(path), artifact_path
            )

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self._call("close a run", self.client.set_terminated, run_id, status=status)

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        found = self._call("read metric history", self.client.get_metric_history, run_id, key)
        return [(m.step, m.value) for m in found]


class TrackingClient(Protocol):
    """What the ladder's tracking sink calls: `Tracker` in this process, or `TrackerProcess`."""

    uri: str
    experiment_id: str

    def start(
        self,
        name: str,
        *,
        parent: str | None = None,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> str: ...

    def params(self, run_id: str, params: dict[str, Any]) -> None: ...

    def metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None: ...

    def step_sink(self, run_id: str) -> Callable[[list[tuple[dict[str, float], int]]], None]: ...

    def tags(self, run_id: str, tags: dict[str, str]) -> None: ...

    def artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None: ...

    def end(self, run_id: str, status: str = "FINISHED") -> None: ...


# Room for MLflow's imports (about 2 s on 2 idle cores) in the child before the store answers.
OPEN_SLACK_S = 60.0
_FRAME = struct.Struct(">I")


class TrackerProcess:
    """A `Tracker` in a child process, started when the climb opens: MLflow's imports and its
    store's opening (1.5-2 s of a stage-1 process on 2 cores) run there, on the other core,
    while this process imports torch and loads the model. Each call is a request on the child's
    stdin and an answer on its stdout (pickled, length-prefixed), under the same deadline as a
    `Tracker` call plus a little: the child's own `Tracker` cuts the MLflow call at the deadline
    and answers TrackingFailed; no answer (a dead or stuck child) fails here the same way. The
    child ignores the terminal's Ctrl-C (its own session) and exits when its stdin closes,
    with this process at the latest."""

    def __init__(self, uri: str, experiment: str, local_dir: Path) -> None:
        self.uri, self.shown = uri, redact(uri)
        self.experiment_id = ""  # the child's answer once the store is open
        self.deadline_s = call_deadline_s()
        self.down: TrackingFailed | None = None
        self._opened = False
        self._lock = threading.Lock()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the process)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, uri, experiment, str(local_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        weakref.finalize(self, _stop, self._proc, self._log)

    @classmethod
    def for_plan(cls, plan: Plan) -> TrackerProcess:
        return cls(tracking_uri(plan), plan.tracking.experiment, plan.output_dir)

    def opened(self) -> TrackerProcess:
        """Wait until the child's store is open (or raise what opening it raised)."""
        with self._lock:
            self._open_locked()
        return self

    def close(self) -> None:
        _stop(self._proc, self._log)

    def start(
        self,
        name: str,
        *,
        parent: str | None = None,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> str:
        run: str = self._ask("start", name, parent=parent, tags=tags, run_id=run_id)
        return run

    def params(self, run_id: str, params: dict[str, Any]) -> None:
        self._ask("params", run_id, {k: str(v) for k, v in params.items()})

    def metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        self._ask("metrics", run_id, metrics, step)

    def step_sink(self, run_id: str) -> Callable[[list[tuple[dict[str, float], int]]], None]:
        sink_id: int = self._ask("step_sink", run_id)

        def sink(entries: list[tuple[dict[str, float], int]]) -> None:
            self._ask("_steps", sink_id, entries)

        return sink

    def tags(self, run_id: str, tags: dict[str, str]) -> None:
        self._ask("tags", run_id, tags)

    def artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._ask("artifact", run_id, path, artifact_path)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self._ask("end", run_id, status=status)

    def _ask(self, method: str, *args: Any, **kw: Any) -> Any:
        with self._lock:
            if self.down is not None:
                raise TrackingFailed(self.down.reason, self.down.fix)
            self._open_locked()
            self._send((method, args, kw))
            return self._answer(method, self.deadline_s + 10)

    def _open_locked(self) -> None:
        if not self._opened:
            self.experiment_id = self._answer("open the store", self.deadline_s * 3 + OPEN_SLACK_S)
            self._opened = True

    def _send(self, request: tuple[str, tuple[Any, ...], dict[str, Any]]) -> None:
        data = pickle.dumps(request)
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(_FRAME.pack(len(data)) + data)
            self._proc.stdin.flush()
        except OSError:
            self._gone(request[0])

    def _answer(self, what: str, deadline_s: float) -> Any:
        assert self._proc.stdout is not None
        out = self._proc.stdout
        ready, _, _ = select.select([out], [], [], deadline_s)
        if not ready:
            self._fail(f"{what}: no answer in {deadline_s:g} s")
        head = out.read(_FRAME.size)
        if len(head) < _FRAME.size:
            self._gone(what)
        body = out.read(_FRAME.unpack(head)[0])
        kind, *payload = pickle.loads(body)
        if kind == "ok":
            return payload[0]
        if kind == "disk full":
            path, written = payload
            raise DiskFull(Path(path) if path else None, written)
        reason, fix = payload
        self.down = TrackingFailed(reason, fix)
        raise self.down

    def _gone(self, what: str) -> NoReturn:
        code = self._proc.wait(timeout=5)
        self._log.seek(0)
        tail = self._log.read().decode(errors="replace").strip().splitlines()[-1:]
        self._fail(
            f"{what}: the tracking process ended (exit {code}){': ' + tail[0] if tail else ''}"
        )

    def _fail(self, reason: str) -> NoReturn:
        self.down = TrackingFailed(f"tracking {self.shown}: {reason}", TRACKING_FIX)
        _stop(self._proc, self._log)
        raise self.down


def _stop(proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        if proc.stdin is not None:
            proc.stdin.close()  # the child's loop ends on it
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        proc.wait(timeout=2)
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    with contextlib.suppress(OSError, ValueError):
        log.close()


_CHILD = "from tunegate.tracking import serve; serve()"


def serve() -> None:
    """The child of `TrackerProcess`: open a `Tracker` (argv: uri, experiment, local dir), say
    so, then answer each request until stdin closes."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything MLflow prints goes to the log, never into the answers
    requests = sys.stdin.buffer
    uri, experiment, local_dir = sys.argv[1:4]
    sinks: dict[int, Callable[[list[tuple[dict[str, float], int]]], None]] = {}

    def answer(reply: tuple[Any, ...]) -> None:
        data = pickle.dumps(reply)
        channel.write(_FRAME.pack(len(data)) + data)
        channel.flush()

    def failure(err: BaseException) -> tuple[Any, ...]:
        if isinstance(err, DiskFull):
            return ("disk full", str(err.path) if err.path else None, err.what)
        if isinstance(err, TrackingFailed):
            return ("failed", err.reason, err.fix)
        if isinstance(err, OSError) and err.strerror:  # the local store's directory or file
            where = f": {err.filename}" if err.filename else ""
            return ("failed", f"tracking {redact(uri)}: {err.strerror}{where}", TRACKING_FIX)
        return ("failed", f"tracking {redact(uri)}: {_reason(err)}", TRACKING_FIX)

    try:
        tracker = Tracker(uri, experiment, Path(local_dir))
    except BaseException as err:
        answer(failure(err))
        return
    answer(("ok", tracker.experiment_id))
    while True:
        head = requests.read(_FRAME.size)
        if len(head) < _FRAME.size:
            return  # the climb closed us, or ended
        method, args, kw = pickle.loads(requests.read(_FRAME.unpack(head)[0]))
        try:
            if method == "step_sink":
                sinks[len(sinks)] = tracker.step_sink(*args)
                value: Any = len(sinks) - 1
            elif method == "_steps":
                value = sinks[args[0]](args[1])
            else:
                value = getattr(tracker, method)(*args, **kw)
            answer(("ok", value))
        except BaseException as err:
            answer(failure(err))
