"""`sql`: questions on the `shop` fixture (tunegate/resources/shop.sql). The completion is a
reference SELECT; the tests name the fixture and hold the reference query (the format is
described in `tunegate.sandbox.sql`)."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from .common import Task

SQL_FIXTURE = "shop"


@dataclass(frozen=True)
class _Question:
    template: str
    question: str
    sql: str
    tables: tuple[str, ...]
    columns: str
    order: str | None = None  # how the rows are ordered; None: any order


# Every question's source: the values it is asked about come from the fixture or a list.
QUESTIONS = Path(__file__).with_name("sql_questions.yaml")
JOIN_ITEMS = (
    "FROM orders o JOIN order_items oi ON oi.order_id = o.id "
    "JOIN products p ON p.id = oi.product_id"
)


def _domains(db: sqlite3.Connection, rng: random.Random) -> dict[str, list[Any]]:
    """The value lists sql_questions.yaml names: fixture columns, and seeded samples of some."""

    def column(query: str) -> list[Any]:
        return [row[0] for row in db.execute(query)]

    return {
        "cities": column("SELECT DISTINCT city FROM customers ORDER BY city"),
        "countries": column("SELECT DISTINCT country FROM customers ORDER BY country"),
        "categories": column("SELECT DISTINCT category FROM products ORDER BY category"),
        "statuses": column("SELECT DISTINCT status FROM orders ORDER BY status"),
        "departments": column("SELECT DISTINCT department FROM employees ORDER BY department"),
        "years": column("SELECT DISTINCT substr(ordered_on, 1, 4) FROM orders ORDER BY 1"),
        "joined": column("SELECT DISTINCT joined FROM customers ORDER BY joined"),
        # Sampled in this order: the seeded stream picks the products, then the customers.
        "products": rng.sample(column("SELECT name FROM products ORDER BY id"), 8),
        "customers": rng.sample(column("SELECT name FROM customers ORDER BY id"), 8),
        "managers": column(
            "SELECT name FROM employees WHERE id IN (SELECT manager_id FROM employees) ORDER BY id"
        ),
    }


def _combinations(
    values: dict[str, str | list[Any]], domains: dict[str, list[Any]]
) -> list[dict[str, Any]]:
    """Every combination of `values` (name → a domain's name or a literal list), the first name
    varying slowest; one empty combination when there are no names."""
    names = list(values)
    lists = [domains[v] if isinstance(v, str) else v for v in values.values()]
    return [dict(zip(names, combination, strict=True)) for combination in product(*lists)]


def _sql_questions(db: sqlite3.Connection, rng: random.Random) -> list[_Question]:
    domains = _domains(db, rng)
    questions = []
    for block in yaml.safe_load(QUESTIONS.read_text()):
        for outer in _combinations(block["for"], domains):
            for q in block["questions"]:
                for inner in _combinations(q.get("each", {}), domains):
                    fill = {"join_items": JOIN_ITEMS, **outer, **inner}
                    questions.append(
                        _Question(
                            template=q["template"],
                            question=q["question"].format(**fill),
                            sql=q["sql"].format(**fill),
                            tables=tuple(q["tables"]),
                            columns=q["columns"],
                            order=q.get("order"),
                        )
                    )
    return questions


def sql_tasks(rng: random.Random) -> list[Task]:
    from tunegate.sandbox.sql import fixture_sql

    db = sqlite3.connect(":memory:")
    try:
        db.executescript(fixture_sql(SQL_FIXTURE))
        schema = {
            table: f"{table}({', '.join(r[1] for r in db.execute(f'PRAGMA table_info({table})'))})"
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        tasks: list[Task] = []
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
                Task(
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
