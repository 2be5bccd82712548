"""The ladder: stages in order, each gated; resume at the first stage not passed.

A training stage: select data → train each arm (same seed, same order) → reload from disk and
smoke-generate → evaluate both arms on the same items → paired comparison → gates → verdict.
A stage never starts unless the one before passed, unless forced (and then that is recorded).
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from tunegate.analysis import analyze, rows_from_results
from tunegate.data.arms import Experiment
from tunegate.data.items import Item, items_hash, write_items
from tunegate.data.select import Selection, select
from tunegate.determinism import MachineRecord, machine_record, pin
from tunegate.errors import UserError
from tunegate.evaluate.pipeline import (
    ArmToScore,
    Generations,
    Settings,
    evaluate_arms,
    generate_arm,
    metric_gaps,
)
from tunegate.gates import ArmEvidence, GateResult, StageEvidence, evaluate_gates
from tunegate.plan import Plan, Stage, dump_plan, plan_hash, redact
from tunegate.progress import Bars
from tunegate.registry import metric_spec
from tunegate.render import comparison_line
from tunegate.rundir import RunDir, atomic_write_json
from tunegate.state import ArmRecord, ComparisonRecord, EvaluationCost, LadderState, StageRecord
from tunegate.train.qlora import TrainResult

if TYPE_CHECKING:
    from tunegate.state import Check


@dataclass
class RunOptions:
    stage: int | None = None
    start: int | None = None
    until: int | None = None
    force: set[int] = field(default_factory=set)


@dataclass
class StageOutcome:
    """What one stage of this climb ended with (its record in the state holds more)."""

    index: int
    name: str
    verdict: str
    gates: list[GateResult]
    forced: bool
    seconds: float


@dataclass
class _ArmJob:
    """One arm of one stage: what it trains, validates and tests on, and where it writes."""

    stage: Stage
    name: str
    role: str
    model_dir: Path
    arm_dir: Path
    train_items: list[Item]
    val_items: list[Item]
    test_items: list[Item]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_dir_for(plan: Plan) -> RunDir:
    return RunDir(plan.output_dir / plan.name)


def stage_passed(plan: Plan, state: LadderState, index: int) -> bool:
    record = state.stage(plan.stages[index].name)
    return bool(record and record.verdict == "PASS" and record.hash == plan.stage_hash(index))


def stage_range(plan: Plan, state: LadderState, opts: RunOptions) -> tuple[int, int]:
    last = len(plan.stages) - 1
    for flag, value in (
        ("--stage", opts.stage),
        ("--from", opts.start),
        ("--until", opts.until),
        *(("--force-stage", f) for f in opts.force),
    ):
        if value is not None and not 0 <= value <= last:
            raise UserError(f"{flag} {value}: the plan has stages 0–{last}")
    if opts.stage is not None:
        return opts.stage, opts.stage
    if opts.start is not None:
        start = opts.start
    else:
        start = next(
            (i for i in range(len(plan.stages)) if not stage_passed(plan, state, i)), last + 1
        )
    return start, last if opts.until is None else opts.until


def _selection_items(exp: Experiment, role: str, sel: Selection, ids: list[str]) -> list[Item]:
    if sel.builtin:
        lookup = {i.id: i for i in sel.builtin}
        return [lookup[i] for i in ids]
    arm = exp.arm(role)
    return [arm[i] for i in ids]


def resolve_selection(plan: Plan, exp: Experiment, stage: Stage) -> Selection:
    spec = stage.data
    if spec.selection in ("head", "split") and spec.scenarios is None:
        # The seed runs stages 2 and 3 on one scenario (React); ours is the plan's pilot.
        pilot = plan.pilot_scenario or exp.scenarios[0]
        spec = spec.model_copy(update={"scenarios": [pilot]})
    sel = select(exp.ordered(), spec, plan.seed)
    if stage.evaluation.limit is not None:
        sel.test = sel.test[: stage.evaluation.limit]
    if not sel.train:
        raise UserError(
            f"stages.{stage.name}.data: the selection has no training items", where=plan.source
        )
    if stage.evaluation.mode == "full" and not sel.test:
        raise UserError(
            f"stages.{stage.name}.data: the selection has no test items to evaluate",
            where=plan.source,
        )
    return sel


def power_notes(plan: Plan, exp: Experiment) -> dict[int, list[str]]:
    """What each evaluating stage can detect at its number of test items (`tunegate.power`),
    with its p-value gate flagged when no exact paired test can meet it at that n."""
    from tunegate.power import stage_power

    notes: dict[int, list[str]] = {}
    for i, stage in enumerate(plan.stages):
        if stage.kind != "train" or stage.evaluation.mode != "full":
            continue
        n = len(resolve_selection(plan, exp, stage).test)
        alpha = stage.gates.max_p_value or 0.05
        power = stage_power(n, alpha=alpha)
        stage_notes = [power.note]
        binary = metric_spec(stage.evaluation.primary_metric).kind == "binary"
        gain = stage.gates.min_improvement
        testable = stage.gates.max_p_value is not None and stage.gates.improvement == "absolute"
        if binary and gain and testable and 0 < gain < 1:
            from tunegate.power import binary_n

            stage_notes.append(
                f"the gate's +{gain:.0%} needs ≥ {binary_n(gain, alpha)} paired items for 80% "
                "power (best case: the experiment breaks no item)"
            )
        if stage.gates.max_p_value is not None and binary and not power.feasible:
            stage_notes.insert(
                0,
                f"gate p < {alpha:g} cannot be met with {n} test items: the smallest exact "
                f"paired p is {power.min_p:.3g}",
            )
        notes[i] = stage_notes
    return notes


def _duration(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.1f} h"


class Ladder:
    def __init__(self, plan: Plan, exp: Experiment, console: Console) -> None:
        self.plan = plan
        self.exp = exp
        self.console = console
        self.run = run_dir_for(plan)
        self.state = LadderState()
        self.tracker: Any = None
        self.blocked = False  # a stage was not started because the one before did not pass
        self.bars = Bars(console)  # on a terminal only; started for the climb

    # --- bookkeeping -------------------------------------------------------------------
    def _save(self) -> None:
        self.run.save_state(self.state)

    def _say(self, text: str) -> None:
        self.console.print(text)

    def _open(self) -> None:
        from tunegate.tracking import Tracker

        self.state = state = self.run.load_state()
        state.plan_name = state.plan_name or self.plan.name
        state.created = state.created or now()
        state.plan_hash = plan_hash(self.plan)
        # Content hashes of each arm's whole data set, as loaded (the report's reproducibility).
        state.data_hashes = {
            name: items_hash(list(self.exp.arm(arm.role).values()))
            for name, arm in self.plan.arms.items()
        }
        # One thread count and deterministic kernels for everything this process computes
        # (training, generation), and the record of what ran, for comparing machines.
        pin(self.plan.training.threads, deterministic=self.plan.training.deterministic)
        machine = machine_record()
        state.machine = machine
        self.run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run.root / "plan.json", dump_plan(self.plan))  # passwords ***
        self.tracker = Tracker.for_plan(self.plan)
        state.tracking_uri = redact(self.tracker.uri)  # state.json is shared
        state.mlflow_experiment_id = self.tracker.experiment_id
        state.mlflow_parent = self.tracker.start(
            f"ladder:{self.plan.name}",
            run_id=state.mlflow_parent,
            tags={"tunegate.level": "ladder", "tunegate.plan": self.plan.name},
        )
        self.tracker.params(
            state.mlflow_parent,
            {
                "plan_hash": state.plan_hash,
                "seed": self.plan.seed,
                "model": self.plan.model.name,
                "method": self.plan.quantization.method,
                **machine.params(),  # the machine that began the climb (each arm has its own)
            },
        )
        self._say(f"[dim]Machine: {escape(machine.summary())}[/]")
        self._save()

    # --- the climb ---------------------------------------------------------------------
    def climb(self, opts: RunOptions) -> list[StageOutcome]:
        state = self.run.load_state()  # read-only look first: validate before writing
        start, end = stage_range(self.plan, state, opts)
        selections = {
            i: resolve_selection(self.plan, self.exp, self.plan.stages[i])
            for i in range(start, end + 1)
            if self.plan.stages[i].kind == "train"
        }
        if start > end:
            self._say("[green]Every stage has passed.[/] Use --from N to run a stage again.")
            return []
        self._open()
        with self.bars:
            return self._climb(opts, start, end, selections)

    def _climb(
        self, opts: RunOptions, start: int, end: int, selections: dict[int, Selection]
    ) -> list[StageOutcome]:
        for index, notes in power_notes(self.plan, self.exp).items():
            for note in notes:
                if start <= index <= end and "cannot be met" in note:
                    self._say(f"[yellow]Stage {index} ({self.plan.stages[index].name}):[/] {note}")
        records: list[StageOutcome] = []
        for index in range(start, end + 1):
            stage = self.plan.stages[index]
            forced = False
            if index > 0 and not stage_passed(self.plan, self.state, index - 1):
                prev = self.plan.stages[index - 1].name
                prev_verdict = self.state.verdict(prev) or "not run"
                if index not in opts.force:
                    self._say(
                        f"[red]Stage {index} ({stage.name}) not started:[/] stage "
                        f"{index - 1} ({prev}) is {prev_verdict}. Fix it, or pass "
                        f"--force-stage {index} to override (recorded)."
                    )
                    self.blocked = True
                    break
                forced = True
                self._say(
                    f"[yellow]Override:[/] stage {index} forced although stage "
                    f"{index - 1} ({prev}) is {prev_verdict}."
                )
            if index == len(self.plan.stages) - 1 and index > 0:
                unticked = self._preflight(index, selections)
                if unticked and index not in opts.force:
                    reason = "pre-flight: " + "; ".join(unticked)
                    self._say(
                        f"[red]Stage {index} ({stage.name}) not started:[/] the pre-flight "
                        f"checklist has {len(unticked)} unticked box(es). Fix them, or pass "
                        f"--force-stage {index} to override (recorded)."
                    )
                    records.append(self._gate_fail(index, stage, "preflight", reason))
                    break
                if unticked:
                    self._say(f"[yellow]Override:[/] pre-flight boxes unticked: {unticked}")
            over = self._over_budget(index, selections)
            if over is not None:
                self._say(f"[red]Stage {index} ({stage.name}) not started, over budget:[/] {over}")
                records.append(self._gate_fail(index, stage, "budget", over))
                break
            record = self._run_stage(index, stage, selections.get(index), forced)
            records.append(record)
            if stage.kind == "train":
                self._measure(index, stage, selections)
            if record.verdict != "PASS":
                break
            if index < end:
                self._report()  # after every stage; the last one's is written below
        if self.tracker:
            self._report()
            self.tracker.end(self._parent_run)
        return records

    def _report(self) -> None:
        """Write the report (HTML, Markdown, figures) into the run directory and log it to the
        parent run, with a summary as the run's MLflow description. A report that cannot be
        written is said, and does not stop the climb: the state and the verdicts are written."""
        from tunegate.report import REPORT_DIR, mlflow_summary, write

        try:
            write(self.run.root)
            parent = self._parent_run
            self.tracker.artifact(parent, self.run.root / REPORT_DIR, REPORT_DIR)
            self.tracker.tags(parent, {"mlflow.note.content": mlflow_summary(self.run.root)})
        except Exception as err:
            self._say(f"[yellow]Report not written:[/] {type(err).__name__}: {escape(str(err))}")

    @property
    def _parent_run(self) -> str:
        assert self.state.mlflow_parent is not None, "tracking is opened before any stage"
        return self.state.mlflow_parent

    def _stage_state(self, index: int, stage: Stage) -> StageRecord:
        stages = self.state.stages
        record = stages.get(stage.name)
        h = self.plan.stage_hash(index)
        if record and record.hash != h:
            # Its configuration changed: outputs of the old configuration must not be reused.
            shutil.rmtree(self.run.stage_dir(index, stage.name), ignore_errors=True)
            record = None
        if record is None:
            record = StageRecord(index=index, hash=h)
            stages[stage.name] = record
        return record

    def _measured(self, selections: dict[int, Selection]) -> list[tuple[StageRecord, int, int]]:
        """(stage record, samples per arm, effective batch) of every training stage measured."""
        from tunegate.forecast import effective_batch, samples_per_arm

        out = []
        for i, stage in enumerate(self.plan.stages):
            record = self.state.stage(stage.name)
            sel = selections.get(i) or (
                resolve_selection(self.plan, self.exp, stage) if stage.kind == "train" else None
            )
            if record is not None and record.actual is not None and sel is not None:
                out.append(
                    (
                        record,
                        samples_per_arm(self.plan, stage, len(sel.train)),
                        effective_batch(self.plan, stage),
                    )
                )
        return out

    def _measure(self, index: int, stage: Stage, selections: dict[int, Selection]) -> None:
        """Record what the stage took; forecast the stages still ahead from all measured."""
        from tunegate.forecast import actual, forecast

        record = self.state.stages[stage.name]
        sel = selections[index]
        record.actual = actual(self.plan, stage, record, len(sel.train))
        numbers = {
            f"actual.{k}": float(v)
            for k, v in record.actual.to_json().items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.tracker.metrics(record.mlflow_run, numbers)
        measured = self._measured(selections)
        ahead = {}
        for i in range(index + 1, len(self.plan.stages)):
            later = self.plan.stages[i]
            if later.kind != "train":
                continue
            later_sel = selections.get(i) or resolve_selection(self.plan, self.exp, later)
            f = forecast(self.plan, later, len(later_sel.train), measured)
            if f is None:
                continue
            ahead[later.name] = f
            # Step = the measuring stage: the MLflow UI shows the forecast settling stage by stage.
            self.tracker.metrics(
                self._parent_run,
                {
                    f"forecast.{later.name}.hours": f.hours,
                    f"forecast.{later.name}.low_hours": f.low_hours,
                    f"forecast.{later.name}.high_hours": f.high_hours,
                    f"forecast.{later.name}.usd": f.usd,
                },
                index,
            )
            self._say(
                f"  forecast stage {i} ({later.name}): {_duration(f.hours)} "
                f"({_duration(f.low_hours)}–{_duration(f.high_hours)}), ${f.usd:,.2f}; "
                f"plan estimate {_duration(f.estimate_hours)}, ${f.estimate_usd:,.2f} "
                f"[{f.basis}]"
            )
        # Kept per measuring stage: the forecast made after the pilot is what the last stage is
        # judged against (docs/benchmarks.md reports its error).
        self.state.forecasts[stage.name] = ahead
        self._save()

    def _over_budget(self, index: int, selections: dict[int, Selection]) -> str | None:
        """Why stage `index` must not start: what is spent plus its forecast (or, before any
        measurement, its plan estimate) crosses the plan's budget. None when it fits."""
        budget = self.plan.budget
        if budget.usd is None and budget.hours is None:
            return None
        from tunegate.costs import stage_cost
        from tunegate.forecast import budget_need, forecast

        stage = self.plan.stages[index]
        spent_hours, spent_usd = self.state.spent()
        predicted = None
        if stage.kind == "train":
            sel = selections.get(index) or resolve_selection(self.plan, self.exp, stage)
            predicted = forecast(self.plan, stage, len(sel.train), self._measured(selections))
        if predicted is not None:
            hours, usd, basis = budget_need(predicted)
        else:
            c = stage_cost(self.plan, index, stage)
            usd, hours, basis = c.usd, c.hours, "plan estimate"
        if budget.usd is not None and spent_usd + usd > budget.usd:
            return (
                f"${spent_usd:,.2f} spent + ${usd:,.2f} {basis} for this stage "
                f"> ${budget.usd:,.2f} budget"
            )
        if budget.hours is not None and spent_hours + hours > budget.hours:
            return (
                f"{_duration(spent_hours)} spent + {_duration(hours)} {basis} for this "
                f"stage > {_duration(budget.hours)} budget"
            )
        return None

    def _preflight(self, index: int, selections: dict[int, Selection]) -> list[str]:
        """Print the seed's pre-flight checklist for the last stage; the unticked boxes."""
        from tunegate.forecast import forecast
        from tunegate.preflight import checklist

        last = self.plan.stages[index]
        predicted = None
        if last.kind == "train":
            sel = selections.get(index) or resolve_selection(self.plan, self.exp, last)
            predicted = forecast(self.plan, last, len(sel.train), self._measured(selections))
        boxes = checklist(self.plan, self.state, predicted)
        self.state.preflight = boxes
        self._save()
        self._say(f"\n[bold]Pre-flight checklist[/] (before stage {index}, {last.name}):")
        for b in boxes:
            mark = "[green]✓[/]" if b.ticked else "[red]✗[/]"
            self._say(f"  {mark} {escape(b.label)} — {escape(b.evidence)}")
        return [b.label for b in boxes if not b.ticked]

    def _gate_fail(self, index: int, stage: Stage, name: str, reason: str) -> StageOutcome:
        """A stage that did not start: FAIL on a health gate (budget, pre-flight), recorded."""
        gate = GateResult(name, False, "health", reason)
        record = self._stage_state(index, stage)
        record.status, record.verdict, record.finished = "done", "FAIL", now()
        record.gates = [gate]
        self._save()
        return StageOutcome(index, stage.name, "FAIL", [gate], False, 0.0)

    def _run_stage(
        self, index: int, stage: Stage, sel: Selection | None, forced: bool
    ) -> StageOutcome:
        started = time.perf_counter()
        record = self._stage_state(index, stage)
        record.status, record.started, record.verdict = "running", now(), None
        record.forced = forced
        if forced:
            record.forced_reason = (
                f"stage {index - 1} was {self.state.verdict(self.plan.stages[index - 1].name)}"
            )
        stage_dir = self.run.stage_dir(index, stage.name)
        stage_dir.mkdir(parents=True, exist_ok=True)
        record.mlflow_run = self.tracker.start(
            f"stage {index}: {stage.name}",
            parent=self._parent_run,
            run_id=record.mlflow_run,
            tags={
                "tunegate.level": "stage",
                "tunegate.ladder": self.plan.name,
                "tunegate.stage": stage.name,
                "tunegate.stage_index": str(index),
                "tunegate.forced": str(forced).lower(),
            },
        )
        self._save()
        self._say(f"\n[bold]Stage {index} · {stage.name}[/] — {stage.description}")
        if stage.kind == "environment":
            evidence, record.checks = self._environment(stage_dir)  # the pre-flight reads them
        else:
            assert sel is not None
            evidence = self._train_stage(index, stage, sel, stage_dir, record)
        verdict, gates = evaluate_gates(stage.gates, evidence)
        seconds = time.perf_counter() - started
        record.status, record.verdict, record.finished = "done", verdict, now()
        record.seconds, record.gates = round(seconds, 2), gates
        atomic_write_json(
            stage_dir / "verdict.json",
            {
                "stage": stage.name,
                "index": index,
                "verdict": verdict,
                "forced": forced,
                "gates": [asdict(g) for g in gates],
                "seconds": record.seconds,
            },
        )
        run_id = record.mlflow_run
        self.tracker.metrics(run_id, {"seconds": seconds, "passed": float(verdict == "PASS")})
        self.tracker.tags(run_id, {"tunegate.verdict": verdict})
        self.tracker.artifact(run_id, stage_dir / "verdict.json")
        self.tracker.end(run_id, "FINISHED" if verdict == "PASS" else "FAILED")
        self._save()
        self._print_verdict(index, stage, verdict, gates, forced)
        return StageOutcome(index, stage.name, verdict, gates, forced, seconds)

    def _print_verdict(
        self, index: int, stage: Stage, verdict: str, gates: list[GateResult], forced: bool
    ) -> None:
        color = {"PASS": "green", "INVESTIGATE": "yellow", "FAIL": "red"}[verdict]
        for g in gates:
            mark = "[green]✓[/]" if g.passed else "[red]✗[/]"
            self._say(f"  {mark} {g.name}: {escape(g.evidence)}")
        self._say(f"  → [bold {color}]{verdict}[/]" + (" (forced)" if forced else ""))
        if verdict != "PASS" and stage.recovery:
            self._say("  Recovery (from the plan):")
            for step, action in enumerate(stage.recovery, 1):
                self._say(f"    {step}. {escape(action)}")

    # --- stage kinds -------------------------------------------------------------------
    def _environment(self, stage_dir: Path) -> tuple[StageEvidence, list[Check]]:
        from tunegate.doctor import run_checks

        checks = run_checks(self.plan)
        as_json = [c.to_json() for c in checks]
        atomic_write_json(stage_dir / "checks.json", as_json)
        for c in checks:
            color = {"PASS": "green", "WARN": "yellow", "FAIL": "red"}[c.status]
            fix = f" — {c.fix}" if c.fix and c.status != "PASS" else ""
            self._say(f"  [{color}]{c.status:<4}[/] {c.name}: {escape(str(c.value) + fix)}")
        return StageEvidence(arms={}, environment=as_json), checks

    def _train_stage(
        self, index: int, stage: Stage, sel: Selection, stage_dir: Path, record: StageRecord
    ) -> StageEvidence:
        from tunegate.train.tiny import resolve_model

        plan = self.plan
        model_dir = resolve_model(plan.model.name)
        arm_names = stage.arms or [plan.arm_name("control"), plan.arm_name("experiment")]
        atomic_write_json(
            stage_dir / "selection.json",
            {
                **sel.as_dict(),
                "hashes": {
                    name: {
                        split: items_hash(
                            _selection_items(self.exp, plan.arms[name].role, sel, ids)
                        )
                        for split, ids in sel.as_dict().items()
                    }
                    for name in arm_names
                },
            },
        )
        evidence = StageEvidence(arms={})
        evidence.data_checks = self._data_checks(stage, sel, stage_dir, arm_names, model_dir)
        if any(c["verdict"] == "fail" for c in evidence.data_checks):
            return evidence  # nothing trains on data that failed its checks
        generations: dict[str, Generations] = {}
        for name in arm_names:
            role = plan.arms[name].role
            arm_ev, gens = self._arm(index, stage, sel, stage_dir, record, name, role, model_dir)
            evidence.arms[name] = arm_ev
            generations[name] = gens
        if stage.evaluation.mode == "full" and all(a.trained for a in evidence.arms.values()):
            self._score(stage, sel, stage_dir, arm_names, generations, evidence, record)
        for name, arm_ev in evidence.arms.items():
            status = "FAILED" if arm_ev.error or not arm_ev.trained else "FINISHED"
            self.tracker.end(record.arms[name].mlflow_run, status)
        return evidence

    def _data_checks(
        self, stage: Stage, sel: Selection, stage_dir: Path, arm_names: list[str], model_dir: Path
    ) -> list[dict[str, Any]]:
        """Leakage and token lengths of this stage's selection, per arm, before training."""
        from transformers import AutoTokenizer

        from tunegate.data.checks import leakage, token_lengths

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        results = []
        for name in arm_names:
            role = self.plan.arms[name].role
            train = _selection_items(self.exp, role, sel, sel.train)
            val = _selection_items(self.exp, role, sel, sel.val)
            test = _selection_items(self.exp, role, sel, sel.test)
            checks = [
                token_lengths(
                    list({i.id: i for i in train + val}.values()),  # micro: val = train
                    tokenizer,
                    self.plan.model.max_length,
                    on_truncation=stage.checks.truncation,
                )
            ]
            if test and stage.checks.leakage != "off":
                leak = leakage(train, test, stage.checks.leakage_threshold)
                if leak.verdict == "fail" and stage.checks.leakage == "warn":
                    leak.verdict = "warn"
                checks.append(leak)
            for check in checks:
                check.scope = name
                results.append(check.to_json())
                if check.verdict != "ok":
                    color = "red" if check.verdict == "fail" else "yellow"
                    self._say(
                        f"  [{color}]{check.verdict.upper()}[/] {name} {check.name}: "
                        f"{check.summary}"
                    )
                    for message in check.messages[:5]:
                        self._say(f"      {escape(message)}")
        atomic_write_json(stage_dir / "data_checks.json", results)
        return results

    def _arm(
        self,
        index: int,
        stage: Stage,
        sel: Selection,
        stage_dir: Path,
        record: StageRecord,
        name: str,
        role: str,
        model_dir: Path,
    ) -> tuple[ArmEvidence, Generations]:
        """Train one arm (or reuse its complete adapter), reload it from disk, smoke-generate
        and generate for the evaluation."""
        arm = _ArmJob(
            stage=stage,
            name=name,
            role=role,
            model_dir=model_dir,
            arm_dir=stage_dir / name,
            train_items=_selection_items(self.exp, role, sel, sel.train),
            val_items=_selection_items(self.exp, role, sel, sel.val),
            test_items=_selection_items(self.exp, role, sel, sel.test),
        )
        arm_state = record.arms.setdefault(name, ArmRecord())
        arm_state.mlflow_run = self.tracker.start(
            f"stage {index}: {stage.name} / {name}",
            parent=record.mlflow_run,
            run_id=arm_state.mlflow_run,
            tags={
                "tunegate.level": "arm",
                "tunegate.ladder": self.plan.name,
                "tunegate.stage": stage.name,
                "tunegate.stage_index": str(index),
                "tunegate.arm": name,
                "tunegate.role": role,
            },
        )
        ev = ArmEvidence()
        recorded = arm_state.train
        adapter = Path(recorded.adapter_dir) if recorded else arm.arm_dir / "adapter"
        # tunegate.json is written last: its presence means the adapter is complete.
        if recorded and arm_state.status == "done" and (adapter / "tunegate.json").is_file():
            self._say(f"  {name}: trained adapter recorded at {adapter} — not re-training")
            result = recorded
        else:
            trained = self._train(arm, arm_state)
            if isinstance(trained, str):
                ev.error = trained
                return ev, Generations()
            result = trained
        ev.trained = True
        ev.steps = result.steps
        ev.losses = [(step, loss) for step, loss in result.losses]
        ev.eval_loss_before = result.eval_loss_before
        ev.eval_loss_after = result.eval_loss_after
        ev.linear4bit_layers = result.linear4bit_layers
        return ev, self._reload_and_generate(arm, Path(result.adapter_dir), ev)

    def _train(self, arm: _ArmJob, arm_state: ArmRecord) -> TrainResult | str:
        """Train the arm, recording it in the state and MLflow; the error when it crashed."""
        from tunegate.train.qlora import train_arm

        plan, stage, name = self.plan, arm.stage, arm.name
        run_id = arm_state.mlflow_run
        training = plan.stage_training(stage)
        arm_state.status = "training"
        self._save()
        self.tracker.params(
            run_id,
            {
                **{f"training.{k}": v for k, v in training.model_dump().items()},
                "train_items": len(arm.train_items),
                "val_items": len(arm.val_items),
                "train_data_hash": items_hash(arm.train_items),
                "seed": plan.seed,
                "method": plan.quantization.method,
                "model": plan.model.name,
            },
        )
        resuming = any((arm.arm_dir / "checkpoints").glob("checkpoint-*"))
        self._say(
            f"  {name}: training on {len(arm.train_items)} items"
            + (" (resuming from its last checkpoint)" if resuming else "")
        )
        sink = self.tracker.step_sink(run_id)
        try:
            if (stage.executor or plan.executor.kind) == "docker":
                result = self._train_in_docker(
                    stage,
                    arm.arm_dir,
                    name,
                    arm.model_dir,
                    training,
                    arm.train_items,
                    arm.val_items,
                    sink,
                )
            else:
                result = train_arm(
                    model_dir=arm.model_dir,
                    train_items=arm.train_items,
                    val_items=arm.val_items,
                    out_dir=arm.arm_dir,
                    training=training,
                    quant=plan.quantization,
                    lora=plan.lora,
                    max_length=plan.model.max_length,
                    seed=plan.seed,
                    metric_sink=sink,
                    on_step=self.bars.training(f"{name}: train"),
                    allow_truncation=stage.checks.truncation == "warn",
                    provenance={"plan_hash": plan_hash(plan), "stage": stage.name, "arm": name},
                )
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # a crash is a FAIL verdict with its reason, not a traceback
            error = f"{type(err).__name__}: {err}"
            arm_state.status, arm_state.error = "failed", error
            arm.arm_dir.mkdir(parents=True, exist_ok=True)
            (arm.arm_dir / "error.txt").write_text(traceback.format_exc())
            self._save()
            self._say(f"  [red]{name}: training failed:[/] {escape(error)}")
            return error
        arm_state.status, arm_state.train, arm_state.error = "done", result, None
        self._save()
        self._log_training(name, run_id, result)
        return result

    def _log_training(self, name: str, run_id: str | None, result: TrainResult) -> None:
        first, last = result.losses[0][1], result.losses[-1][1]
        self._say(
            f"  {name}: {result.steps} steps in {result.seconds:.1f} s, loss "
            f"{first:.3f} → {last:.3f}, {result.linear4bit_layers} Linear4bit layers"
        )
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

    def _reload_and_generate(self, arm: _ArmJob, adapter: Path, ev: ArmEvidence) -> Generations:
        """Reload the adapter from disk (proves the save, and is what every later use of it
        does), smoke-generate, and generate the test items when the stage evaluates."""
        from tunegate.generate import TransformersBackend, generate, load_for_inference

        stage = arm.stage
        try:
            model, tokenizer = load_for_inference(arm.model_dir, adapter, self.plan.quantization)
            ev.saved_and_reloaded = True
        except Exception as err:
            ev.error = f"reload failed: {type(err).__name__}: {err}"
            return Generations()
        smoke_prompt = (arm.val_items or arm.train_items)[0].prompt
        ev.smoke_generation = generate(
            model, tokenizer, [smoke_prompt], max_new_tokens=stage.evaluation.max_new_tokens
        )[0]
        self._say(
            f"  {arm.name}: smoke generation {escape(repr(ev.smoke_generation.strip()[:60]))}"
        )
        if stage.evaluation.mode != "full":
            return Generations()
        settings = Settings.from_config(stage.evaluation, self.plan.seed)
        total = len(arm.test_items) * (1 + (settings.samples if settings.wants_samples else 0))
        return generate_arm(
            TransformersBackend(model, tokenizer, name=arm.name),
            arm.test_items,
            settings,
            self.bars.counter(f"{arm.name}: generate", total),
        )

    def _train_in_docker(
        self,
        stage: Stage,
        arm_dir: Path,
        name: str,
        model_dir: Path,
        training: Any,
        train_items: list[Item],
        val_items: list[Item],
        sink: Any,
    ) -> TrainResult:
        """Train one arm in the training container; its results come back through /work."""
        from tunegate.tracking import tracking_uri
        from tunegate.train.docker import container_name, docker_command, run_docker

        plan = self.plan
        data_dir = arm_dir / "data"
        write_items(data_dir / "train.jsonl", train_items)
        if val_items:
            write_items(data_dir / "val.jsonl", val_items)
        run = docker_command(
            plan.executor,
            name=container_name(plan.name, stage.name, name),
            model_name=name,
            arm_dir=arm_dir,
            model_dir=model_dir,
            train_file=data_dir / "train.jsonl",
            val_file=data_dir / "val.jsonl" if val_items else None,
            training=training,
            quant=plan.quantization,
            lora=plan.lora,
            max_length=plan.model.max_length,
            seed=plan.seed,
            tracking_uri=tracking_uri(plan),
        )
        (arm_dir / "docker-command.json").write_text(json.dumps(run.argv, indent=1))
        self._say(f"  {name}: training in container {run.name} ({plan.executor.image})")
        result = TrainResult.from_json(run_docker(run, arm_dir / "train.log"))
        sink([({"loss": loss}, step) for step, loss in result.losses])
        return result

    def _score(
        self,
        stage: Stage,
        sel: Selection,
        stage_dir: Path,
        arm_names: list[str],
        generations: dict[str, Generations],
        evidence: StageEvidence,
        record: StageRecord,
    ) -> None:
        ev_cfg = stage.evaluation
        settings = Settings.from_config(ev_cfg, self.plan.seed)
        judge_cfg = self.plan.judge
        if judge_cfg is not None and self.plan.budget.usd is not None:
            # The judge stops paying once the climb's money is spent, not only its own cap.
            _, spent = self.state.spent()
            left = max(self.plan.budget.usd - spent, 0.0)
            cap = left if judge_cfg.budget_usd is None else min(left, judge_cfg.budget_usd)
            judge_cfg = judge_cfg.model_copy(update={"budget_usd": cap})
        to_score = [
            ArmToScore(
                name,
                self.plan.arms[name].role,
                _selection_items(self.exp, self.plan.arms[name].role, sel, sel.test),
                generations[name],
            )
            for name in arm_names
        ]
        done = evaluate_arms(to_score, settings, judge_cfg, stage_dir, self.bars.ticker)
        rows = done.rows
        for scored in to_score:
            arm_rows = [r for r in rows if r["arm"] == scored.name]
            arm = evidence.arms[scored.name]
            arm.expected_items = len(scored.items)
            arm.failed = metric_gaps(arm_rows, ev_cfg.metrics, "failed")
            arm.not_applicable = metric_gaps(arm_rows, ev_cfg.metrics, "not_applicable")
        for m in ev_cfg.metrics:  # a metric with a value for no item: say why, not a mean
            if all(r["metrics"][m]["value"] is None for r in rows):
                arms = evidence.arms.values()
                failed = any(m in a.failed for a in arms)
                gaps = [(a.failed if failed else a.not_applicable).get(m) for a in arms]
                reasons = "; ".join(sorted({g.reasons for g in gaps if g is not None}))
                evidence.no_value[m] = f"{'failed' if failed else 'not applicable'}: {reasons}"
        record.evaluation_cost = EvaluationCost.model_validate(done.costs)

        # One analysis for the ladder and `tunegate stats`: the same rows give the same numbers.
        analysis = analyze(
            rows_from_results(rows),
            primary=ev_cfg.primary_metric,
            metrics=ev_cfg.metrics,
            binary={m: metric_spec(m).kind == "binary" for m in ev_cfg.metrics},
            tests=dict(ev_cfg.tests),
            seed=self.plan.seed,
        )
        evidence.primary = analysis.primary
        evidence.per_scenario = analysis.per_scenario
        evidence.secondary = analysis.secondary
        summary = analysis.to_json()
        summary["no_value"] = dict(evidence.no_value)  # metric → why (the report shows it)
        if analysis.primary.d_z is not None and analysis.primary.d_z != 0:
            # A pilot's observed effect sizes the next stage (optimistic: see docs/power.md).
            from tunegate.power import n_from_pilot

            needed = n_from_pilot(
                abs(analysis.primary.d_z), stage.gates.max_p_value or 0.05, comparisons=1
            )
            summary["n_for_observed_effect"] = needed
            self._say(
                f"  power: detecting the observed d_z = {analysis.primary.d_z:.2f} with 80% "
                f"power needs {needed} paired test items (this stage had "
                f"{analysis.primary.n})"
            )
        atomic_write_json(stage_dir / "comparison.json", summary)
        record.comparison = ComparisonRecord.model_validate(summary)
        self._log_comparison(ev_cfg.metrics, rows, evidence, record)

    def _log_comparison(
        self,
        metrics: list[str],
        rows: list[dict[str, Any]],
        evidence: StageEvidence,
        record: StageRecord,
    ) -> None:
        """Each arm's means and the primary comparison to MLflow; the comparisons printed."""
        for name in evidence.arms:
            # A metric with no value is not logged: a 0 there would be made up.
            got = {
                m: [
                    v
                    for r in rows
                    if r["arm"] == name and (v := r["metrics"][m]["value"]) is not None
                ]
                for m in metrics
            }
            means = {m: sum(vs) / len(vs) for m, vs in got.items() if vs}
            self.tracker.metrics(record.arms[name].mlflow_run, means)
        p = evidence.primary
        assert p is not None, "called once the stage's analysis is in the evidence"
        if p.n:
            self.tracker.metrics(
                record.mlflow_run,
                {
                    f"{p.metric}.control": p.control_mean,
                    f"{p.metric}.experiment": p.experiment_mean,
                    f"{p.metric}.difference": p.difference,
                    **({f"{p.metric}.p_value": p.p_value} if p.p_value is not None else {}),
                },
            )
        self._say(
            escape(
                f"  {comparison_line(p, evidence.no_value.get(p.metric))}, {p.test}, "
                f"p = {p.p_value if p.p_value is None else f'{p.p_value:.4g}'}"
                + (f", d_z = {p.d_z:.2f}" if p.d_z is not None else "")
            )
        )
        for m, c in evidence.secondary.items():
            self._say(f"  {escape(comparison_line(c, evidence.no_value.get(m)))}")
