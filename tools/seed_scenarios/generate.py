"""All five scenarios as paired control and experiment items, and their JSONL files.

The control prompt is the plain task. The experiment prompt is the same text followed by a
metadata block (language, framework, entry point, signature, constraints ...) in the language's
comment syntax. As in `tunegate.data.example`, for the templated scenarios the plain task
describes the behaviour but not the name the tests import, so the metadata carries information
the tests need.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tunegate.data.items import Item, write_arms
from tunegate.data.scenarios import SCENARIOS

from .common import Task
from .express import express_tasks
from .humaneval import bugfix_tasks, humaneval_problems, python_tasks
from .react import react_tasks
from .sql import sql_tasks

COMMENT = {"python": "#", "sql": "--", "javascript": "//"}


def pair(task: Task) -> tuple[Item, Item]:
    common: dict[str, Any] = dict(
        id=f"{task.scenario}-{task.key}",
        scenario=task.scenario,
        completion=task.completion,
        language=task.language,
        tests=task.tests,
        group=task.group,
    )
    mark = COMMENT[task.language]
    block = "".join(f"{mark} {key}: {value}\n" for key, value in task.metadata.items())
    plain = task.prompt if task.prompt.endswith("\n") else task.prompt + "\n"
    return (
        Item(prompt=plain, **common),
        Item(prompt=plain + block, metadata=dict(task.metadata), **common),
    )


def generate_scenarios(seed: int = 0) -> tuple[list[Item], list[Item]]:
    """(control, experiment) items of all five scenarios, paired by id, in the same order.

    Deterministic for a seed. It runs the bugfix candidates' tests (a few seconds), since a bug
    is only kept when it makes the canonical solution fail.
    """
    problems = humaneval_problems()
    by_scenario: dict[str, list[Task]] = {
        "python": python_tasks(problems),
        "bugfix": bugfix_tasks(problems, seed),
        "sql": sql_tasks(random.Random(f"sql:{seed}")),
        "express-api": express_tasks(),
        "react-components": react_tasks(random.Random(f"react-components:{seed}")),
    }
    control: list[Item] = []
    experiment: list[Item] = []
    for scenario in SCENARIOS:
        tasks = by_scenario[scenario]
        # Shuffled, so that a stage taking a scenario's first items gets a mix of templates.
        random.Random(f"order:{scenario}:{seed}").shuffle(tasks)
        for task in tasks:
            c, e = pair(task)
            control.append(c)
            experiment.append(e)
    return control, experiment


def write_scenarios(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write control.jsonl and experiment.jsonl of all five scenarios into `directory`."""
    return write_arms(directory, *generate_scenarios(seed))
