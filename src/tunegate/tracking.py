"""Tracking: MLflow. A parent run per ladder run, a child per stage, a grandchild per arm.

Uses `MlflowClient` with explicit run ids rather than mlflow's global active-run stack, so a
resumed ladder re-attaches to the same runs (ids recorded in the run directory's state).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tunegate.plan import Plan


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
        """`local_dir` holds a local sqlite store's artifacts (a server keeps its own)."""
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        if self.uri.startswith("sqlite:"):
            local_dir.mkdir(parents=True, exist_ok=True)
            seed_local_store(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        existing = self.client.get_experiment_by_name(experiment)
        if existing is not None:
            self.experiment_id = existing.experiment_id
        else:
            artifacts = None
            if self.uri.startswith("sqlite:"):
                artifacts = (local_dir / "mlartifacts").resolve().as_uri()
            try:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=artifacts
                )
            except Exception as err:  # another process created it since we looked
                if getattr(err, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
                self.experiment_id = found.experiment_id

    @classmethod
    def for_plan(cls, plan: Plan) -> Tracker:
        return cls(tracking_uri(plan), plan.tracking.experiment, plan.output_dir)

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
                run = self.client.get_run(run_id)
                if run.info.status != "RUNNING":
                    self.client.update_run(run_id, status="RUNNING")
                return run_id
            except Exception as err:
                # Only a store that lost the run (a deleted db) starts a new one; a server that
                # is briefly down must not split a resumed ladder into two run trees.
                if getattr(err, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                    raise
        all_tags = dict(tags or {})
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    def params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        fresh = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        if fresh:
            self.client.log_batch(run_id, params=fresh)

    def metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def step_metrics(self, run_id: str, entries: list[tuple[dict[str, float], int]]) -> None:
        """Log many steps in few requests (log_batch takes up to 1000 metrics)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(k.replace("/", "_"), float(v), now, step)
            for metrics, step in entries
            for k, v in metrics.items()
        ]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[start : start + 1000])

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
            self.client.set_tag(run_id, k, v)

    def artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(run_id, str(path), artifact_path)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]
