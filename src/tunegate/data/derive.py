"""Derive the experiment arm from the control arm: each prompt rendered from a template over the
item's own fields, everything else (id, scenario, completion, tests, language, metadata) kept, so
the arms differ only in what the template adds to the prompt.

The template is Python's `str.format` syntax, restricted to these fields:

    {prompt}            the control item's prompt
    {metadata[KEY]}     one metadata value: a string verbatim, a number as str(), a list or an
                        object as JSON
    {metadata}          every metadata entry as a `KEY: VALUE` line, each ending in a newline;
                        a format spec is a prefix for each line: {metadata:# } writes
                        `# KEY: VALUE` lines (the example's experiment arm is
                        `{prompt}{metadata:# }` over its control arm plus metadata)
    {metadata_json}     the whole metadata object as one line of JSON
    {id} {scenario} {language}
    {{ and }}           literal braces

Conversions and format specs work as in `str.format` (`{metadata[rank]:>3}`). Attribute access
(`{prompt.upper}`), nested indexing and positional fields are rejected when the template is
parsed, so a template cannot reach into Python objects. Example: two chosen keys, as comments
(`tunegate data derive` turns a `\\n` typed in `--template` into a newline):

    {prompt}# intent: {metadata[intent]}\\n# entry_point: {metadata[entry_point]}\\n
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tunegate.data.items import Item
from tunegate.errors import UserError

ITEM_FIELDS = ("prompt", "id", "scenario", "language")
_FIELD = re.compile(r"^(?P<name>[A-Za-z_]\w*)(?:\[(?P<key>[^\[\]]+)\])?$")
MAX_PROBLEMS = 20  # as the JSONL loader: enough to fix a file in one pass, not a wall of text


@dataclass(frozen=True)
class _Field:
    source: str  # as written in the template, for error messages
    name: str
    key: str | None
    conversion: str | None
    spec: str


Template = list[tuple[str, _Field | None]]


def parse_template(template: str) -> Template:
    """Validate a template once, before any item is rendered; UserError names the field."""
    parts: Template = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise UserError(f"template: {err}") from None
    for literal, name, spec, conversion in parsed:
        if name is None:
            parts.append((literal, None))
            continue
        source = (
            "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        )
        source += "}"
        match = _FIELD.match(name)
        allowed = (
            match is not None
            and "{" not in (spec or "")  # a nested field in the spec: str.format's, not ours
            and (
                match["name"] == "metadata"
                if match["key"] is not None
                else match["name"] in (*ITEM_FIELDS, "metadata", "metadata_json")
            )
        )
        if not allowed or match is None:
            raise UserError(
                f"template: unsupported field {source}; use {{prompt}}, {{metadata[KEY]}}, "
                "{metadata}, {metadata_json}, {id}, {scenario} or {language} ({{ and }} for "
                "literal braces)"
            )
        parts.append((literal, _Field(source, match["name"], match["key"], conversion, spec or "")))
    return parts


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _value(item: Item, f: _Field) -> Any:
    if f.name == "metadata" and f.key is not None:
        if f.key not in item.metadata:
            raise KeyError(f.key)
        return item.metadata[f.key]
    if f.name == "metadata":
        return "".join(f"{f.spec}{k}: {_text(v)}\n" for k, v in item.metadata.items())
    if f.name == "metadata_json":
        return json.dumps(item.metadata, ensure_ascii=False)
    return getattr(item, f.name)


def render(item: Item, template: Template) -> str:
    """One item's prompt. KeyError: a metadata key is missing; ValueError: a bad format spec."""
    out = []
    formatter = string.Formatter()
    for literal, f in template:
        out.append(literal)
        if f is None:
            continue
        value = _value(item, f)
        if f.name == "metadata" and f.key is None:
            out.append(value)  # its spec was the line prefix, already applied
            continue
        if f.conversion:
            value = formatter.convert_field(value, f.conversion)
        elif not f.spec:
            value = _text(value)
        out.append(format(value, f.spec))
    return "".join(out)


def derive_experiment(
    control_items: Sequence[Item], template: str, *, where: str | None = None
) -> list[Item]:
    """The experiment arm: `control_items` with each prompt rendered from `template`.

    Every item is rendered before anything is returned; UserError lists every problem (up to 20)
    as `<where>: item '<id>': ...`, e.g. a metadata key the template uses and the item lacks;
    `where` is the control file.
    """
    parts = parse_template(template)
    prefix = f"{where}: " if where else ""
    problems: list[str] = []
    derived: list[Item] = []
    for item in control_items:
        try:
            prompt = render(item, parts)
        except KeyError as err:
            field = next(f.source for _, f in parts if f and f.key == err.args[0])
            have = ", ".join(item.metadata) or "none"
            problems.append(
                f"{prefix}item '{item.id}': metadata has no key '{err.args[0]}' "
                f"(template field {field}; its keys: {have})"
            )
            continue
        except (ValueError, TypeError) as err:
            problems.append(f"{prefix}item '{item.id}': {err}")
            continue
        try:
            derived.append(Item.model_validate({**item.model_dump(), "prompt": prompt}))
        except ValidationError:
            problems.append(f"{prefix}item '{item.id}': the rendered prompt is blank")
    if problems:
        more = len(problems) - MAX_PROBLEMS
        text = "\n".join(problems[:MAX_PROBLEMS]) + (f"\n... and {more} more" if more > 0 else "")
        raise UserError(text)
    return derived
