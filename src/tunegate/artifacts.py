"""What a finished training run leaves in the run directory, and the proof it is still whole.

Each arm that finishes training records a manifest in the state (`ArmRecord.manifest`): every
file of its adapter (and merged model) with its size and sha256, relative to the arm's own
directory, so a copied or moved run directory still matches. Reusing an arm checks every byte: a
missing or changed file means that arm trains again, and the console says which file. Deciding
whether a passed stage still stands checks that every file is there with its size: cheap for
adapters of any size, and enough to never call a stage passed whose artifacts are gone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tunegate.plan import Plan
from tunegate.rundir import RunDir
from tunegate.state import ArmRecord, FileEntry, LadderState, StageRecord

ADAPTER = "adapter"  # an arm's adapter, inside its directory (where training saves it)
MERGED = "merged"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def manifest(arm_dir: Path) -> dict[str, FileEntry]:
    """Every file of the arm's adapter and merged model, by its path inside `arm_dir`."""
    entries = {}
    for root in (arm_dir / ADAPTER, arm_dir / MERGED):
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if path.is_file():
                rel = path.relative_to(arm_dir).as_posix()
                entries[rel] = FileEntry(size=path.stat().st_size, sha256=_sha256(path))
    return entries


def arm_problem(arm_dir: Path, record: ArmRecord, *, full: bool) -> str | None:
    """Why the arm's recorded artifacts are not whole (None when they are): a file missing,
    of another size, or (`full`) with other bytes. A record from before manifests were kept
    is whole when its adapter's `tunegate.json`, written last, is there."""
    if not record.manifest:
        marker = arm_dir / ADAPTER / "tunegate.json"
        return None if marker.is_file() else f"{ADAPTER}/tunegate.json is missing"
    for rel, entry in record.manifest.items():
        path = arm_dir / rel
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != entry.size:
            return f"{rel} changed size ({entry.size} → {size} bytes)"
        if full and _sha256(path) != entry.sha256:
            return f"{rel} changed (its sha256 is not the one recorded)"
    return None


def stage_artifacts_problem(record: StageRecord, stage_dir: Path) -> str | None:
    """The first arm of a stage whose artifacts are gone or resized, and what is wrong."""
    for name, arm in record.arms.items():
        if arm.status != "done":
            continue
        problem = arm_problem(stage_dir / name, arm, full=False)
        if problem:
            return f"{name}'s {problem}"
    return None


def missing_artifacts(plan: Plan, state: LadderState, run: RunDir) -> dict[str, str]:
    """Per passed stage whose artifacts are not whole, what is wrong (the answer reads it)."""
    out = {}
    for i, stage in enumerate(plan.stages):
        record = state.stage(stage.name)
        if record is not None and record.verdict == "PASS":
            problem = stage_artifacts_problem(record, run.stage_dir(i, stage.name))
            if problem:
                out[stage.name] = problem
    return out
