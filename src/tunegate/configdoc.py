"""The configuration reference, generated from the plan's pydantic schema.

`python -m tunegate.configdoc > docs/config.md` regenerates `docs/config.md`; a test fails when the
file and the schema disagree. Everything here is read from `tunegate.plan`: field names, types,
constraints, defaults and descriptions come from `model_fields`, section order from walking the
models reachable from `Plan`, and the last section from `default_stages()`; the gates' kinds and
the metrics table come from `tunegate.registry`. Edit the schema and the registry, not the
generated file.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tunegate.plan import Gates, Plan, TrainingConfig, TrainingOverrides, default_stages
from tunegate.registry import GATES, MetricSpec, listed_metrics

REGENERATE = "python -m tunegate.configdoc > docs/config.md"


# --- walking the schema ------------------------------------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation mentions, in order of appearance."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        for model in _models_in(arg):
            if model not in found:
                found.append(model)
    return found


def _container_suffix(annotation: Any) -> str:
    """How a field's YAML path continues into a nested model: '', '.<name>' or '[]'."""
    origin = get_origin(annotation)
    if origin is dict:
        return ".<name>"
    if origin in (list, tuple):
        return "[]"
    if origin in (Union, types.UnionType):
        non_none = [a for a in get_args(annotation) if a is not type(None)]
        return _container_suffix(non_none[0]) if len(non_none) == 1 else ""
    return ""


def walk_models(root: type[BaseModel] = Plan) -> dict[type[BaseModel], list[str]]:
    """Every model reachable from `root`, breadth first, with the YAML paths where it appears."""
    paths: dict[type[BaseModel], list[str]] = {root: ["(top level)"]}
    queue: list[tuple[type[BaseModel], str]] = [(root, "")]
    while queue:
        model, prefix = queue.pop(0)
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}{_container_suffix(field.annotation)}"
            for nested in _models_in(field.annotation):
                if nested not in paths:
                    paths[nested] = []
                    queue.append((nested, f"{path}."))
                if path not in paths[nested]:
                    paths[nested].append(path)
    return paths


# --- rendering pieces --------------------------------------------------------------------------


def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def _cell(text: str) -> str:
    """Make text safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def type_name(annotation: Any) -> str:
    """A readable Python-style name for an annotation: `int | None`, `"a" | "b"`, `list[str]`."""
    if annotation is type(None):
        return "None"
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        base = getattr(origin, "__name__", str(origin))
        return f"{base}[{', '.join(type_name(a) for a in args)}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _constraints(field: FieldInfo) -> list[str]:
    out: list[str] = []
    symbols = (
        (annotated_types.Ge, "ge", "≥"),
        (annotated_types.Gt, "gt", ">"),
        (annotated_types.Le, "le", "≤"),
        (annotated_types.Lt, "lt", "<"),
    )
    for meta in field.metadata:
        for kind, attr, symbol in symbols:
            if isinstance(meta, kind):
                out.append(f"{symbol} {getattr(meta, attr)}")
        pattern = getattr(meta, "pattern", None)
        if pattern is not None:
            out.append(f"matches `{pattern}`")
    return out


def _type_cell(field: FieldInfo) -> str:
    cell = f"`{type_name(field.annotation)}`"
    links = [f"[{m.__name__}](#{_anchor(m)})" for m in _models_in(field.annotation)]
    if links:
        cell += " → " + ", ".join(links)
    constraints = _constraints(field)
    if constraints:
        cell += ", " + ", ".join(constraints)
    return _cell(cell)


def _json_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def _default_cell(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        model = type(value)
        try:
            is_default = value == model()
        except Exception:  # a model with required fields has no all-defaults instance
            is_default = False
        if is_default:
            return f"[{model.__name__} defaults](#{_anchor(model)})"
    return _cell(f"`{json.dumps(_json_value(value))}`")


def _doc(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__") or ""
    return " ".join(doc.split())


def _description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    """The schema's description, with what the schema's structure says about the field."""
    text = field.description or ""
    if model is TrainingOverrides and name in TrainingConfig.model_fields:
        text = f"This stage's [`training.{name}`](#trainingconfig). {text}"
    elif not text:
        text = " ".join(f"See [{m.__name__}](#{_anchor(m)})." for m in _models_in(field.annotation))
    if model is Gates and name in GATES:
        kind = GATES[name].kind
        text = f"**{kind}** ({'FAIL' if kind == 'health' else 'INVESTIGATE'}). {text}"
    return _cell(text)


def render_model(model: type[BaseModel], paths: list[str]) -> str:
    lines = [f"## {model.__name__}", ""]
    where = ", ".join(f"`{p}`" for p in paths)
    lines.append(f"In the plan file: {where}." if paths != ["(top level)"] else "The plan file.")
    doc = _doc(model)
    if doc:
        lines += ["", doc]
    lines += ["", "| field | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        description = _description(model, name, field)
        lines.append(f"| `{name}` | {_type_cell(field)} | {_default_cell(field)} | {description} |")
    return "\n".join(lines) + "\n"


# --- the metrics ---------------------------------------------------------------------------


def _metric_row(spec: MetricSpec) -> str:
    cells = [
        f"`{spec.name}`",
        spec.kind,
        "higher" if spec.higher_is_better else "lower",
        spec.uses,
        ", ".join(sorted(spec.applies_to)) if spec.applies_to is not None else "any",
        ", ".join(sorted(spec.needs)) or "–",
        spec.description,
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def render_metrics() -> str:
    """One row per metric of `tunegate.registry`; a family (pass@K) as one row."""
    lines = [
        "## Metrics",
        "",
        "The names `evaluation.metrics`, `primary_metric`, `tests` and `gates.improves` accept, "
        "from `tunegate.registry`. `binary` metrics get exact McNemar as their primary test by "
        "default, `continuous` ones the paired t-test; `lower` is better for the vulnerability "
        "metrics, and the gates and the report read their differences that way. A metric scores "
        "the one greedy generation or the `samples` drawn per item; on an item in a language it "
        "does not apply to it is *not applicable*, not failed. Some needs are a language's only "
        "(bandit for Python, tree-sitter for JavaScript and TypeScript).",
        "",
        "| metric | kind | better | scores | languages | needs | description |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_metric_row(spec) for spec in listed_metrics()]
    return "\n".join(lines) + "\n"


# --- the default ladder ------------------------------------------------------------------------


def _gate_summary(stage_gates: dict[str, Any]) -> str:
    parts: list[str] = []
    for name, value in stage_gates.items():
        if value is True:
            parts.append(name)
        elif isinstance(value, list):
            parts.append(f"{name}: {', '.join(str(v) for v in value)}")
        else:
            parts.append(f"{name}: {value}")
    return ", ".join(parts)


def render_default_ladder() -> str:
    stages = default_stages()
    lines = [
        "## The default ladder",
        "",
        "A plan without `stages:` gets this ladder, `tunegate.plan.default_stages()`: the "
        "original staged plan. [Gates](#gates) left unset are not checked. `head` and `split` "
        "selections without `scenarios` run on the plan's `pilot_scenario` (default: the first "
        "scenario in the data); `all` runs on every scenario.",
        "",
        "| # | stage | kind | data | training overrides | evaluation | gates | estimate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, stage in enumerate(stages):
        data = {
            "selection": stage.data.selection,
            **stage.data.model_dump(mode="json", exclude_defaults=True),
        }
        training = stage.training.model_dump(mode="json", exclude_none=True)
        gates = stage.gates.model_dump(mode="json", exclude_none=True)
        data_cell = (
            "–" if stage.kind == "environment" else ", ".join(f"{k}: {v}" for k, v in data.items())
        )
        training_cell = ", ".join(f"{k}: {v}" for k, v in training.items()) or "–"
        estimate = f"{stage.estimate.hours:.2g} h, ${stage.estimate.usd:g}"
        cells = [
            str(i),
            f"`{stage.name}`",
            stage.kind,
            data_cell,
            training_cell,
            stage.evaluation.mode,
            _gate_summary(gates),
            estimate,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    dumped = [s.model_dump(mode="json", exclude_defaults=True) for s in stages]
    lines += [
        "",
        "The same ladder as YAML (what `stages:` would say if you wrote it out; recovery steps are "
        "the original plan's and print when a stage does not pass):",
        "",
        "```yaml",
        yaml.safe_dump({"stages": dumped}, sort_keys=False, allow_unicode=True, width=100).rstrip(),
        "```",
    ]
    return "\n".join(lines) + "\n"


# --- the whole document ------------------------------------------------------------------------

PREAMBLE = f"""\
# Configuration reference

<!-- Generated from tunegate.plan by `{REGENERATE}`. Do not edit by hand. -->

Every field of `tunegate.yaml`, read from the pydantic schema in `src/tunegate/plan.py`.
General rules (from `tunegate.plan.load_plan`):

- Unknown fields are rejected (a typo would otherwise silently do nothing); errors name the file,
  line and field.
- Relative paths (`output_dir`, `arms.<name>.data`, a local `model.name`) resolve against the
  directory of the plan file.
- A plan with no `stages:` gets [the default ladder](#the-default-ladder).
- A stage's `training:` overrides only the fields it sets; everything else comes from the plan's
  top-level `training:`.
- Defaults that differ from the underlying library's (peft, TRL, transformers, bitsandbytes)
  say so in their description.
"""


def render_config_reference() -> str:
    """The whole reference as Markdown: one section per model reachable from Plan, the metrics,
    then the default ladder."""
    parts = [PREAMBLE]
    models = walk_models(Plan)
    parts.append(
        "Sections: "
        + ", ".join(f"[{m.__name__}](#{_anchor(m)})" for m in models)
        + ", [the metrics](#metrics), [the default ladder](#the-default-ladder).\n"
    )
    for model, paths in models.items():
        parts.append(render_model(model, paths))
    parts.append(render_metrics())
    parts.append(render_default_ladder())
    return "\n".join(parts)


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_config_reference())
