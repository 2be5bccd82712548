"""The training stage: select data → check it → train each arm (same seed, same order) →
reload from disk and generate → evaluate both arms on the same items → paired comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunegate.data.items import items_hash
from tunegate.evaluate.pipeline import Generations
from tunegate.events import ArmFinished, DataChecked
from tunegate.gates import StageEvidence
from tunegate.ladder.arm import arm_jobs, run_arm
from tunegate.ladder.context import Climb, StageRun
from tunegate.ladder.scoring import score
from tunegate.ladder.selection import selection_items
from tunegate.rundir import atomic_write_json


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
    for arm in arms:
        evidence.arms[arm.name], generations[arm.name] = run_arm(climb, arm)
    if stage.evaluation.mode == "full" and all(a.trained for a in evidence.arms.values()):
        score(climb, run, arms, generations, evidence)
    for arm in arms:
        arm_ev = evidence.arms[arm.name]
        climb.events.emit(
            ArmFinished(arm.name, bool(arm_ev.trained and not arm_ev.error), arm.record)
        )
    return evidence


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
