"""The climb: stages in order, each admitted by its guards, run by its kind's runner, gated.

It resumes at the first stage not passed and stops at the first that does not pass. It decides
and records; what is printed and logged is the sinks' business (`tunegate.events`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TextIO

from rich.console import Console

from tunegate.artifacts import missing_artifacts, stage_artifacts_problem
from tunegate.data.arms import Experiment
from tunegate.data.items import items_hash
from tunegate.determinism import machine_record, pin
from tunegate.events import (
    ClimbEnded,
    ClimbOpened,
    Events,
    GateDecided,
    ReportWritten,
    Sink,
    StageStarted,
)
from tunegate.events.console import ConsoleSink
from tunegate.gates import GateResult, evaluate_gates
from tunegate.ladder.context import Climb, StageRun, StageRunner, now
from tunegate.ladder.environment import run_environment
from tunegate.ladder.forecasting import measure
from tunegate.ladder.guards import admit, refused_at_once
from tunegate.ladder.selection import RunOptions, power_notes, stage_range
from tunegate.ladder.training import run_training
from tunegate.plan import Plan, dump_plan, plan_hash
from tunegate.progress import Bars
from tunegate.rundir import RunLock, atomic_write_json, run_dir_for
from tunegate.tracking import TrackerProcess, TrackingFailed
from tunegate.train.qlora import frozen_heap

# One runner per stage kind (`stages[].kind` in the plan).
RUNNERS: dict[str, StageRunner] = {"environment": run_environment, "train": run_training}


@dataclass
class StageOutcome:
    """What one stage of this climb ended with (its record in the state holds more)."""

    index: int
    name: str
    verdict: str
    gates: list[GateResult]
    forced: bool
    seconds: float


class Ladder:
    def __init__(
        self, plan: Plan, exp: Experiment, console: Console, sinks: list[Sink] | None = None
    ) -> None:
        self.plan, self.exp = plan, exp
        self.run = run_dir_for(plan)
        self.blocked = False  # a stage was not started because the one before did not pass
        # Console first: a tracking server that fails is said after what was already shown.
        self.events = Events([ConsoleSink(console), *(sinks or [])])
        self.ctx = Climb(plan, exp, self.run, self.events, Bars(console))

    def climb(self, opts: RunOptions) -> list[StageOutcome]:
        # A state this climb cannot resume from is refused before anything is written, lock
        # file included.
        self.run.load_state(self.plan.name)
        # One climber per run directory, held until this climb ends (the OS frees it if the
        # process dies): two would train the same arms into the same folders.
        lock = RunLock(self.run.root)
        lock.acquire(opts.command)
        try:
            return self._climb_locked(opts)
        finally:
            lock.release()

    def _climb_locked(self, opts: RunOptions) -> list[StageOutcome]:
        climb = self.ctx
        # Read-only look first: validate (this plan's state, whole) before writing anything.
        state = self.run.load_state(self.plan.name)
        start, end = stage_range(self.plan, state, opts, self.run)
        for i in range(start, end + 1):
            if self.plan.stages[i].kind == "train":
                climb.selection(i)  # a bad selection is refused before anything is written
        if start > end:
            self.events.say(
                "Use --from N to run a stage again.", "success", "Every stage has passed."
            )
            return []
        climb.state = state
        if refused_at_once(climb, start, opts):
            self.blocked = True
            return []
        log = self._open()
        try:
            # What is loaded by now (torch, transformers, MLflow; no model yet) is not this
            # climb's garbage: the trainer's collection per arm skips it (`frozen_heap`).
            with frozen_heap():
                if opts.start is None and opts.stage is None:
                    self._say_why_again(start)
                with climb.bars:
                    outcomes = self._climb(opts, start, end)
                self._report()
                self.events.emit(ClimbEnded())
                return outcomes
        finally:
            log.close()

    def _say_why_again(self, start: int) -> None:
        """A stage that passed runs again when its artifacts are gone or changed: say so."""
        stage = self.plan.stages[start]
        record = self.ctx.state.stage(stage.name)
        if record is None or record.verdict != "PASS":
            return
        problem = stage_artifacts_problem(record, self.run.stage_dir(start, stage.name))
        if problem:
            self.events.say(
                f"stage {start} ({stage.name}) passed, but {problem}: running it again",
                "warning",
            )

    def _open(self) -> TextIO:
        """Load the state, pin the machine's numerics, and open tracking (a sink)."""
        from tunegate.events.jsonl import JsonLinesSink

        climb, plan = self.ctx, self.plan
        climb.state = state = self.run.load_state()
        state.plan_name = state.plan_name or plan.name
        state.created = state.created or now()
        state.plan_hash = plan_hash(plan)
        # Content hashes of each arm's whole data set, as loaded (the report's reproducibility).
        state.data_hashes = {
            name: items_hash(list(self.exp.arm(arm.role).values()))
            for name, arm in plan.arms.items()
        }
        # Tracking's check, and its MLflow client started in a child process, first: MLflow's
        # imports run there while torch's run here (`TrackerProcess`).
        client = self._start_tracking()
        # One thread count and deterministic kernels for everything this process computes
        # (training, generation), and the record of what ran, for comparing machines.
        pin(plan.training.threads, deterministic=plan.training.deterministic)
        state.machine = machine = machine_record()
        self.run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run.root / "plan.json", dump_plan(plan))  # passwords ***
        # Before the log: a failure leaves none open.
        tracking, first = self._open_tracking(client)
        log = (self.run.root / "events.jsonl").open("a", encoding="utf-8")
        # The JSON lines before tracking: an event whose tracking fails is on disk already.
        opened: list[Sink] = [JsonLinesSink(log), tracking]
        self.events.sinks = opened + self.events.sinks if first else self.events.sinks + opened
        self.events.emit(
            ClimbOpened(
                plan.name,
                state.plan_hash,
                plan.seed,
                plan.model.name,
                plan.quantization.method,
                machine,
                state,
            )
        )
        climb.save()
        return log

    def _start_tracking(self) -> TrackerProcess | None:
        """The doctor's tracking check (seconds at most) and, when it passes, the MLflow client
        started in its own process (not waited on: `_open_tracking` does); None when it fails."""
        from tunegate.doctor import tracking_check

        if tracking_check(self.plan).status == "FAIL":
            return None
        return TrackerProcess.for_plan(self.plan)

    def _open_tracking(self, client: TrackerProcess | None) -> tuple[Sink, bool]:
        """The tracking sink, and whether it goes before the console. A store that failed the
        doctor's check is not waited on: the environment stage runs without tracking and FAILs
        on that check, with its fix; any other stage stops the climb with one line before the
        console shows it (`DeferredTracking`)."""
        from tunegate.doctor import tracking_check
        from tunegate.events.tracking import DeferredTracking, TrackingSink

        def open_sink(started: TrackerProcess | None = None) -> TrackingSink:
            process = started or TrackerProcess.for_plan(self.plan)
            return TrackingSink(process.opened(), on_failure=self._tracking_failed)

        if client is not None:
            return open_sink(client), False

        def open_again() -> TrackingSink:
            again = tracking_check(self.plan)
            if again.status == "FAIL":
                raise TrackingFailed(f"tracking {again.value}", again.fix)
            return open_sink()

        environment = {i for i, s in enumerate(self.plan.stages) if s.kind == "environment"}
        return DeferredTracking(open_again, environment), True

    def _tracking_failed(self, err: TrackingFailed) -> None:
        """Tracking failed mid-climb (the sink stops the climb after this): the running stage
        FAILs on a `tracking` health gate with the reason, shown, recorded in its verdict.json
        and the state, and in the report. Its arms' outputs stay for the resume."""
        from datetime import datetime

        from tunegate.events import GateDecided

        state = self.ctx.state
        for name, record in state.stages.items():
            if record.status != "running":
                continue
            gate = GateResult("tracking", False, "health", err.reason)
            record.status, record.verdict, record.finished = "done", "FAIL", now()
            record.gates = [gate]
            if record.started:
                took = datetime.fromisoformat(record.finished) - datetime.fromisoformat(
                    record.started
                )
                record.seconds = round(took.total_seconds(), 2)
            verdict_file = self.run.stage_dir(record.index, name) / "verdict.json"
            atomic_write_json(
                verdict_file,
                {
                    "stage": name,
                    "index": record.index,
                    "verdict": "FAIL",
                    "forced": record.forced,
                    "gates": [asdict(gate)],
                    "seconds": record.seconds,
                },
            )
            self.events.emit(
                GateDecided(
                    record.index,
                    name,
                    "FAIL",
                    [gate],
                    record.forced,
                    record.seconds or 0.0,
                    [],  # not the plan's recovery: the fix is on the line that ends the climb
                    verdict_file,
                    record,
                )
            )
        self.ctx.save()
        self._report()

    def _climb(self, opts: RunOptions, start: int, end: int) -> list[StageOutcome]:
        for index, notes in power_notes(self.plan, self.exp, range(start, end + 1)).items():
            for note in notes:
                if "cannot be met" in note:
                    name = self.plan.stages[index].name
                    self.events.say(note, "warning", f"Stage {index} ({name}):")
        outcomes: list[StageOutcome] = []
        for index in range(start, end + 1):
            admission = admit(self.ctx, index, opts)
            if admission.refused is not None:
                if admission.gate is None:
                    self.blocked = True
                    break
                outcomes.append(self._refused(index, admission.gate, admission.refused))
                break
            outcome = self._run_stage(index, admission.forced)
            outcomes.append(outcome)
            if self.plan.stages[index].kind == "train":
                measure(self.ctx, index)
            if outcome.verdict != "PASS":
                break
            if index < end:
                self._report()  # after every stage; the last one's is written at the end
        return outcomes

    def _run_stage(self, index: int, forced: bool) -> StageOutcome:
        climb, stage = self.ctx, self.plan.stages[index]
        started = time.perf_counter()
        record = climb.stage_record(index, stage)
        record.status, record.started, record.verdict = "running", now(), None
        record.forced = forced
        if forced:
            record.forced_reason = (
                f"stage {index - 1} was {climb.state.verdict(self.plan.stages[index - 1].name)}"
            )
        run = StageRun(index, stage, self.run.stage_dir(index, stage.name), record)
        run.stage_dir.mkdir(parents=True, exist_ok=True)
        self.events.emit(StageStarted(index, stage.name, stage.description, forced, record))
        climb.save()
        evidence = RUNNERS[stage.kind](climb, run)
        verdict, gates = evaluate_gates(stage.gates, evidence)
        seconds = time.perf_counter() - started
        record.status, record.verdict, record.finished = "done", verdict, now()
        record.seconds, record.gates = round(seconds, 2), gates
        verdict_file = run.stage_dir / "verdict.json"
        atomic_write_json(
            verdict_file,
            {
                "stage": stage.name,
                "index": index,
                "verdict": verdict,
                "forced": forced,
                "gates": [asdict(g) for g in gates],
                "seconds": record.seconds,
            },
        )
        self.events.emit(
            GateDecided(
                index,
                stage.name,
                verdict,
                gates,
                forced,
                seconds,
                stage.recovery,
                verdict_file,
                record,
            )
        )
        climb.save()
        return StageOutcome(index, stage.name, verdict, gates, forced, seconds)

    def _refused(self, index: int, gate_name: str, reason: str) -> StageOutcome:
        """A stage that did not start: FAIL on a health gate (budget, pre-flight), recorded."""
        stage = self.plan.stages[index]
        gate = GateResult(gate_name, False, "health", reason)
        record = self.ctx.stage_record(index, stage)
        record.status, record.verdict, record.finished = "done", "FAIL", now()
        record.gates = [gate]
        self.ctx.save()
        return StageOutcome(index, stage.name, "FAIL", [gate], False, 0.0)

    def _report(self) -> None:
        """Write the report (HTML, Markdown, figures) into the run directory. A report that
        cannot be written is said, and does not stop the climb: the state and the verdicts are
        written."""
        from tunegate.render import answer
        from tunegate.report import REPORT_DIR, mlflow_summary, write

        try:
            write(self.run.root)
            now_answer = answer(
                self.plan, self.ctx.state, missing_artifacts(self.plan, self.ctx.state, self.run)
            )
            self.events.emit(
                ReportWritten(
                    self.run.root / REPORT_DIR,
                    mlflow_summary(self.run.root),
                    str(now_answer),
                    now_answer.word,
                )
            )
        except Exception as err:
            self.events.say(f"{type(err).__name__}: {err}", "warning", "Report not written:")
