"""Test checks the harness verifies itself, outside the program's process.

A program shares its interpreter with the Python code that runs its tests, so anything that code
holds (a nonce, the expected values) the program can find by walking frames, and any object it
returns can define `__eq__` to answer True. So the expected values never enter the sandbox:
before a run, `instrument` rewrites each test assertion of the form `assert VALUE == LITERAL` (or
`!=`, `is None/True/False`, `in [literal, …]`) into `__tg_record__(ID, VALUE)`, and keeps the
literal here. In the sandbox, the recorder (`programs/recorder.py`, which also codes the literals
here) turns VALUE into a canonical code that follows Python's `==` on plain data (1 == 1.0 ==
True, list ≠ tuple, sets and dicts unordered; any other type, e.g. an object with its own
`__eq__`, codes as unequal to every literal) and writes its digest on the result channel;
`Instrumented.verify` compares it with the literal's digest. To forge a PASS a program must
produce values whose digests match literals it cannot see, i.e. compute the right answers.

Assertions between two computed values (`assert f(x) == reference(x)`) are compared by the same
canonical codes inside the sandbox (`__tg_pair__`), which defeats always-equal objects but rests
on the nonce like every other assertion; `verify` counts how many checks were verified outside.
Line numbers are preserved, so tracebacks still point at the test's own lines.

Unlike a plain `assert`, a recorded check does not stop the tests: the program cannot be told
whether it passed. A recorded mismatch is a FAIL whatever happens after it.
"""

from __future__ import annotations

import ast
import functools
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from tunegate.sandbox.programs.recorder import digest, encode

Op = Literal["eq", "ne", "is", "isnot", "in", "notin", "pair"]
_OPS: dict[type, Op] = {
    ast.Eq: "eq",
    ast.NotEq: "ne",
    ast.Is: "is",
    ast.IsNot: "isnot",
    ast.In: "in",
    ast.NotIn: "notin",
}
_SINGLETONS = (None, True, False)
# A check under one of these may legitimately never run.
_CONDITIONAL = (ast.If, ast.While, ast.Try, ast.With, ast.Match, ast.ExceptHandler)


@dataclass(frozen=True)
class Check:
    line: int
    source: str  # the assertion's condition, for messages
    op: Op
    expected: frozenset[str]  # digests the value must (eq, is, in) or must not match
    required: bool  # unconditional: it must have run for the tests to have run


@dataclass
class Outcome:
    """What the harness saw: the nonce, the checks that ran, and any that failed."""

    nonce_seen: bool
    failures: list[str] = field(default_factory=list)  # a recorded mismatch: FAIL
    missing: list[str] = field(default_factory=list)  # required checks that never ran
    verified: int = 0  # checks compared here, against values the program never had
    total: int = 0  # every assertion in the tests (constant `assert True` aside)

    @property
    def summary(self) -> str:
        """What the checks showed, for a results row: how many were compared outside the
        program (not how many held) and, when some failed, the first of them."""
        if not self.total:
            return ""
        compared = f"{self.verified}/{self.total} test checks verified outside the program"
        if not self.failures:
            return compared
        first = self.failures[0] if len(self.failures[0]) <= 120 else self.failures[0][:119] + "…"
        return f"{len(self.failures)} failed, first {first}; {compared}"


@dataclass(frozen=True)
class Instrumented:
    tests: str  # the rewritten tests, same line numbers
    checks: dict[int, Check]
    assertions: int  # every non-constant assertion, rewritten or not

    def verify(self, channel: str, nonce: str) -> Outcome:
        """Judge what the sandbox wrote on the result channel."""
        outcome = Outcome(nonce_seen=False, total=self.assertions)
        ran: set[int] = set()
        for line in channel.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "E":
                outcome.nonce_seen = outcome.nonce_seen or rest.strip() == nonce
                continue
            if kind not in ("R", "P"):
                continue
            ident, _, rest = rest.partition(" ")
            value, _, shown = rest.partition(" ")
            check = self.checks.get(int(ident)) if ident.isdigit() else None
            if check is None or (kind == "P") != (check.op == "pair"):
                continue
            ran.add(int(ident))
            if not _holds(check, value):
                got = f" (got {shown})" if shown else ""
                outcome.failures.append(f"tests line {check.line}: {check.source}{got}")
        outcome.missing = [
            f"tests line {c.line}: {c.source} never ran"
            for i, c in self.checks.items()
            if c.required and i not in ran
        ]
        outcome.verified = sum(1 for i, c in self.checks.items() if c.op != "pair" and i in ran)
        return outcome


NO_CHECKS = Instrumented("", {}, 0)  # for harnesses that report only the nonce (JavaScript)


def _holds(check: Check, value: str) -> bool:
    if check.op == "pair":
        return value == "1"
    matched = value in check.expected
    return matched if check.op in ("eq", "is", "in") else not matched


# CPython 3.11's AST constructor keeps its recursion depth in shared state: two threads parsing
# at once can fail with "SystemError: AST constructor recursion depth mismatch".
_PARSE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=512)  # pass@k runs the same tests for each of an item's n samples
def instrument(tests: str) -> Instrumented:
    """Rewrite `tests` so that their literal comparisons are judged by the harness."""
    try:
        with _PARSE_LOCK:
            tree = ast.parse(tests)
    except SyntaxError:
        return Instrumented(tests, {}, 0)  # the run reports the syntax error itself
    raw = tests.encode("utf-8")
    starts = [0]
    for line in raw.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(line: int, col: int) -> int:
        return starts[line - 1] + col

    def segment(node: ast.expr | ast.stmt) -> str:
        assert node.end_lineno is not None and node.end_col_offset is not None
        return raw[
            offset(node.lineno, node.col_offset) : offset(node.end_lineno, node.end_col_offset)
        ].decode("utf-8")

    checks: dict[int, Check] = {}
    edits: list[tuple[int, int, str]] = []
    assertions = 0
    for node, conditional in _asserts(tree):
        if isinstance(node.test, ast.Constant):
            continue  # `assert True, "…"`: nothing of the program's is checked
        assertions += 1
        rewrite = _rewrite(node.test, segment)
        if rewrite is None:
            continue
        op, expected, call = rewrite
        ident = len(checks)
        original = segment(node)
        text = call.replace("@ID@", str(ident), 1)
        text = text[:-1] + "\n" * (original.count("\n") - text.count("\n")) + ")"
        checks[ident] = Check(
            node.lineno, " ".join(segment(node.test).split())[:160], op, expected, not conditional
        )
        start = offset(node.lineno, node.col_offset)
        edits.append((start, start + len(original.encode("utf-8")), text))
    for start, end, text in sorted(edits, reverse=True):
        raw = raw[:start] + text.encode("utf-8") + raw[end:]
    return Instrumented(raw.decode("utf-8"), checks, assertions)


def _asserts(tree: ast.Module) -> list[tuple[ast.Assert, bool]]:
    """Every assert statement, and whether it sits under a branch (so may rightly never run).
    Only statement lists are walked: an assert cannot hide inside an expression."""
    found: list[tuple[ast.Assert, bool]] = []

    def walk(statements: list[Any], conditional: bool) -> None:
        for node in statements:
            if isinstance(node, ast.Assert):
                found.append((node, conditional))
                continue
            branch = conditional or isinstance(node, _CONDITIONAL)
            for name in ("body", "orelse", "finalbody", "handlers", "cases"):
                inner = getattr(node, name, None)
                if isinstance(inner, list):
                    walk(inner, branch)

    walk(tree.body, False)
    return found


_LITERAL_NODES = (ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.UnaryOp, ast.BinOp)


def _literal(node: ast.expr) -> tuple[bool, Any]:
    if not isinstance(node, _LITERAL_NODES):
        return False, None  # a call or a name: no need to pay for literal_eval's exception
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _rewrite(test: ast.expr, segment: Any) -> tuple[Op, frozenset[str], str] | None:
    """(op, expected digests, replacement call with an @ID@ slot), or None to leave as is."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    op = _OPS.get(type(test.ops[0]))
    left, right = test.left, test.comparators[0]
    left_literal, left_value = _literal(left)
    right_literal, right_value = _literal(right)
    if op in ("eq", "ne") and (left_literal or right_literal):
        value, expected = (right, left_value) if left_literal else (left, right_value)
        expected_digest = frozenset({digest(encode(expected))})
        return op, expected_digest, f"__tg_record__(@ID@, ({segment(value)}))"
    if op in ("is", "isnot") and right_literal and any(right_value is x for x in _SINGLETONS):
        expected_digest = frozenset({digest(encode(right_value, 1))})
        return op, expected_digest, f"__tg_record__(@ID@, ({segment(left)}), 1)"
    if op in ("in", "notin") and right_literal and isinstance(right_value, list | tuple | set):
        digests = frozenset(digest(encode(x)) for x in right_value)
        return op, digests, f"__tg_record__(@ID@, ({segment(left)}))"
    if op == "eq":
        call = f"__tg_pair__(@ID@, ({segment(left)}), ({segment(right)}))"
        return "pair", frozenset(), call
    return None
