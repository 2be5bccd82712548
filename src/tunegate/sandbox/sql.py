"""SQL programs: a single query, run in process against a read-only copy of a fixture.

The fixture is a named database. An item's `tests` are a header of `-- key: value` lines
followed by the reference query:

    -- fixture: shop
    -- compare: ordered
    SELECT name FROM customers WHERE city = 'Lyon' ORDER BY name;

`fixture` names `tunegate/resources/<fixture>.sql` (schema and rows as SQL text). `compare` is
`ordered` (the rows must match in order: the reference has a top-level ORDER BY) or `unordered`
(the default: the rows must match as a multiset). Values are compared, not column names, so
aliases do not matter; floats are rounded to 6 decimals first, so a different summation order
does not fail a correct query. Both queries run in-process on a fresh in-memory copy of the
fixture: an authorizer allows only reads, ATTACH is disabled, strings and the result size are
capped, and a progress handler interrupts a query past its deadline. The query runs inside
SQLite's engine in this process, not in a child: the authorizer and these limits confine it.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
import time
from collections import Counter
from importlib.resources import files
from typing import Any

from tunegate.sandbox.verdict import Execution, Verdict

MAX_ROWS = 100_000  # more rows than any fixture question needs: a runaway query, not an answer
_FIXTURE_NAME = re.compile(r"[a-z0-9_]+")
_HEADER = re.compile(r"--\s*([a-z_]+)\s*:\s*(\S+)\s*$")
_ALLOWED = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


class BadSqlTests(ValueError):
    """The item's tests (not the generated query) are malformed: the verdict is ERROR."""


def parse_sql_tests(tests: str) -> tuple[str, bool, str]:
    """(fixture, ordered, reference query) from an sql item's `tests`; see the module doc."""
    header: dict[str, str] = {}
    lines = tests.splitlines()
    body_start = len(lines)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        match = _HEADER.match(line.strip())
        if not match:
            body_start = i
            break
        header[match.group(1)] = match.group(2)
    unknown = set(header) - {"fixture", "compare"}
    if unknown:
        raise BadSqlTests(f"unknown header key(s): {', '.join(sorted(unknown))}")
    fixture = header.get("fixture")
    if fixture is None or not _FIXTURE_NAME.fullmatch(fixture):
        raise BadSqlTests("the tests must name a fixture: '-- fixture: <name>'")
    compare = header.get("compare", "unordered")
    if compare not in ("ordered", "unordered"):
        raise BadSqlTests(f"compare must be 'ordered' or 'unordered', not '{compare}'")
    reference = "\n".join(lines[body_start:]).strip()
    if not reference:
        raise BadSqlTests("the tests hold no reference query")
    return fixture, compare == "ordered", reference


@functools.cache
def fixture_sql(name: str) -> str:
    """The SQL text (schema and rows) of the fixture `name`, shipped in tunegate/resources."""
    if not _FIXTURE_NAME.fullmatch(name):
        raise BadSqlTests(f"bad fixture name '{name}'")
    resource = files("tunegate").joinpath(f"resources/{name}.sql")
    if not resource.is_file():
        raise BadSqlTests(f"no fixture '{name}' (tunegate/resources/{name}.sql)")
    return resource.read_text(encoding="utf-8")


def _authorize(action: int, *_: Any) -> int:
    # Reads only: no writes, no PRAGMA, no ATTACH, no temp tables; a fresh copy is cheap anyway.
    return sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY


def _fixture_connection(fixture: str) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.executescript(fixture_sql(fixture))
    conn.execute("PRAGMA query_only = ON")
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000)  # zeroblob(1e9) fails, not allocates
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 100_000)
    conn.set_authorizer(_authorize)
    return conn


class _Timeout(Exception):
    pass


def _query(conn: sqlite3.Connection, query: str, timeout_s: float) -> list[tuple[Any, ...]]:
    """The rows of `query`, interrupted after `timeout_s` (raises _Timeout)."""
    deadline = time.monotonic() + timeout_s
    expired = False

    def progress() -> int:
        nonlocal expired
        expired = time.monotonic() > deadline
        return 1 if expired else 0  # non-zero interrupts the running statement

    conn.set_progress_handler(progress, 1000)
    try:
        cursor = conn.execute(query)
        if cursor.description is None:
            raise sqlite3.ProgrammingError("not a query: it returns no result set")
        rows: list[tuple[Any, ...]] = []
        while batch := cursor.fetchmany(1000):
            rows.extend(batch)
            if len(rows) > MAX_ROWS:
                raise sqlite3.ProgrammingError(f"more than {MAX_ROWS:,} rows")
        return rows
    except sqlite3.OperationalError:
        if expired:
            raise _Timeout from None
        raise
    finally:
        conn.set_progress_handler(None, 0)


def _normalize(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]


def _show(rows: list[tuple[Any, ...]]) -> str:
    shown = ", ".join(repr(r) for r in rows[:5])
    return f"[{shown}{', ...' if len(rows) > 5 else ''}]"


def run_sql(query: str, tests: str, *, timeout_s: float = 5.0) -> Execution:
    """Run `query` and the reference in `tests` on the fixture; PASS if the result sets match.

    FAIL: the query errs (syntax, unknown column, a write, several statements) or its rows
    differ. TIMEOUT: it ran past `timeout_s`. ERROR: the tests or the fixture are broken.
    `exit_code` is 0 for PASS and 1 for FAIL (there is no child process), None otherwise.
    """
    started = time.perf_counter()

    def done(verdict: Verdict, detail: str) -> Execution:
        code = {"PASS": 0, "FAIL": 1}.get(verdict)
        return Execution(verdict, code, time.perf_counter() - started, detail[-2000:])

    try:
        fixture, ordered, reference = parse_sql_tests(tests)
        conn = _fixture_connection(fixture)
    except (BadSqlTests, sqlite3.Error) as err:
        return done("ERROR", f"bad sql tests: {err}")
    with contextlib.closing(conn):
        try:
            expected = _normalize(_query(conn, reference, timeout_s))
        except _Timeout:
            return done("ERROR", "the reference query timed out")
        except (sqlite3.Error, sqlite3.Warning) as err:
            return done("ERROR", f"the reference query failed: {err}")
        try:
            actual = _normalize(_query(conn, query, timeout_s))
        except _Timeout:
            return done("TIMEOUT", f"the query ran past {timeout_s} s")
        # sqlite3.Warning is "one statement at a time" on Python 3.11; anything else the query
        # provokes (an int too large, a recursion too deep) is the query's failure too.
        except Exception as err:
            return done("FAIL", f"{type(err).__name__}: {err}")
    same = actual == expected if ordered else Counter(actual) == Counter(expected)
    if same:
        return done("PASS", f"{len(actual)} rows match")
    how = "in order" if ordered else "as a multiset"
    return done(
        "FAIL",
        f"result set differs ({how}): expected {len(expected)} rows {_show(expected)}, "
        f"got {len(actual)} rows {_show(actual)}",
    )
