"""The five-scenario example that `tunegate data example DIR` writes: `python` and `bugfix`
(HumanEval), `sql` (on the shop fixture), `express-api` and `react-components` (tested with
node), as control and experiment arms with a plan that climbs the original staged plan on them.

The files ship as package data (resources/seed-scenarios): the command copies them. They are
generated once, by the developers' tool `python -m tools.seed_scenarios` (which runs every
candidate bug's tests to keep only failing ones), never at run time.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SCENARIOS: tuple[str, ...] = ("python", "bugfix", "sql", "express-api", "react-components")
# The example's files, relative to its directory: the plan first, then the arms it names.
EXAMPLE_FILES: tuple[str, ...] = ("tunegate.yaml", "data/control.jsonl", "data/experiment.jsonl")


def write_example(directory: Path) -> list[Path]:
    """Copy the example's plan and data into `directory`, byte for byte; returns the paths
    written, in EXAMPLE_FILES' order."""
    shipped = files("tunegate").joinpath("resources", "seed-scenarios")
    written = []
    for name in EXAMPLE_FILES:
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(shipped.joinpath(*name.split("/")).read_bytes())
        written.append(target)
    return written


# The real-model example: the python scenario of the example above, answers fenced.
REAL_MODEL_SCENARIO = "python"


def fenced(code: str) -> str:
    """An answer as an instruct model writes one: the code in a ```python fence."""
    return "```python\n" + code.strip("\n") + "\n```"


def write_real_model_example(directory: Path) -> list[Path]:
    """The real-model example's plan and data into `directory`: HumanEval's python items of the
    five-scenario example, each answer fenced as an instruct model answers. Deterministic: the
    same bytes on every machine."""
    import json

    shipped = files("tunegate").joinpath("resources")
    plan = directory / "tunegate.yaml"
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(shipped.joinpath("real-model", "tunegate.yaml").read_bytes())
    written = [plan]
    for arm in ("control", "experiment"):
        source = shipped.joinpath("seed-scenarios", "data", f"{arm}.jsonl").read_text("utf-8")
        rows = [json.loads(line) for line in source.splitlines() if line.strip()]
        lines = [
            json.dumps({**row, "completion": fenced(row["completion"])}, ensure_ascii=False)
            for row in rows
            if row["scenario"] == REAL_MODEL_SCENARIO
        ]
        target = directory / "data" / f"{arm}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(target)
    return written
