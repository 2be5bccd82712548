"""Run generated JavaScript and SQL against their tests, and dispatch on an item's language.

JavaScript runs under plain `node` with the same guarantees as `execute.run_python`: a child in
its own session, killed as a group on timeout; rlimits on CPU, memory, file size and open files;
a fresh temporary directory; a scrubbed environment (no `NODE_OPTIONS`, no
`NODE_EXTRA_CA_CERTS`, nothing of the parent's); and a verdict that `process.exit(0)` or printing
"PASSED" cannot forge. The tests are a CommonJS file that `require('./program.js')` and assert
with node's own `assert`; a harness loads the program, then the tests (awaiting them if they
export a function or a promise), and only then writes a nonce on a separate fd. The nonce reaches
the harness on stdin and is read before the program loads, so it is in neither argv, the
environment nor any file; `assert` is frozen before the program loads, so stubbing it out does
not make failing tests pass. Like the Python runner this is a baseline, not a sandbox: the
program shares the harness's isolate.

SQL is a single query against a named fixture database. An item's `tests` are a header of
`-- key: value` lines followed by the reference query:

    -- fixture: shop
    -- compare: ordered
    SELECT name FROM customers WHERE city = 'Lyon' ORDER BY name;

`fixture` names `tunegate/resources/<fixture>.sql` (schema and rows as SQL text). `compare` is
`ordered` (the rows must match in order: the reference has a top-level ORDER BY) or `unordered`
(the default: the rows must match as a multiset). Values are compared, not column names, so
aliases do not matter; floats are rounded to 6 decimals first, so a different summation order
does not fail a correct query. Both queries run in-process on a fresh in-memory copy of the
fixture: an authorizer allows only reads, ATTACH is disabled, strings and the result size are
capped, and a progress handler interrupts a query past its deadline.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from importlib.resources import files
from pathlib import Path
from typing import Any

from tunegate.evaluate.execute import Execution, run_program, run_python

LANGUAGES = frozenset({"python", "javascript", "sql"})

_JS_HARNESS = """\
'use strict';
// Everything the verdict depends on is captured before the program can touch it.
const fs = require('fs');
const Module = require('module');
const writeSync = fs.writeSync;
const exit = process.exit.bind(process);
const fd = Number(process.argv[2]);
// The job arrives on stdin (a pre-started spare waits here): the nonce, the program, its tests.
const job = JSON.parse(fs.readFileSync(0, 'utf8'));
const nonce = job.nonce;
fs.writeFileSync('program.js', job.program);
fs.writeFileSync('tests.js', job.tests);
delete job.nonce;
process.argv.length = 2;
// Frozen before the program loads: stubbing out assert, or intercepting the tests' require of
// it, must not turn failing tests into passing ones.
const assert = require('assert');
for (const target of [assert, assert.strict, require('assert/strict'), Module,
  Module.prototype, Module._extensions]) {
  Object.freeze(target);
}
function pass() {
  writeSync(fd, 'E ' + nonce + '\\n');
  exit(0);
}
function fail(err) {
  writeSync(2, String((err && err.stack) || err) + '\\n');
  exit(1);
}
// `loaded`, not exit(), guards pass(): a program can make process.exit return (it looks up
// process.reallyExit at call time).
let tests;
let loaded = false;
try {
  require('./program.js');
  tests = require('./tests.js');
  loaded = true;
} catch (err) {
  fail(err);
}
// Synchronous tests (all of tunegate's) have finished here, out of the program's reach. Tests
// that export an async function are awaited; they share the program's globals while they run.
if (loaded && typeof tests === 'function') {
  (async () => tests())().then(pass, fail);
} else if (loaded) {
  pass();
}
"""

# Resolved once: the child's PATH is scrubbed, so the parent's PATH decides which node runs.
_NODE = shutil.which("node")


def run_javascript(
    program: str, tests: str, *, timeout_s: float = 5.0, memory_mb: int = 1024
) -> Execution:
    """Run `program` as ./program.js, then the CommonJS `tests`; PASS only if they finished."""
    if _NODE is None:
        return Execution("ERROR", None, 0.0, "node is not installed (needed for javascript)")
    with tempfile.TemporaryDirectory(prefix="tunegate-exec-") as work:
        prepare_node_dir(Path(work))
        return run_program(
            node_argv(memory_mb),
            Path(work),
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            stdin=lambda nonce: node_job(nonce, program, tests),
        )


def prepare_node_dir(work: Path) -> None:
    # An explicit package.json: a "type": "module" in some parent folder must not turn the
    # CommonJS files into ES modules.
    (work / "package.json").write_text('{"type": "commonjs"}\n')
    (work / "harness.js").write_text(_JS_HARNESS)


def node_argv(memory_mb: int) -> list[str]:
    # V8's heap limit below the address-space limit: a memory bomb then fails as V8's own
    # out-of-memory abort instead of a failed mmap somewhere inside it.
    return [_NODE or "node", f"--max-old-space-size={max(memory_mb // 2, 64)}", "harness.js"]


def node_job(nonce: str, program: str, tests: str) -> bytes:
    return json.dumps({"nonce": nonce, "program": program, "tests": tests}).encode()


# --- SQL -------------------------------------------------------------------------------------

MAX_ROWS = 100_000  # more rows than any fixture question needs: a runaway query, not an answer
_FIXTURE_NAME = re.compile(r"[a-z0-9_]+")
_HEADER = re.compile(r"--\s*([a-z_]+)\s*:\s*(\S+)\s*$")
_ALLOWED = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


class _TestsError(ValueError):
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
        raise _TestsError(f"unknown header key(s): {', '.join(sorted(unknown))}")
    fixture = header.get("fixture")
    if fixture is None or not _FIXTURE_NAME.fullmatch(fixture):
        raise _TestsError("the tests must name a fixture: '-- fixture: <name>'")
    compare = header.get("compare", "unordered")
    if compare not in ("ordered", "unordered"):
        raise _TestsError(f"compare must be 'ordered' or 'unordered', not '{compare}'")
    reference = "\n".join(lines[body_start:]).strip()
    if not reference:
        raise _TestsError("the tests hold no reference query")
    return fixture, compare == "ordered", reference


@functools.cache
def fixture_sql(name: str) -> str:
    """The SQL text (schema and rows) of the fixture `name`, shipped in tunegate/resources."""
    if not _FIXTURE_NAME.fullmatch(name):
        raise _TestsError(f"bad fixture name '{name}'")
    resource = files("tunegate").joinpath(f"resources/{name}.sql")
    if not resource.is_file():
        raise _TestsError(f"no fixture '{name}' (tunegate/resources/{name}.sql)")
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

    def done(verdict: Any, detail: str) -> Execution:
        code = {"PASS": 0, "FAIL": 1}.get(verdict)
        return Execution(verdict, code, time.perf_counter() - started, detail[-2000:])

    try:
        fixture, ordered, reference = parse_sql_tests(tests)
        conn = _fixture_connection(fixture)
    except (_TestsError, sqlite3.Error) as err:
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


# --- dispatch --------------------------------------------------------------------------------


def execute(language: str, program: str, tests: str, timeout_s: float = 5.0) -> Execution:
    """Run `program` with `tests` by the item's language (python, javascript or sql)."""
    if language == "python":
        from tunegate.evaluate.pool import default_pool

        pool = default_pool()
        if pool is not None:  # pre-warmed workers: same verdicts, milliseconds each
            return pool.run(program, tests, timeout_s=timeout_s)
        return run_python(program, tests, timeout_s=timeout_s)
    if language == "javascript":
        if _NODE is None:
            return run_javascript(program, tests, timeout_s=timeout_s)  # its ERROR says why
        from tunegate.evaluate.pool import default_node_spares

        return default_node_spares().run(program, tests, timeout_s=timeout_s)
    if language == "sql":
        return run_sql(program, tests, timeout_s=timeout_s)
    raise ValueError(
        f"no executor for language '{language}' (known: {', '.join(sorted(LANGUAGES))})"
    )
