"""`express-api`: Express-style route handlers `(req, res)` in CommonJS. The tests build small
fake `req`/`res` objects themselves and need no express package; they run with plain `node`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from string import Template
from typing import Any

from .catalog import RESOURCES, Resource
from .common import JS_CONSTRAINTS, Task, js

_EXPRESS_PRELUDE = """\
'use strict';
const assert = require('assert');

const ROWS = $rows;

// A tiny stand-in for Express's req and res: what a handler reads and the calls it makes.
function call(handler, { locals = {}, ...request } = {}) {
  const req = {
    params: {},
    query: {},
    body: {},
    headers: {},
    ...request,
    app: { locals: { $plural: JSON.parse(JSON.stringify(ROWS)), ...locals } },
  };
  const res = {
    statusCode: 200,
    headers: {},
    body: undefined,
    finished: false,
    status(code) {
      this.statusCode = code;
      return this;
    },
    set(name, value) {
      this.headers[String(name).toLowerCase()] = value;
      return this;
    },
    json(body) {
      this.body = body === undefined ? undefined : JSON.parse(JSON.stringify(body));
      this.finished = true;
      return this;
    },
    send(body) {
      this.body = body;
      this.finished = true;
      return this;
    },
    end() {
      this.finished = true;
      return this;
    },
    sendStatus(code) {
      this.statusCode = code;
      this.finished = true;
      return this;
    },
  };
  handler(req, res);
  assert.ok(res.finished, 'the handler must send a response');
  return { req, res };
}

const { $entry } = require('./program.js');
let req;
let res;
"""


@dataclass(frozen=True)
class _JsTemplate:
    name: str
    route: str  # Template on the resource's names
    entry: str  # Template on the resource's names
    signature: str  # Template: the function's first line
    task: str  # Template: the plain task
    code: str  # Template: the function's body and closing brace
    checks: Callable[[Resource], str]  # the test statements after the prelude


def _expect(call: str, status: int, body: Any) -> str:
    """Test lines: make `call`, then assert its status code and JSON body."""
    return (
        f"({{ req, res }} = {call});\n"
        f"assert.strictEqual(res.statusCode, {status});\n"
        f"assert.deepStrictEqual(res.body, {js(body)});\n"
    )


def _js_round2(x: float) -> float:
    return math.floor(x * 100 + 0.5) / 100  # JavaScript's Math.round(x * 100) / 100


def _checks_get(r: Resource) -> str:
    rows = r.records()
    return _expect(
        f"call(get{r.names()['Singular']}, {{ params: {{ id: '2' }} }})", 200, rows[1]
    ) + (
        _expect(
            f"call(get{r.names()['Singular']}, {{ params: {{ id: '9' }} }})",
            404,
            {"error": f"{r.singular} not found"},
        )
    )


def _checks_list(r: Resource) -> str:
    rows = r.records()
    entry = f"list{r.names()['Plural']}"
    value = rows[0][r.group]
    return (
        _expect(f"call({entry})", 200, rows)
        + _expect(
            f"call({entry}, {{ query: {{ {r.group}: {js(value)} }} }})",
            200,
            [x for x in rows if x[r.group] == value],
        )
        + _expect(f"call({entry}, {{ query: {{ {r.group}: 'none' }} }})", 200, [])
    )


def _checks_create(r: Resource) -> str:
    rows = r.records()
    entry = f"create{r.names()['Singular']}"
    new = {"id": len(rows) + 1, r.text: "Zeta", r.group: "misc"}
    return (
        _expect(
            f"call({entry}, {{ body: {{ {r.group}: 'misc' }} }})",
            400,
            {"error": f"missing field: {r.text}"},
        )
        + _expect(
            f"call({entry}, {{ body: {{ {r.text}: 'Zeta' }} }})",
            400,
            {"error": f"missing field: {r.group}"},
        )
        + _expect(
            f"call({entry}, {{ body: {{ {r.text}: 'Zeta', {r.group}: 'misc', extra: 1 }} }})",
            201,
            new,
        )
        + f"assert.deepStrictEqual(req.app.locals.{r.plural}, {js([*rows, new])});\n"
        + _expect(
            f"call({entry}, {{ locals: {{ {r.plural}: [] }}, "
            f"body: {{ {r.text}: 'Zeta', {r.group}: 'misc' }} }})",
            201,
            {**new, "id": 1},
        )
    )


def _checks_delete(r: Resource) -> str:
    rows = r.records()
    entry = f"delete{r.names()['Singular']}"
    return (
        "({ req, res } = " + f"call({entry}, {{ params: {{ id: '2' }} }}));\n"
        "assert.strictEqual(res.statusCode, 204);\n"
        f"assert.deepStrictEqual(req.app.locals.{r.plural}, {js([rows[0], *rows[2:]])});\n"
        + _expect(
            f"call({entry}, {{ params: {{ id: '9' }} }})", 404, {"error": f"{r.singular} not found"}
        )
    )


def _checks_count(r: Resource) -> str:
    rows = r.records()
    entry = f"count{r.names()['Plural']}"
    value = rows[1][r.group]
    return (
        _expect(f"call({entry})", 200, {"count": len(rows)})
        + _expect(
            f"call({entry}, {{ query: {{ {r.group}: {js(value)} }} }})",
            200,
            {"count": sum(x[r.group] == value for x in rows)},
        )
        + _expect(f"call({entry}, {{ locals: {{ {r.plural}: [] }} }})", 200, {"count": 0})
    )


def _checks_search(r: Resource) -> str:
    rows = r.records()
    entry = f"search{r.names()['Plural']}"
    lines = ""
    for q in (rows[2][r.text][1:3].upper(), rows[0][r.text][:2].lower(), "zzz"):
        found = [x for x in rows if q.lower() in x[r.text].lower()]
        lines += _expect(f"call({entry}, {{ query: {{ q: {js(q)} }} }})", 200, found)
    return (
        lines
        + _expect(f"call({entry})", 400, {"error": "q is required"})
        + _expect(f"call({entry}, {{ query: {{ q: '' }} }})", 400, {"error": "q is required"})
    )


def _page_default(r: Resource) -> int:
    return 2 + RESOURCES.index(r) % 2  # 2 or 3, so the default is not a guessable constant


def _checks_page(r: Resource) -> str:
    rows = r.records()
    entry = f"page{r.names()['Plural']}"
    default = _page_default(r)
    lines = ""
    for query, page, limit in (
        ("{}", 1, default),
        ("{ page: '2' }", 2, default),
        ("{ page: '2', limit: '3' }", 2, 3),
        ("{ page: '-1', limit: 'x' }", 1, default),
        ("{ page: '5' }", 5, default),
    ):
        body = {
            "page": page,
            "limit": limit,
            "total": len(rows),
            "items": rows[(page - 1) * limit : page * limit],
        }
        lines += _expect(f"call({entry}, {{ query: {query} }})", 200, body)
    return lines


def _checks_update(r: Resource) -> str:
    rows = r.records()
    entry = f"update{r.names()['Singular']}"
    updated = {**rows[0], r.group: "changed"}
    return (
        _expect(
            f"call({entry}, {{ params: {{ id: '1' }}, body: {{ {r.group}: 'changed', id: 7, "
            f"{r.number}: 0 }} }})",
            200,
            updated,
        )
        + f"assert.deepStrictEqual(req.app.locals.{r.plural}, {js([updated, *rows[1:]])});\n"
        + _expect(
            f"call({entry}, {{ params: {{ id: '3' }}, body: {{ {r.text}: 'New' }} }})",
            200,
            {**rows[2], r.text: "New"},
        )
        + _expect(
            f"call({entry}, {{ params: {{ id: '9' }}, body: {{ {r.text}: 'New' }} }})",
            404,
            {"error": f"{r.singular} not found"},
        )
    )


def _checks_sort(r: Resource) -> str:
    rows = r.records()
    entry = f"sort{r.names()['Plural']}"
    ascending = sorted(rows, key=lambda x: x[r.number])
    return (
        _expect(f"call({entry})", 200, ascending)
        + _expect(f"call({entry}, {{ query: {{ order: 'asc' }} }})", 200, ascending)
        + _expect(f"call({entry}, {{ query: {{ order: 'desc' }} }})", 200, ascending[::-1])
        + f"assert.deepStrictEqual(req.app.locals.{r.plural}, {js(rows)});\n"
        + _expect(
            f"call({entry}, {{ query: {{ order: 'up' }} }})",
            400,
            {"error": "order must be asc or desc"},
        )
    )


def _checks_stats(r: Resource) -> str:
    rows = r.records()
    entry = f"{r.singular}Stats"
    values = [x[r.number] for x in rows]
    total = 0.0
    for v in values:
        total += v  # the same order of additions as the reference's loop
    body = {
        "count": len(values),
        "min": min(values),
        "max": max(values),
        "average": _js_round2(total / len(values)),
    }
    empty = {"count": 0, "min": None, "max": None, "average": None}
    return _expect(f"call({entry})", 200, body) + _expect(
        f"call({entry}, {{ locals: {{ {r.plural}: [] }} }})", 200, empty
    )


def _checks_secure(r: Resource) -> str:
    rows = r.records()
    entry = f"secure{r.names()['Plural']}"
    unauthorized = {"error": "invalid api key"}
    key = f"k-{r.singular}-42"
    locals_ = f"locals: {{ apiKey: '{key}' }}"
    return (
        _expect(f"call({entry}, {{ {locals_} }})", 401, unauthorized)
        + _expect(
            f"call({entry}, {{ {locals_}, headers: {{ 'x-api-key': 'wrong' }} }})",
            401,
            unauthorized,
        )
        + _expect(f"call({entry}, {{ {locals_}, headers: {{ 'x-api-key': '{key}' }} }})", 200, rows)
    )


def _checks_group(r: Resource) -> str:
    rows = r.records()
    entry = f"{r.plural}By{r.names()['Group']}"
    counts: dict[str, int] = {}
    for x in rows:
        counts[x[r.group]] = counts.get(x[r.group], 0) + 1
    return _expect(f"call({entry})", 200, counts) + _expect(
        f"call({entry}, {{ locals: {{ {r.plural}: [] }} }})", 200, {}
    )


_NOT_FOUND = 'respond with status 404 and the JSON {"error": "$singular not found"}'
_STORE = (
    "The $plural are in req.app.locals.$plural, an array of objects with a numeric id and the "
    "fields $text, $group and $number."
)

EXPRESS_TEMPLATES: tuple[_JsTemplate, ...] = (
    _JsTemplate(
        "get",
        "GET /$plural/:id",
        "get$Singular",
        "function get$Singular(req, res)",
        "Write an Express route handler for GET /$plural/:id. " + _STORE + " Respond with the "
        "$singular whose id equals the :id parameter (req.params.id, a string) as JSON; if there "
        "is none, " + _NOT_FOUND + ".",
        """\
  const id = Number(req.params.id);
  const $singular = req.app.locals.$plural.find((item) => item.id === id);
  if (!$singular) {
    return res.status(404).json({ error: '$singular not found' });
  }
  return res.json($singular);
}
""",
        _checks_get,
    ),
    _JsTemplate(
        "list",
        "GET /$plural",
        "list$Plural",
        "function list$Plural(req, res)",
        "Write an Express route handler for GET /$plural. " + _STORE + " Respond with the "
        "$plural as a JSON array; when the query string has a $group parameter, only the $plural "
        "whose $group equals it.",
        """\
  const { $group } = req.query;
  const $plural = req.app.locals.$plural;
  if ($group === undefined) {
    return res.json($plural);
  }
  return res.json($plural.filter((item) => item.$group === $group));
}
""",
        _checks_list,
    ),
    _JsTemplate(
        "create",
        "POST /$plural",
        "create$Singular",
        "function create$Singular(req, res)",
        "Write an Express route handler for POST /$plural. " + _STORE + " The JSON body must "
        "have $text and $group; check them in that order and, for the first one missing, "
        'respond with status 400 and the JSON {"error": "missing field: <name>"}. Otherwise '
        "add {id, $text, $group} (ignore any other field; the id is one more than the largest "
        "id, or 1 when there is none) to the array and respond with status 201 and the new "
        "$singular as JSON.",
        """\
  const body = req.body || {};
  for (const field of ['$text', '$group']) {
    if (body[field] === undefined) {
      return res.status(400).json({ error: 'missing field: ' + field });
    }
  }
  const $plural = req.app.locals.$plural;
  const id = $plural.reduce((max, item) => Math.max(max, item.id), 0) + 1;
  const $singular = { id, $text: body.$text, $group: body.$group };
  $plural.push($singular);
  return res.status(201).json($singular);
}
""",
        _checks_create,
    ),
    _JsTemplate(
        "delete",
        "DELETE /$plural/:id",
        "delete$Singular",
        "function delete$Singular(req, res)",
        "Write an Express route handler for DELETE /$plural/:id. " + _STORE + " Remove the "
        "$singular whose id equals the :id parameter (a string) from the array and respond "
        "with status 204 and no body; if there is none, " + _NOT_FOUND + ".",
        """\
  const id = Number(req.params.id);
  const $plural = req.app.locals.$plural;
  const index = $plural.findIndex((item) => item.id === id);
  if (index === -1) {
    return res.status(404).json({ error: '$singular not found' });
  }
  $plural.splice(index, 1);
  return res.status(204).end();
}
""",
        _checks_delete,
    ),
    _JsTemplate(
        "count",
        "GET /$plural/count",
        "count$Plural",
        "function count$Plural(req, res)",
        "Write an Express route handler for GET /$plural/count. " + _STORE + " Respond with the "
        'JSON {"count": n}, the number of $plural; when the query string has a $group '
        "parameter, count only the $plural whose $group equals it.",
        """\
  const { $group } = req.query;
  const $plural = req.app.locals.$plural;
  const selected =
    $group === undefined ? $plural : $plural.filter((item) => item.$group === $group);
  return res.json({ count: selected.length });
}
""",
        _checks_count,
    ),
    _JsTemplate(
        "search",
        "GET /$plural/search",
        "search$Plural",
        "function search$Plural(req, res)",
        "Write an Express route handler for GET /$plural/search. " + _STORE + " Respond with "
        "the $plural whose $text contains the query parameter q, ignoring case, as a JSON array. "
        "If q is missing or empty, respond with status 400 and the JSON "
        '{"error": "q is required"}.',
        """\
  const q = req.query.q;
  if (!q) {
    return res.status(400).json({ error: 'q is required' });
  }
  const needle = q.toLowerCase();
  const found = req.app.locals.$plural.filter((item) =>
    item.$text.toLowerCase().includes(needle),
  );
  return res.json(found);
}
""",
        _checks_search,
    ),
    _JsTemplate(
        "page",
        "GET /$plural",
        "page$Plural",
        "function page$Plural(req, res)",
        "Write an Express route handler for GET /$plural that paginates. " + _STORE + " The "
        "query parameters page (default 1) and limit (default $limit) are positive integers; a "
        "missing or invalid value uses the default. Respond with the JSON {page, limit, total, "
        "items}: total is the number of $plural, items the $plural on that page.",
        """\
  const positive = (value, fallback) => {
    const n = Number.parseInt(value, 10);
    return n > 0 ? n : fallback;
  };
  const page = positive(req.query.page, 1);
  const limit = positive(req.query.limit, $limit);
  const $plural = req.app.locals.$plural;
  const items = $plural.slice((page - 1) * limit, page * limit);
  return res.json({ page, limit, total: $plural.length, items });
}
""",
        _checks_page,
    ),
    _JsTemplate(
        "update",
        "PATCH /$plural/:id",
        "update$Singular",
        "function update$Singular(req, res)",
        "Write an Express route handler for PATCH /$plural/:id. " + _STORE + " Copy $text and "
        "$group from the JSON body, each only if present (ignore every other field), onto the "
        "$singular whose id equals the :id parameter (a string), and respond with the updated "
        "$singular as JSON; if there is none, " + _NOT_FOUND + ".",
        """\
  const id = Number(req.params.id);
  const $singular = req.app.locals.$plural.find((item) => item.id === id);
  if (!$singular) {
    return res.status(404).json({ error: '$singular not found' });
  }
  const body = req.body || {};
  for (const field of ['$text', '$group']) {
    if (body[field] !== undefined) {
      $singular[field] = body[field];
    }
  }
  return res.json($singular);
}
""",
        _checks_update,
    ),
    _JsTemplate(
        "sort",
        "GET /$plural/sorted",
        "sort$Plural",
        "function sort$Plural(req, res)",
        "Write an Express route handler for GET /$plural/sorted. " + _STORE + " Respond with "
        "the $plural sorted by $number as a JSON array, without reordering the stored array. The "
        "query parameter order is asc (the default) or desc; any other value gets status 400 and "
        'the JSON {"error": "order must be asc or desc"}.',
        """\
  const order = req.query.order === undefined ? 'asc' : req.query.order;
  if (order !== 'asc' && order !== 'desc') {
    return res.status(400).json({ error: 'order must be asc or desc' });
  }
  const sign = order === 'asc' ? 1 : -1;
  const sorted = [...req.app.locals.$plural].sort((a, b) => sign * (a.$number - b.$number));
  return res.json(sorted);
}
""",
        _checks_sort,
    ),
    _JsTemplate(
        "stats",
        "GET /$plural/stats",
        "${singular}Stats",
        "function ${singular}Stats(req, res)",
        "Write an Express route handler for GET /$plural/stats. " + _STORE + " Respond with the "
        "JSON {count, min, max, average} of the $number field, the average rounded to 2 "
        "decimals (Math.round(average * 100) / 100); with no $plural, min, max and average are "
        "null.",
        """\
  const values = req.app.locals.$plural.map((item) => item.$number);
  if (values.length === 0) {
    return res.json({ count: 0, min: null, max: null, average: null });
  }
  let total = 0;
  for (const value of values) {
    total += value;
  }
  return res.json({
    count: values.length,
    min: Math.min(...values),
    max: Math.max(...values),
    average: Math.round((total / values.length) * 100) / 100,
  });
}
""",
        _checks_stats,
    ),
    _JsTemplate(
        "secure",
        "GET /$plural",
        "secure$Plural",
        "function secure$Plural(req, res)",
        "Write an Express route handler for GET /$plural that checks an API key. " + _STORE + " "
        "If the x-api-key request header (req.headers['x-api-key']) is not equal to "
        "req.app.locals.apiKey, respond with status 401 and the JSON "
        '{"error": "invalid api key"}; otherwise respond with the $plural as a JSON array.',
        """\
  if (req.headers['x-api-key'] !== req.app.locals.apiKey) {
    return res.status(401).json({ error: 'invalid api key' });
  }
  return res.json(req.app.locals.$plural);
}
""",
        _checks_secure,
    ),
    _JsTemplate(
        "group",
        "GET /$plural/by-$group",
        "${plural}By$Group",
        "function ${plural}By$Group(req, res)",
        "Write an Express route handler for GET /$plural/by-$group. " + _STORE + " Respond "
        "with a JSON object that maps each $group to the number of $plural with it.",
        """\
  const counts = {};
  for (const item of req.app.locals.$plural) {
    counts[item.$group] = (counts[item.$group] || 0) + 1;
  }
  return res.json(counts);
}
""",
        _checks_group,
    ),
)


def express_tasks() -> list[Task]:
    tasks = []
    for template in EXPRESS_TEMPLATES:
        for index, r in enumerate(RESOURCES):
            names = {**r.names(), "limit": str(_page_default(r))}
            entry = Template(template.entry).substitute(names)
            signature = Template(template.signature).substitute(names)
            code = (
                f"{signature} {{\n"
                + Template(template.code).substitute(names)
                + f"\nmodule.exports = {{ {entry} }};\n"
            )
            prelude = Template(_EXPRESS_PRELUDE).substitute(
                rows=js(r.records()), plural=r.plural, entry=entry
            )
            tasks.append(
                Task(
                    key=f"{template.name}-{index:02d}",
                    scenario="express-api",
                    language="javascript",
                    prompt=Template(template.task).substitute(names),
                    completion=code,
                    tests=prelude + "\n" + template.checks(r),
                    metadata={
                        "language": "javascript",
                        "framework": "Express (a route handler; no express import needed)",
                        "route": Template(template.route).substitute(names),
                        "entry_point": entry,
                        "signature": signature,
                        "exports": f"module.exports = {{ {entry} }}",
                        "constraints": JS_CONSTRAINTS,
                    },
                )
            )
    return tasks
