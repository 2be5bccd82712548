"""The training stage: select data → check it → train each arm (same seed, same order) →
reload from disk and generate → evaluate both arms on the same items → paired comparison."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tunegate.data.items import items_hash
from tunegate.evaluate.pipeline import Generations
from tunegate.events import ArmFinished, DataChecked
from tunegate.gates import ArmEvidence, StageEvidence
from tunegate.ladder.arm import ArmJob, arm_jobs, finish_arm, run_arm, start_arm, train_or_reuse
from tunegate.ladder.context import Climb, StageRun
from tunegate.ladder.placement import Placement, placements
from tunegate.ladder.scoring import score
from tunegate.ladder.selection import selection_items
from tunegate.rundir import atomic_write_json
from tunegate.train.qlora import TrainResult


def run_training(climb: Climb, run: StageRun) -> StageEvidence:
    from tunegate.models import resolve_model

    plan, stage = climb.plan, run.stage
    model_dir = resolve_model(plan.model.name)
    arm_names = stage.arms or [plan.arm_name("control"), plan.arm_name("experiment")]
    _write_selection(climb, run, arm_names)
    evidence = StageEvidence(arms={})
    evidence.data_checks = _data_checks(climb, run, arm_names, model_dir)
    if any(c["verdict"] == "fail" for c in evidence.data_checks):
        return evidence  # nothing trains on data that failed its checks
    arms = arm_jobs(climb, run, arm_names, model_dir)
    generations: dict[str, Generations] = {}
    for name, (arm_ev, arm_gen) in _run_arms(climb, run, arms).items():
        evidence.arms[name], generations[name] = arm_ev, arm_gen
    if stage.evaluation.mode == "full" and all(a.trained for a in evidence.arms.values()):
        score(climb, run, arms, generations, evidence)
    for arm in arms:
        arm_ev = evidence.arms[arm.name]
        climb.events.emit(
            ArmFinished(arm.name, bool(arm_ev.trained and not arm_ev.error), arm.record)
        )
    return evidence


def _run_arms(
    climb: Climb, run: StageRun, arms: list[ArmJob]
) -> dict[str, tuple[ArmEvidence, Generations]]:
    """Every arm's evidence and answers. With one place to train, arm after arm; with several
    (two towers, two GPUs), their training at the same time, then each reloaded and answering
    here, one after the other."""
    kind = run.stage.executor or climb.plan.executor.kind
    places = placements(climb.plan.executor, kind)
    # The number the forecasts use too: one definition of it (`Plan.arms_at_once`).
    run.record.arms_at_once = climb.plan.arms_at_once(run.stage)
    if run.record.arms_at_once == 1:
        return {arm.name: run_arm(climb, arm, places[0]) for arm in arms}
    for arm in arms:
        start_arm(climb, arm)
    trained = _train_at_once(climb, arms, places)
    return {arm.name: finish_arm(climb, arm, trained[arm.name]) for arm in arms}


def _train_at_once(
    climb: Climb, arms: list[ArmJob], places: list[Placement]
) -> dict[str, TrainResult | str]:
    """Train the arms in their places, each place in a thread of its own taking its arms in
    turn (run k in place k mod n: a resume finds each arm where it left it)."""
    results: dict[str, TrainResult | str] = {}
    raised: list[BaseException] = []

    def work(place: Placement, queue: list[ArmJob]) -> None:
        try:
            for arm in queue:
                results[arm.name] = train_or_reuse(climb, arm, place)
        except BaseException as err:  # a full disk, a stop: said on the main thread
            raised.append(err)

    # Daemon threads: an interrupted climb exits without waiting for them; what trains on a
    # tower goes on there, and `tunegate run` reattaches to it.
    threads = [
        threading.Thread(target=work, args=(place, arms[k :: len(places)]), daemon=True)
        for k, place in enumerate(places)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.5)  # a join with a timeout lets Ctrl-C through
    if raised:
        raise raised[0]
    return results


def _write_selection(climb: Climb, run: StageRun, arm_names: list[str]) -> None:
    """The stage's item ids per split, and each arm's content hash of each split."""
    sel = climb.selection(run.index)
    hashes = {
        name: {
            split: items_hash(selection_items(climb.exp, climb.plan.arms[name].role, sel, ids))
            for split, ids in sel.as_dict().items()
        }
        for name in arm_names
    }
    atomic_write_json(run.stage_dir / "selection.json", {**sel.as_dict(), "hashes": hashes})


def _data_checks(
    climb: Climb, run: StageRun, arm_names: list[str], model_dir: Path
) -> list[dict[str, Any]]:
    """Leakage and token lengths of this stage's selection, per arm, before training."""
    from transformers import AutoTokenizer

    from tunegate.data.checks import leakage, token_lengths
    from tunegate.prompts import PromptFormat

    plan, stage, sel = climb.plan, run.stage, climb.selection(run.index)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fmt = PromptFormat.of(plan.model)  # lengths as training sees them, chat template included
    results = []
    for name in arm_names:
        role = plan.arms[name].role
        train = selection_items(climb.exp, role, sel, sel.train)
        val = selection_items(climb.exp, role, sel, sel.val)
        test = selection_items(climb.exp, role, sel, sel.test)
        checks = [
            token_lengths(
                fmt.render_items(tokenizer, list({i.id: i for i in train + val}.values())),
                # (micro: val = train)
                tokenizer,
                plan.model.max_length,
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
                climb.events.emit(
                    DataChecked(name, check.name, check.verdict, check.summary, check.messages)
                )
    atomic_write_json(run.stage_dir / "data_checks.json", results)
    return results
