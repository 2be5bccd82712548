"""docs/config.md is generated from the plan schema and must not drift from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunegate.configdoc import REGENERATE, render_config_reference, walk_models
from tunegate.plan import Plan, default_stages

CONFIG_MD = Path(__file__).resolve().parents[1] / "docs" / "config.md"
HINT = f"regenerate it with `{REGENERATE}` (from the repository root) and commit the result"


@pytest.fixture(scope="module")
def config_md() -> str:
    assert CONFIG_MD.is_file(), f"{CONFIG_MD} is missing; {HINT}"
    return CONFIG_MD.read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    assert f"\n## {heading}\n" in text, f"no '## {heading}' section in {CONFIG_MD}; {HINT}"
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_config_reference_is_up_to_date(config_md: str) -> None:
    assert config_md == render_config_reference(), (
        f"{CONFIG_MD} is out of date with the schema in tunegate.plan; {HINT}"
    )


def test_every_plan_field_is_documented(config_md: str) -> None:
    plan_section = _section(config_md, "Plan")
    missing = [name for name in Plan.model_fields if f"| `{name}` |" not in plan_section]
    assert not missing, f"Plan fields missing from {CONFIG_MD}: {missing}; {HINT}"


def test_every_nested_model_has_a_complete_section(config_md: str) -> None:
    for model in walk_models(Plan):
        section = _section(config_md, model.__name__)
        missing = [name for name in model.model_fields if f"| `{name}` |" not in section]
        assert not missing, f"{model.__name__} fields missing from {CONFIG_MD}: {missing}; {HINT}"


def test_default_ladder_is_listed(config_md: str) -> None:
    ladder = _section(config_md, "The default ladder")
    for index, stage in enumerate(default_stages()):
        assert f"| {index} | `{stage.name}` |" in ladder
