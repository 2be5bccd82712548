"""Does a generation parse? A per-language syntax check that never runs the code.

- python: `compile()`. It parses and compiles to bytecode, nothing more; CPython's constant
  folding is size-capped, so even `"x" * 10**9` compiles without allocating.
- javascript: the tree-sitter-javascript grammar (the one CodeBLEU uses) parses with no ERROR or
  MISSING node. This is a grammar check: it accepts JSX, and it does not report V8's early
  errors (a duplicate `let`, `return` at top level), which only running the code would catch.
- typescript: only where a tree-sitter-typescript grammar is installed; tunegate does not pin one.
- sql: the query is compiled, not run, by SQLite: `EXPLAIN <query>` on a fresh in-memory copy of
  the item's fixture. Compiling resolves tables and columns, so a misspelled column is invalid;
  a write (DROP, DELETE) compiles and is reported valid, and EXPLAIN leaves the data as it was.
  SQLite applies some PRAGMAs while compiling (`hard_heap_limit` is process-wide), so an
  authorizer refuses PRAGMA and ATTACH, and the database is `query_only` besides.

An empty (or whitespace-only) generation is invalid in every language, although `compile("")`
and the JavaScript grammar accept it: no code is not working code. A check never raises for bad
code; it raises Unsupported (not applicable) for a language it has no check for, and CannotRun
when the TypeScript grammar it needs is not installed.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from typing import Any

from tunegate.evaluate.similarity import Unsupported
from tunegate.registry import SYNTAX_CHECKED
from tunegate.score import CannotRun

LANGUAGES = SYNTAX_CHECKED  # declared in the registry; typescript only if its grammar is installed

_VALID = "ok"


def syntax_valid(code: str, language: str, *, fixture_sql: str | None = None) -> tuple[bool, str]:
    """(whether `code` parses or compiles as `language`, a detail saying where it fails).

    `fixture_sql` is the SQL text (schema and rows) an sql item runs against; None compiles
    against an empty database, where every table is unknown. Ignored for other languages.
    """
    if language not in LANGUAGES:
        raise Unsupported(
            f"no syntax check for {language!r} (known: {', '.join(sorted(LANGUAGES))})"
        )
    if language == "typescript":
        _tree_sitter_language("typescript")  # raises CannotRun before judging any code
    if not code.strip():
        return False, "empty"
    if language == "python":
        return _python(code)
    if language == "sql":
        return _sql(code, fixture_sql)
    return _tree_sitter(code, language)


# --- python ----------------------------------------------------------------------------------


def _python(code: str) -> tuple[bool, str]:
    try:
        compile(code, "<generation>", "exec", dont_inherit=True)
    except SyntaxError as err:  # IndentationError and TabError included
        return False, f"line {err.lineno}: {err.msg}" if err.lineno else err.msg  # NUL: no line
    # ValueError: a NUL byte (older 3.11); RecursionError, MemoryError: nesting too deep.
    except (ValueError, RecursionError, MemoryError) as err:
        return False, f"{type(err).__name__}: {err}"
    return True, _VALID


# --- javascript (tree-sitter) ----------------------------------------------------------------


@functools.cache
def _tree_sitter_language(language: str) -> Any:
    from tree_sitter import Language

    if language == "javascript":
        import tree_sitter_javascript

        return Language(tree_sitter_javascript.language())
    try:
        import tree_sitter_typescript
    except ImportError as err:
        raise CannotRun(
            "no TypeScript grammar installed: pip install tree-sitter-typescript (a version "
            "built for tree-sitter 0.22)"
        ) from err
    try:
        return Language(tree_sitter_typescript.language_typescript())
    except Exception as err:  # a grammar built for another tree-sitter ABI
        raise CannotRun(f"the installed TypeScript grammar does not load: {err}") from err


_parsers = threading.local()  # a tree-sitter Parser is not thread-safe: one per thread


def _parser(language: str) -> Any:
    from tree_sitter import Parser

    cache: dict[str, Any] | None = getattr(_parsers, "by_language", None)
    if cache is None:
        cache = _parsers.by_language = {}
    if language not in cache:
        cache[language] = Parser(_tree_sitter_language(language))
    return cache[language]


def _tree_sitter(code: str, language: str) -> tuple[bool, str]:
    root = _parser(language).parse(code.encode("utf-8", "replace")).root_node
    if not root.has_error:
        return True, _VALID
    # Pre-order, descending only into subtrees that hold an error: the first hit is the first
    # error in the text.
    stack = [root]
    while stack:
        node = stack.pop()
        line = node.start_point[0] + 1
        if node.is_missing:
            return False, f"line {line}: missing {node.type!r}"
        if node.type == "ERROR":
            text = (node.text or b"").decode("utf-8", "replace").strip().splitlines()
            near = f" near {text[0][:40]!r}" if text else ""
            return False, f"line {line}: syntax error{near}"
        stack.extend(child for child in reversed(node.children) if child.has_error)
    return False, "syntax error"  # has_error without an ERROR or MISSING node: not seen so far


# --- sql -------------------------------------------------------------------------------------

# Compile-time side effects: some PRAGMAs act while the statement compiles (process-wide ones
# among them), and ATTACH names files. Everything else only compiles under EXPLAIN.
_REFUSED = frozenset({sqlite3.SQLITE_PRAGMA, sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH})


def _authorize(action: int, *_: Any) -> int:
    return sqlite3.SQLITE_DENY if action in _REFUSED else sqlite3.SQLITE_OK


def _sql(query: str, fixture_sql: str | None) -> tuple[bool, str]:
    conn = sqlite3.connect(":memory:")  # fresh each time (~0.5 ms with the shop fixture)
    with contextlib.closing(conn):
        if fixture_sql:
            try:
                conn.executescript(fixture_sql)
            except sqlite3.Error as err:  # the item's fault, not the generation's
                raise ValueError(f"the fixture SQL does not load: {err}") from err
        conn.execute("PRAGMA query_only = ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 100_000)
        conn.set_authorizer(_authorize)
        try:
            # Compiles the statement (and a second one is refused) but steps only EXPLAIN's
            # listing of its bytecode: the statement itself never runs.
            explained = query.lstrip().upper().startswith("EXPLAIN")
            conn.execute(query if explained else f"EXPLAIN {query}")
        # sqlite3.Warning: "one statement at a time" on some 3.11 builds; ValueError: a NUL.
        except (sqlite3.Error, sqlite3.Warning, ValueError) as err:
            message = str(err)
            if "one statement at a time" in message:
                return False, "more than one statement"
            if message == "not authorized":
                return False, "PRAGMA and ATTACH are not checked: they can act while compiling"
            return False, message
    return True, _VALID
