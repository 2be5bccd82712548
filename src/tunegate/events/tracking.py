"""The tracking sink: the climb in MLflow, a parent run per ladder, a child per stage, a
grandchild per arm (`tunegate.tracking.Tracker` does the calls).

It keeps each run's id in the state record the event carries (the ladder saves the state after
each event), so a resumed climb re-attaches to the same runs instead of opening new ones.

When tracking fails (a call that fails or passes its deadline, `Tracker`), the sink stops the
climb: it tells the ladder once (`on_failure`, on the main thread: the ladder records the running
stage's FAIL), then raises `TrackingFailed` for that event and every later one. Nothing is lost:
the JSON-lines sink, before this one, has written every event, and a resume completes MLflow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tunegate.events import (
    ArmFinished,
    ArmScored,
    ArmStarted,
    ArmTrained,
    ClimbEnded,
    ClimbOpened,
    Compared,
    Event,
    GateDecided,
    ReportWritten,
    StageMeasured,
    StageStarted,
    TrainingStarted,
    TrainingSteps,
)
from tunegate.plan import redact
from tunegate.tracking import TrackingClient, TrackingFailed

StepSink = Callable[[list[tuple[dict[str, float], int]]], None]


class TrackingSink:
    def __init__(
        self, tracker: TrackingClient, on_failure: Callable[[TrackingFailed], None] | None = None
    ) -> None:
        self.tracker = tracker
        self.parent: str | None = None
        self._plan = ""
        self._steps: dict[str, StepSink] = {}  # arm run → its step logger (skips logged steps)
        self.on_failure = on_failure
        self.failed: TrackingFailed | None = None
        self._told = False  # on_failure was called
        self._telling = False  # on_failure is running: what it emits is not tracked

    def emit(self, event: Event) -> None:
        if self.failed is None:
            try:
                self._emit(event)
                return
            except TrackingFailed as err:
                self.failed = err
        if self._telling:
            return
        # Only the main thread tells the ladder: the trainer's metric writer, in its own thread,
        # learns of it from the raise below, and training stops at its next step.
        if (
            self.on_failure
            and not self._told
            and threading.current_thread() is threading.main_thread()
        ):
            self._told = self._telling = True
            try:
                self.on_failure(self.failed)
            finally:
                self._telling = False
        raise TrackingFailed(self.failed.reason, self.failed.fix)

    def _emit(self, event: Event) -> None:
        t = self.tracker
        match event:
            case ClimbOpened():
                self._open(event)
            case StageStarted(record=record):
                record.mlflow_run = t.start(
                    f"stage {event.index}: {event.stage}",
                    parent=self.parent,
                    run_id=record.mlflow_run,
                    tags=self._tags(
                        "stage", event.stage, event.index, forced=str(event.forced).lower()
                    ),
                )
            case ArmStarted(record=record):
                record.mlflow_run = t.start(
                    f"stage {event.index}: {event.stage} / {event.arm}",
                    parent=event.stage_record.mlflow_run,
                    run_id=record.mlflow_run,
                    tags=self._tags(
                        "arm", event.stage, event.index, arm=event.arm, role=event.role
                    ),
                )
            case TrainingStarted(record=record):
                t.params(self._run(record.mlflow_run), event.params)
            case TrainingSteps(record=record):
                self._step_sink(self._run(record.mlflow_run))(event.steps)
            case ArmTrained():
                self._trained(event)
            case ArmScored(record=record, means=means):
                t.metrics(self._run(record.mlflow_run), means)
            case ArmFinished(record=record, ok=ok):
                t.end(self._run(record.mlflow_run), "FINISHED" if ok else "FAILED")
            case Compared():
                self._compared(event)
            case GateDecided():
                self._decided(event)
            case StageMeasured():
                self._measured(event)
            case ReportWritten():
                parent = self._run(self.parent)
                t.artifact(parent, event.report_dir, event.report_dir.name)
                t.tags(
                    parent,
                    {
                        "mlflow.note.content": event.summary,
                        # The same answer as the console, the report and `run --json`.
                        "tunegate.answer": event.answer_word,
                        "tunegate.answer_reason": event.answer,
                    },
                )
            case ClimbEnded():
                t.end(self._run(self.parent))
            case _:
                pass

    def _tags(self, level: str, stage: str, index: int, **more: str) -> dict[str, str]:
        """A stage's or an arm's run tags: where it sits in the ladder, and what else it is."""
        return {
            "tunegate.level": level,
            "tunegate.ladder": self._plan,
            "tunegate.stage": stage,
            "tunegate.stage_index": str(index),
            **{f"tunegate.{k}": v for k, v in more.items()},
        }

    @staticmethod
    def _run(run_id: str | None) -> str:
        assert run_id is not None, "a run is opened before anything is logged to it"
        return run_id

    def _open(self, event: ClimbOpened) -> None:
        state, t = event.state, self.tracker
        self._plan = event.plan
        state.tracking_uri = redact(t.uri)  # state.json is shared: no password in it
        state.mlflow_experiment_id = t.experiment_id
        state.mlflow_parent = self.parent = t.start(
            f"ladder:{event.plan}",
            run_id=state.mlflow_parent,
            tags={"tunegate.level": "ladder", "tunegate.plan": event.plan},
        )
        t.params(
            self.parent,
            {
                "plan_hash": event.plan_hash,
                "seed": event.seed,
                "model": event.model,
                "method": event.method,
                **event.machine.params(),  # the machine that began the climb (each arm has its own)
            },
        )

    def _step_sink(self, run_id: str) -> StepSink:
        if run_id not in self._steps:
            self._steps[run_id] = self.tracker.step_sink(run_id)
        return self._steps[run_id]

    def _trained(self, event: ArmTrained) -> None:
        from tunegate.determinism import MachineRecord

        run_id, result = self._run(event.record.mlflow_run), event.result
        if result.machine:  # the machine that trained this arm
            self.tracker.params(run_id, MachineRecord.from_json(result.machine).params())
        memory = (
            {} if result.peak_memory_gib is None else {"peak_memory_gib": result.peak_memory_gib}
        )
        self.tracker.metrics(
            run_id,
            {
                "train_seconds": result.train_seconds,
                "train_tokens": result.train_tokens,
                "tokens_per_second": result.tokens_per_second,
                **memory,
            },
            result.steps,
        )

    def _compared(self, event: Compared) -> None:
        p = event.primary
        values = {
            "control": p.control_mean,
            "experiment": p.experiment_mean,
            "difference": p.difference,
            "p_value": p.p_value,
        }
        # A figure without a value (no pair, no test) is not logged: a 0 would be made up.
        numbers = {f"{p.metric}.{k}": v for k, v in values.items() if v is not None}
        if (seeded := event.seeds) is not None:  # several seeds per arm: their spread and test
            numbers[f"{p.metric}.seed_se"] = seeded.se
            numbers[f"{p.metric}.seed_variance"] = seeded.seed_variance
            numbers.update({f"{p.metric}.{r}_seed_spread": v for r, v in seeded.spread.items()})
            if seeded.p_value is not None:
                numbers[f"{p.metric}.seed_p_value"] = seeded.p_value
        if p.n and numbers:
            self.tracker.metrics(self._run(event.record.mlflow_run), numbers)

    def _decided(self, event: GateDecided) -> None:
        run_id, t = self._run(event.record.mlflow_run), self.tracker
        passed = event.verdict == "PASS"
        t.metrics(run_id, {"seconds": event.seconds, "passed": float(passed)})
        t.tags(run_id, {"tunegate.verdict": event.verdict})
        t.artifact(run_id, event.verdict_file)
        t.end(run_id, "FINISHED" if passed else "FAILED")

    def _measured(self, event: StageMeasured) -> None:
        numbers = {
            f"actual.{k}": float(v)
            for k, v in event.actual.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.tracker.metrics(self._run(event.record.mlflow_run), numbers)
        for f in event.forecasts.values():
            # Step = the measuring stage: the MLflow UI shows the forecast settling stage by stage.
            self.tracker.metrics(
                self._run(self.parent),
                {
                    f"forecast.{f.stage}.hours": f.hours,
                    f"forecast.{f.stage}.low_hours": f.low_hours,
                    f"forecast.{f.stage}.high_hours": f.high_hours,
                    f"forecast.{f.stage}.usd": f.usd,
                },
                event.index,
            )


class DeferredTracking:
    """Tracking whose store did not answer when the climb opened (the doctor's check failed).

    Nothing waits on it: events are held. An environment stage runs without tracking and FAILs
    on that check, with its fix; any other stage needs tracking, so its start opens it (`open_sink`,
    which checks again, briefly): still down, the climb stops with one line before the stage
    shows; up, the held events are replayed into it in order and it tracks from then on. A climb
    that ends without opening it drops what it held (events.jsonl has it).
    """

    def __init__(self, open_sink: Callable[[], TrackingSink], environment_stages: set[int]) -> None:
        self.open_sink = open_sink
        self.environment_stages = environment_stages
        self.sink: TrackingSink | None = None
        self.held: list[Event] = []

    def emit(self, event: Event) -> None:
        if self.sink is not None:
            self.sink.emit(event)
            return
        if isinstance(event, StageStarted) and event.index not in self.environment_stages:
            try:
                sink = self.open_sink()
            except TrackingFailed as err:
                raise TrackingFailed(
                    f"Stage {event.index} ({event.stage}) not started: {err.reason}", err.fix
                ) from None
            self.sink = sink
            for held in [*self.held, event]:
                sink.emit(held)
            self.held.clear()
        elif isinstance(event, ClimbEnded):
            self.held.clear()
        else:
            self.held.append(event)
