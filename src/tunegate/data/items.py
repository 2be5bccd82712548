"""Items: one JSONL line each, paired across arms by `id`.

The loader reports every problem as `file:line: what is wrong` and raises once with all of them,
so a user fixes a file in one pass instead of one error per run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tunegate.errors import UserError

MAX_LINE_BYTES = 1_000_000  # a 1 MB line is almost surely a broken export, not a sample
DEFAULT_SCENARIO = "default"  # the scenario of the original plan's bare {prompt, completion} lines


class Item(BaseModel):
    """One training/evaluation sample. Arms share ids; they differ only as the experiment says."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    scenario: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    completion: str = Field(min_length=1)
    language: str = "python"
    tests: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Items made from one source (e.g. HumanEval/12 as a `python` and as a `bugfix` item) share
    # a group; a split keeps a group on one side, or the test set would leak into training.
    group: str | None = None

    @field_validator("id", "scenario", "prompt", "completion")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "item"
        # Our own validators' messages come as "Value error, ...": the prefix says nothing.
        msg = (
            "unknown field"
            if e["type"] == "extra_forbidden"
            else e["msg"].removeprefix("Value error, ").lower()
        )
        if e["type"] == "missing":
            msg = "missing required field"
        parts.append(f"'{field}': {msg}")
    return "; ".join(parts)


def derived_id(text: str, line_no: int) -> str:
    """Deterministic id for the original plan's bare {prompt, completion} lines, from line and
    `text`."""
    return f"L{line_no:05d}-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def load_items(path: Path, *, default_scenario: str | None = None) -> list[Item]:
    """Load and validate a JSONL file of items; raise UserError listing every problem."""
    if not path.is_file():
        raise UserError("dataset file does not exist", where=str(path))
    raw = path.read_bytes()
    problems: list[str] = []
    items: list[Item] = []
    seen: dict[str, int] = {}
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 BOM is harmless; Windows editors add it
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        if len(line) > MAX_LINE_BYTES:
            problems.append(f"{where}: line is {len(line):,} bytes (limit {MAX_LINE_BYTES:,})")
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(f"{where}: not UTF-8 (byte {err.start + 1})")
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(f"{where}: invalid JSON ({err.msg}, column {err.colno})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
            continue
        if "id" not in obj and set(obj) <= {"prompt", "completion"} and "prompt" in obj:
            # The original plan's shape: derive a stable id and a scenario. Both must pair across
            # arms, whose prompts differ by design: so the id hashes the completion (the arms share
            # it), and the scenario is a constant, not the file's name.
            obj = {
                **obj,
                "id": derived_id(str(obj.get("completion", "")), line_no),
                "scenario": default_scenario or DEFAULT_SCENARIO,
            }
        try:
            item = Item.model_validate(obj)
        except ValidationError as err:
            problems.append(f"{where}: {_describe(err)}")
            continue
        if item.id in seen:
            problems.append(f"{where}: duplicate id '{item.id}' (first on line {seen[item.id]})")
            continue
        seen[item.id] = line_no
        items.append(item)
    if not problems and not items:
        problems.append(f"{path}: no items (the file is empty)")
    if problems:
        shown = problems[:20]
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise UserError("\n".join(shown) + more)
    return items


def items_hash(items: list[Item]) -> str:
    """Content hash of a selection, recorded so a result can be traced to its exact data."""
    h = hashlib.sha256()
    for item in items:
        h.update(item.model_dump_json().encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def write_items(path: Path, items: list[Item]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(item.model_dump_json(exclude_defaults=True) + "\n")


def write_arms(directory: Path, control: list[Item], experiment: list[Item]) -> tuple[Path, Path]:
    """Write a pair of arms as `control.jsonl` and `experiment.jsonl` in `directory`."""
    paths = (directory / "control.jsonl", directory / "experiment.jsonl")
    write_items(paths[0], control)
    write_items(paths[1], experiment)
    return paths
