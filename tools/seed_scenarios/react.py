"""`react-components`: React-style function components that return an element tree built with
a global `h(type, props, ...children)`. The tests define `h` and assert on the tree with plain
`node`."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from string import Template
from typing import Any

from .catalog import RESOURCES, Resource
from .common import JS_CONSTRAINTS, Task, js

_H_JS = """\
// React.createElement in miniature: children flattened; null, undefined and booleans dropped.
function h(type, props, ...children) {
  return {
    type,
    props: props || {},
    children: children
      .flat(Infinity)
      .filter((c) => c !== null && c !== undefined && typeof c !== 'boolean'),
  };
}
globalThis.h = h;
"""


def _h(type_: str, props: dict[str, Any] | None = None, *children: Any) -> dict[str, Any]:
    """The Python twin of the tests' `h`, to compute the expected trees."""
    flat: list[Any] = []

    def walk(c: Any) -> None:
        if isinstance(c, list):
            for x in c:
                walk(x)
        elif c is not None and not isinstance(c, bool):
            flat.append(c)

    walk(list(children))
    return {"type": type_, "props": props or {}, "children": flat}


@dataclass(frozen=True)
class _Component:
    name: str
    props: str  # the destructured parameter, e.g. "{ label, tone }"
    task: str  # the plain task, without the h preamble
    body: str  # the function's body
    cases: tuple[tuple[str, dict[str, Any]], ...]  # (props as JS, expected tree)
    handlers: tuple[str, ...] = ()  # JS names of functions the cases pass, checked by identity


_H_TASK = (
    " Build the elements with the global h(type, props, ...children), which works like "
    "React.createElement (no JSX, no react package); pass null or {} when there are no props."
)


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _kebab(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def _badges(rng: random.Random) -> list[_Component]:
    names = ["Badge", "Tag", "Chip", "Pill", "Label", "Marker", "Flag", "Token", "Stamp", "Sticker"]
    out = []
    for name in names:
        cls = name.lower()
        tone = rng.choice(["info", "warn", "ok", "new", "hot"])
        out.append(
            _Component(
                name,
                "{ label, tone }",
                f"Write a component that renders a {cls}: a span whose className is '{cls} "
                f"{cls}-' followed by the tone prop, with the label prop as its only child.",
                f"  return h('span', {{ className: '{cls} {cls}-' + tone }}, label);\n",
                (
                    (
                        f"{{ label: 'Beta', tone: '{tone}' }}",
                        _h("span", {"className": f"{cls} {cls}-{tone}"}, "Beta"),
                    ),
                    (
                        "{ label: '3 new', tone: 'muted' }",
                        _h("span", {"className": f"{cls} {cls}-muted"}, "3 new"),
                    ),
                ),
            )
        )
    return out


def _lists(rng: random.Random) -> list[_Component]:
    out = []
    for r in RESOURCES:
        n = r.names()
        name = f"{n['Singular']}List"
        rows = r.records()
        empty = rng.choice(["No $plural yet", "No $plural found", "Nothing here"])
        empty = Template(empty).substitute(n)
        out.append(
            _Component(
                name,
                "{ items }",
                f"Write a component that lists {r.plural}. When the items prop is empty, render "
                f"a p with className 'empty' and the text '{empty}'. Otherwise render a ul with "
                f"className '{r.singular}-list' holding one li per item, in order, with props "
                f"{{ key: item.id }} and the item's {r.text} as its child.",
                f"  if (items.length === 0) {{\n    return h('p', {{ className: 'empty' }}, "
                f"'{empty}');\n  }}\n  return h(\n    'ul',\n    {{ className: '{r.singular}-list' "
                f"}},\n    items.map((item) => h('li', {{ key: item.id }}, item.{r.text})),\n"
                "  );\n",
                (
                    (
                        f"{{ items: {js(rows[:3])} }}",
                        _h(
                            "ul",
                            {"className": f"{r.singular}-list"},
                            [_h("li", {"key": x["id"]}, x[r.text]) for x in rows[:3]],
                        ),
                    ),
                    ("{ items: [] }", _h("p", {"className": "empty"}, empty)),
                ),
            )
        )
    return out


def _greetings(rng: random.Random) -> list[_Component]:
    variants = [
        ("Greeting", "Hello", "guest"),
        ("WelcomeBanner", "Welcome", "visitor"),
        ("HiHeader", "Hi", "friend"),
        ("MorningTitle", "Good morning", "there"),
        ("GreetingsLine", "Greetings", "traveller"),
        ("HeyHeading", "Hey", "stranger"),
        ("WelcomeBack", "Welcome back", "reader"),
        ("HowdyTitle", "Howdy", "partner"),
        ("HelloAgain", "Hello again", "user"),
        ("BonjourHeader", "Bonjour", "ami"),
    ]
    out = []
    for name, hello, fallback in variants:
        tag = rng.choice(["h1", "h2", "p"])
        out.append(
            _Component(
                name,
                "{ name }",
                f"Write a component that greets the user: a {tag} with className 'greeting' "
                f"whose child is '{hello}, <name>!' using the name prop, or '{hello}, "
                f"{fallback}!' when name is empty or missing.",
                f"  return h('{tag}', {{ className: 'greeting' }}, name ? '{hello}, ' + name + '!'"
                f" : '{hello}, {fallback}!');\n",
                (
                    ("{ name: 'Ada' }", _h(tag, {"className": "greeting"}, f"{hello}, Ada!")),
                    ("{ name: '' }", _h(tag, {"className": "greeting"}, f"{hello}, {fallback}!")),
                    ("{}", _h(tag, {"className": "greeting"}, f"{hello}, {fallback}!")),
                ),
            )
        )
    return out


def _buttons(rng: random.Random) -> list[_Component]:
    variants = ["primary", "secondary", "danger", "success", "warning"]
    variants += ["link", "ghost", "outline", "light", "dark"]
    out = []
    for variant in variants:
        name = f"{variant.capitalize()}Button"
        kind = rng.choice(["button", "submit"])
        out.append(
            _Component(
                name,
                "{ label, disabled, onClick }",
                f"Write {_a(variant)} button component: a button with the props type '{kind}', "
                f"className 'btn btn-{variant}', disabled (the disabled prop as a boolean, false "
                "when missing) and onClick (the onClick prop), and the label prop as its child.",
                f"  return h(\n    'button',\n"
                f"    {{ type: '{kind}', className: 'btn btn-{variant}', "
                "disabled: Boolean(disabled), onClick },\n    label,\n  );\n",
                (
                    (
                        "{ label: 'Save', onClick }",
                        _h(
                            "button",
                            {
                                "type": kind,
                                "className": f"btn btn-{variant}",
                                "disabled": False,
                                "onClick": "$onClick",
                            },
                            "Save",
                        ),
                    ),
                    (
                        "{ label: 'Wait', disabled: 1, onClick }",
                        _h(
                            "button",
                            {
                                "type": kind,
                                "className": f"btn btn-{variant}",
                                "disabled": True,
                                "onClick": "$onClick",
                            },
                            "Wait",
                        ),
                    ),
                ),
                handlers=("onClick",),
            )
        )
    return out


def _cards(rng: random.Random) -> list[_Component]:
    out = []
    for r in RESOURCES:
        n = r.names()
        tag = rng.choice(["article", "section", "div"])
        heading = rng.choice(["h2", "h3"])
        row = r.records()[3]
        out.append(
            _Component(
                f"{n['Singular']}Card",
                f"{{ {r.singular} }}",
                f"Write a component that shows one {r.singular} (the {r.singular} prop, with "
                f"{r.text}, {r.group} and {r.number}): an {tag} with className "
                f"'{r.singular}-card' holding a {heading} with the {r.text}, then a p with "
                f"'{n['Group']}: ' and the {r.group}, then a p with '{n['Number']}: ' and the "
                f"{r.number}, each as one string.",
                f"  return h(\n    '{tag}',\n    {{ className: '{r.singular}-card' }},\n"
                f"    h('{heading}', null, {r.singular}.{r.text}),\n"
                f"    h('p', null, '{n['Group']}: ' + {r.singular}.{r.group}),\n"
                f"    h('p', null, '{n['Number']}: ' + {r.singular}.{r.number}),\n  );\n",
                (
                    (
                        f"{{ {r.singular}: {js(row)} }}",
                        _h(
                            tag,
                            {"className": f"{r.singular}-card"},
                            _h(heading, None, row[r.text]),
                            _h("p", None, f"{n['Group']}: {row[r.group]}"),
                            _h("p", None, f"{n['Number']}: {js(row[r.number])}"),
                        ),
                    ),
                ),
            )
        )
    return out


def _tables(rng: random.Random) -> list[_Component]:
    out = []
    for r in RESOURCES:
        n = r.names()
        rows = r.records()
        headers = [n["Text"], n["Group"], n["Number"]]
        out.append(
            _Component(
                f"{n['Plural']}Table",
                "{ rows }",
                f"Write a component that renders {r.plural} (the rows prop) as a table with "
                f"className '{r.plural}-table': a thead with one tr of th cells "
                f"'{headers[0]}', '{headers[1]}' and '{headers[2]}', then a tbody with a tr per "
                f"row (props {{ key: row.id }}) of td cells holding the row's {r.text}, "
                f"{r.group} and String({r.number}).",
                f"  return h(\n    'table',\n    {{ className: '{r.plural}-table' }},\n"
                f"    h('thead', null, h('tr', null, h('th', null, '{headers[0]}'), "
                f"h('th', null, '{headers[1]}'), h('th', null, '{headers[2]}'))),\n"
                "    h(\n      'tbody',\n      null,\n      rows.map((row) =>\n"
                f"        h('tr', {{ key: row.id }}, h('td', null, row.{r.text}), "
                f"h('td', null, row.{r.group}), h('td', null, String(row.{r.number}))),\n"
                "      ),\n    ),\n  );\n",
                tuple(
                    (
                        f"{{ rows: {js(subset)} }}",
                        _h(
                            "table",
                            {"className": f"{r.plural}-table"},
                            _h("thead", None, _h("tr", None, [_h("th", None, t) for t in headers])),
                            _h(
                                "tbody",
                                None,
                                [
                                    _h(
                                        "tr",
                                        {"key": x["id"]},
                                        _h("td", None, x[r.text]),
                                        _h("td", None, x[r.group]),
                                        _h("td", None, js(x[r.number])),
                                    )
                                    for x in subset
                                ],
                            ),
                        ),
                    )
                    for subset in (rows[:2], rows[rng.randrange(4) :])
                ),
            )
        )
    return out


def _progress(rng: random.Random) -> list[_Component]:
    names = ["ProgressBar", "UploadProgress", "DownloadMeter", "QuotaBar", "SkillBar"]
    names += ["GoalTracker", "LoadIndicator", "BatteryLevel", "VolumeBar", "ReadingProgress"]
    out = []
    for name in names:
        cls = _kebab(name)
        suffix = rng.choice(["", " complete", " done", " used"])
        cases = []
        for value, total in ((3, 8), (12, 10), (-2, 5), (1, 3)):
            pct = math.floor(min(max(value / total, 0), 1) * 100 + 0.5)
            tree = _h(
                "div",
                {"className": cls, "role": "progressbar", "aria-valuenow": pct},
                _h("div", {"className": f"{cls}-fill", "style": {"width": f"{pct}%"}}),
                _h("span", None, f"{pct}%{suffix}"),
            )
            cases.append((f"{{ value: {value}, max: {total} }}", tree))
        out.append(
            _Component(
                name,
                "{ value, max }",
                "Write a progress bar component. Its percentage is value / max clamped to [0, 1], "
                "times 100, rounded with Math.round. Render a div with the props className "
                f"'{cls}', role 'progressbar' and 'aria-valuenow' (the percentage, a number), "
                f"holding a div with className '{cls}-fill' and style {{ width: '<percentage>%' "
                f"}}, then a span with the text '<percentage>%{suffix}'.",
                "  const pct = Math.round(Math.min(Math.max(value / max, 0), 1) * 100);\n"
                f"  return h(\n    'div',\n    {{ className: '{cls}', role: 'progressbar', "
                "'aria-valuenow': pct },\n"
                f"    h('div', {{ className: '{cls}-fill', style: {{ width: pct + '%' }} }}),\n"
                f"    h('span', null, pct + '%{suffix}'),\n  );\n",
                tuple(cases),
            )
        )
    return out


def _alerts(rng: random.Random) -> list[_Component]:
    variants = [
        ("InfoAlert", "info"),
        ("WarningAlert", "warning"),
        ("ErrorAlert", "error"),
        ("SuccessAlert", "success"),
        ("NoticeBox", "notice"),
        ("TipBox", "tip"),
        ("DangerBanner", "danger"),
        ("StatusNote", "status"),
        ("HintPanel", "hint"),
        ("ToastMessage", "toast"),
    ]
    out = []
    for name, level in variants:
        role = "alert" if level in ("warning", "error", "danger") else "status"
        label = rng.choice(["Dismiss", "Close"])
        closed = _h(
            "div",
            {"className": f"alert alert-{level}", "role": role},
            _h("p", None, "Saved."),
            _h("button", {"className": "close", "onClick": "$onClose", "aria-label": label}, "×"),
        )
        out.append(
            _Component(
                name,
                "{ message, onClose }",
                f"Write {_a(level)} alert component: a div with the props className 'alert "
                f"alert-{level}' and role '{role}', holding a p with the message prop and, only "
                "when the onClose prop is given, a button with the props className 'close', "
                f"onClick (onClose) and 'aria-label' '{label}' and the text '×'.",
                f"  return h(\n    'div',\n    {{ className: 'alert alert-{level}', role: '{role}' "
                "},\n    h('p', null, message),\n    onClose ? h('button', { className: 'close', "
                f"onClick: onClose, 'aria-label': '{label}' }}, '×') : null,\n  );\n",
                (
                    ("{ message: 'Saved.', onClose }", closed),
                    (
                        "{ message: 'Heads up' }",
                        _h(
                            "div",
                            {"className": f"alert alert-{level}", "role": role},
                            _h("p", None, "Heads up"),
                        ),
                    ),
                ),
                handlers=("onClose",),
            )
        )
    return out


def _navs(rng: random.Random) -> list[_Component]:
    names = ["MainNav", "SideNav", "FooterNav", "TabBar", "TopMenu"]
    names += ["SectionNav", "UserMenu", "AdminNav", "DocsNav", "ShopMenu"]
    links = [
        {"href": "/", "label": "Home"},
        {"href": "/docs", "label": "Docs"},
        {"href": "/about", "label": "About"},
    ]
    out = []
    for name in names:
        cls = _kebab(name)
        current = rng.choice(["/docs", "/about"])

        def tree(current: str, cls: str = cls) -> dict[str, Any]:
            items = []
            for link in links:
                props = {"href": link["href"]}
                if link["href"] == current:
                    props = {**props, "className": "active", "aria-current": "page"}
                items.append(_h("li", {"key": link["href"]}, _h("a", props, link["label"])))
            return _h("nav", {"className": cls}, _h("ul", None, items))

        out.append(
            _Component(
                name,
                "{ links, current }",
                f"Write a navigation component: a nav with className '{cls}' holding a ul with "
                "one li per link of the links prop (objects with href and label), in order, with "
                "props { key: link.href }, each holding an a with the label as its child. The a's "
                "props are { href }, plus className 'active' and 'aria-current' 'page' when the "
                "href equals the current prop (and only then: no undefined props).",
                f"  return h(\n    'nav',\n    {{ className: '{cls}' }},\n    h(\n      'ul',\n"
                "      null,\n      links.map((link) =>\n        h(\n          'li',\n"
                "          { key: link.href },\n          h(\n            'a',\n"
                "            link.href === current\n"
                "              ? { href: link.href, className: 'active', 'aria-current': 'page' }\n"
                "              : { href: link.href },\n            link.label,\n          ),\n"
                "        ),\n      ),\n    ),\n  );\n",
                (
                    (f"{{ links: {js(links)}, current: '{current}' }}", tree(current)),
                    (f"{{ links: {js(links)}, current: '/none' }}", tree("/none")),
                ),
            )
        )
    return out


def _pagers(rng: random.Random) -> list[_Component]:
    variants = [
        ("Pager", "Previous", "Next", "Page", "of"),
        ("Pagination", "Prev", "Next", "Page", "of"),
        ("PageNav", "Back", "Forward", "Page", "/"),
        ("ResultsPager", "Newer", "Older", "Results page", "of"),
        ("GalleryPager", "‹", "›", "Image", "of"),
        ("StepPager", "Back", "Continue", "Step", "of"),
        ("SlidePager", "Previous slide", "Next slide", "Slide", "of"),
        ("ChapterNav", "Previous chapter", "Next chapter", "Chapter", "of"),
        ("TablePager", "‹ Prev", "Next ›", "Page", "of"),
        ("FeedPager", "Earlier", "Later", "Page", "of"),
    ]
    out = []
    for name, prev, nxt, page_word, of in variants:
        cls = rng.choice(["pager", "pagination", "page-nav"])

        def tree(page: int, pages: int, cls: str = cls, **w: str) -> dict[str, Any]:
            return _h(
                "div",
                {"className": cls},
                _h("button", {"disabled": page <= 1}, w["prev"]),
                _h("span", None, f"{w['page_word']} {page} {w['of']} {pages}"),
                _h("button", {"disabled": page >= pages}, w["nxt"]),
            )

        words = {"prev": prev, "nxt": nxt, "page_word": page_word, "of": of}
        out.append(
            _Component(
                name,
                "{ page, pages }",
                f"Write a pager component: a div with className '{cls}' holding a button "
                f"'{prev}' (props {{ disabled: true }} on the first page, else {{ disabled: false "
                f"}}), a span with the text '{page_word} <page> {of} <pages>', and a button "
                f"'{nxt}' (disabled on the last page, the same way).",
                f"  return h(\n    'div',\n    {{ className: '{cls}' }},\n"
                f"    h('button', {{ disabled: page <= 1 }}, '{prev}'),\n"
                f"    h('span', null, '{page_word} ' + page + ' {of} ' + pages),\n"
                f"    h('button', {{ disabled: page >= pages }}, '{nxt}'),\n  );\n",
                (
                    ("{ page: 1, pages: 4 }", tree(1, 4, **words)),
                    ("{ page: 2, pages: 4 }", tree(2, 4, **words)),
                    ("{ page: 4, pages: 4 }", tree(4, 4, **words)),
                ),
            )
        )
    return out


def _selects(rng: random.Random) -> list[_Component]:
    out = []
    for r in RESOURCES:
        n = r.names()
        rows = r.records()
        chosen = rng.choice(rows)["id"]
        tree = _h(
            "select",
            {"name": r.singular, "value": str(chosen)},
            [_h("option", {"key": x["id"], "value": str(x["id"])}, x[r.text]) for x in rows],
        )
        out.append(
            _Component(
                f"{n['Singular']}Select",
                f"{{ {r.plural}, value }}",
                f"Write a select component for {r.plural}: a select with the props name "
                f"'{r.singular}' and value (String(value)), holding one option per {r.singular} "
                f"of the {r.plural} prop, in order, with the props "
                f"{{ key: id, value: String(id) }} and the {r.text} as its child.",
                f"  return h(\n    'select',\n"
                f"    {{ name: '{r.singular}', value: String(value) }},\n"
                f"    {r.plural}.map((item) => h('option', {{ key: item.id, value: String(item.id) "
                f"}}, item.{r.text})),\n  );\n",
                ((f"{{ {r.plural}: {js(rows)}, value: {chosen} }}", tree),),
            )
        )
    return out


def _counts(rng: random.Random) -> list[_Component]:
    out = []
    for r in RESOURCES:
        n = r.names()
        none = rng.choice([f"No {r.plural}", f"No {r.plural} yet", f"Zero {r.plural}"])

        def tree(count: int, none: str = none, r: Resource = r) -> dict[str, Any]:
            if count == 0:
                return _h("span", {"className": "count empty"}, none)
            return _h(
                "span", {"className": "count"}, f"{count} {r.singular if count == 1 else r.plural}"
            )

        out.append(
            _Component(
                f"{n['Plural']}Count",
                "{ count }",
                f"Write a component that shows how many {r.plural} there are (the count prop): "
                f"a span with className 'count empty' and the text '{none}' when count is 0, "
                f"else a span with className 'count' and the text '<count> {r.singular}' or "
                f"'<count> {r.plural}' (singular only for 1).",
                f"  if (count === 0) {{\n    return h('span', {{ className: 'count empty' }}, "
                f"'{none}');\n  }}\n  return h('span', {{ className: 'count' }}, count + ' ' + "
                f"(count === 1 ? '{r.singular}' : '{r.plural}'));\n",
                tuple((f"{{ count: {c} }}", tree(c)) for c in (0, 1, 7)),
            )
        )
    return out


REACT_FAMILIES: tuple[tuple[str, Callable[[random.Random], list[_Component]]], ...] = (
    ("badge", _badges),
    ("list", _lists),
    ("greeting", _greetings),
    ("button", _buttons),
    ("card", _cards),
    ("table", _tables),
    ("progress", _progress),
    ("alert", _alerts),
    ("nav", _navs),
    ("pager", _pagers),
    ("select", _selects),
    ("count", _counts),
)


def _react_tests(c: _Component) -> str:
    lines = [
        "'use strict';",
        "const assert = require('assert');",
        "",
        _H_JS,
        f"const {{ {c.name} }} = require('./program.js');",
    ]
    lines += [f"const {name} = () => {{}};" for name in c.handlers]
    for props, tree in c.cases:
        expected = js(tree)
        for name in c.handlers:
            # Functions are not JSON: the expected tree names them, and the test puts them back.
            expected = expected.replace(js(f"${name}"), name)
        lines.append(f"assert.deepStrictEqual({c.name}({props}), {expected});")
    return "\n".join(lines) + "\n"


def react_tasks(rng: random.Random) -> list[Task]:
    tasks = []
    for family, make in REACT_FAMILIES:
        for index, c in enumerate(make(rng)):
            signature = f"function {c.name}({c.props})"
            tasks.append(
                Task(
                    key=f"{family}-{index:02d}",
                    scenario="react-components",
                    language="javascript",
                    prompt=c.task + _H_TASK,
                    completion=f"{signature} {{\n{c.body}}}\n\nmodule.exports = {{ {c.name} }};\n",
                    tests=_react_tests(c),
                    metadata={
                        "language": "javascript",
                        "framework": "React-style function component; elements from the global "
                        "h(type, props, ...children), no JSX",
                        "entry_point": c.name,
                        "signature": signature,
                        "exports": f"module.exports = {{ {c.name} }}",
                        "constraints": JS_CONSTRAINTS + "; a pure function of its props",
                    },
                )
            )
    return tasks
