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
