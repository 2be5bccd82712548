"""Which stages a climb runs, and which items each training stage uses."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunegate.artifacts import stage_artifacts_problem
from tunegate.data.arms import Experiment
from tunegate.data.items import Item
from tunegate.data.select import Selection, select
from tunegate.errors import UserError
from tunegate.plan import Plan, Stage
from tunegate.registry import metric_spec
from tunegate.rundir import RunDir
from tunegate.state import LadderState


@dataclass
class RunOptions:
    stage: int | None = None
    start: int | None = None
    until: int | None = None
    force: set[int] = field(default_factory=set)
    command: str = ""  # as typed, for the run lock's holder (the process's arguments if empty)


def stage_passed(plan: Plan, state: LadderState, index: int, run: RunDir | None = None) -> bool:
    """The stage has a PASS of its own for the plan as it is now; with `run`, its arms'
    artifacts are also still there (a stage whose adapters are gone has not passed)."""
    stage = plan.stages[index]
    record = state.stage(stage.name)
    if not (record and record.verdict == "PASS" and record.hash == plan.stage_hash(index)):
        return False
    return run is None or stage_artifacts_problem(record, run.stage_dir(index, stage.name)) is None


def stage_range(
    plan: Plan, state: LadderState, opts: RunOptions, run: RunDir | None = None
) -> tuple[int, int]:
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
            (i for i in range(len(plan.stages)) if not stage_passed(plan, state, i, run)),
            last + 1,
        )
    return start, last if opts.until is None else opts.until


def selection_items(exp: Experiment, role: str, sel: Selection, ids: list[str]) -> list[Item]:
    """The items `ids` of one arm (by its role) of a selection."""
    if sel.builtin:
        lookup = {i.id: i for i in sel.builtin}
        return [lookup[i] for i in ids]
    arm = exp.arm(role)
    return [arm[i] for i in ids]


def resolve_selection(plan: Plan, exp: Experiment, stage: Stage) -> Selection:
    spec = stage.data
    if spec.selection in ("head", "split") and spec.scenarios is None:
        # The original plan runs stages 2 and 3 on one scenario (React); ours is the pilot.
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


def power_notes(plan: Plan, exp: Experiment, stages: range | None = None) -> dict[int, list[str]]:
    """What each evaluating stage (of `stages`, default all) can detect at its number of test
    items (`tunegate.power`), with its p-value gate flagged when no exact paired test can meet
    it at that n."""
    wanted = [
        i
        for i, stage in enumerate(plan.stages)
        if stage.kind == "train"
        and stage.evaluation.mode == "full"
        and (stages is None or i in stages)
    ]
    if not wanted:
        return {}  # scipy (half a second of imports) is not loaded for nothing
    from tunegate.power import binary_n, stage_power

    notes: dict[int, list[str]] = {}
    for i in wanted:
        stage = plan.stages[i]
        n = len(resolve_selection(plan, exp, stage).test)
        alpha = stage.gates.max_p_value or 0.05
        power = stage_power(n, alpha=alpha)
        stage_notes = [power.note]
        binary = metric_spec(stage.evaluation.primary_metric).kind == "binary"
        gain = stage.gates.min_improvement
        testable = stage.gates.max_p_value is not None and stage.gates.improvement == "absolute"
        if binary and gain and testable and 0 < gain < 1:
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
