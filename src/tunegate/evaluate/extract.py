"""The code in a model's answer: what every code metric scores.

A completion model answers with code; an instruct model answers in prose around a fenced block,
sometimes several blocks, sometimes no fence, sometimes cut off at the token limit, often with
example calls after the function. `extract_code(answer, language=..., entry_point=...)` is the
one way tunegate turns either into a program; `extract` gives the same code with how it was
found. The rules, in order:

1. **Fenced blocks** (```` ``` ```` or `~~~`, any info string, indented fences too). The
   candidates are the blocks tagged with the item's language or untagged (all blocks when none
   is). With an entry point, the first candidate that defines it (Python `def`/`async def`/
   `class`/assignment, JavaScript `function NAME`, `const NAME =`, `NAME: function`, ...; a
   model's first answer is its answer, later ones are usually variants or usage). Without one,
   or when no block defines it: the first block tagged with the language, else the first
   candidate. An opening fence never closed (the answer was cut off) is a block that runs to
   the end of the answer.
2. **Python, several blocks, the entry point's block chosen**: that block is completed from
   the other candidates with the top-level imports, functions and classes whose names it uses
   and does not bind (and what those need), in the answer's order, imports first, before it.
   Only definitions and imports travel: a usage block's calls and prints never join.
3. **No fence, Python**: an answer that parses is code as it is ("raw": what completion models
   give). Otherwise prose is stripped: the code starts at the first line that opens a
   definition or import (`def`, `async def`, `class`, `import`, `from x import`, `@`), and ends
   where the longest run of lines from there that still parses ends, provided what follows
   starts with a line of prose (a sentence, `Output:`, a list item). Parsing decides, not a
   pattern per construct. An answer that starts with code and is merely broken is not prose
   around code: it stays as it is, so broken code scores as broken.
4. **No fence, other languages**: unchanged; without a parser, cutting prose from JavaScript or
   SQL risks cutting code.
5. **Python, when the entry point is given and defined at the top level**, top-level code that
   would run when the program is loaded is dropped: expression statements (example calls,
   `print(...)`), `assert`s, loops, `with`, `if __name__ == "__main__":` blocks, and
   assignments that call the answer's own functions or `input()`. Kept: imports, function and
   class definitions, other assignments (constants, compiled patterns), docstrings, and `try`/
   `if` blocks made only of those. Why: the harness runs the program and then the tests in one
   process, so an `assert` with a wrong expectation fails a correct function, `input()` waits
   for a stdin that never comes, and example calls only add output (or raise on their own bad
   arguments); the tests call the entry point themselves. A module-level call the function
   needs (`sys.setrecursionlimit(...)`) is lost too: rare in an answer to a function prompt,
   where example calls are common. Without an entry point the answer may be a script whose
   top-level code *is* the answer, so nothing is dropped.
6. **Python, from a fence or prose** (not raw): when the code does not parse but a prefix
   ending before a top-level line does and defines the entry point, the broken tail (an example
   call cut off at the token limit) is cut: it was after the function, and would otherwise make
   a finished function a syntax error. A function cut off inside its body stays broken.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import re
import textwrap
from dataclasses import dataclass

__all__ = ["Extraction", "entry_point_from_tests", "extract", "extract_code"]

# Fence tags per language; an untagged block may hold any language.
_TAGS: dict[str, frozenset[str]] = {
    "python": frozenset({"python", "py", "python3", "py3"}),
    "javascript": frozenset({"javascript", "js", "jsx", "node", "nodejs", "mjs"}),
    "typescript": frozenset({"typescript", "ts", "tsx"}),
    "sql": frozenset({"sql", "sqlite", "sqlite3", "postgresql", "postgres", "mysql"}),
}

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_PY_START = re.compile(
    r"^(?:(?:async[ \t]+)?def[ \t]+\w|class[ \t]+\w|import[ \t]+\w"
    r"|from[ \t]+[\w.]+[ \t]+import\b|@\w)"
)
_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class Extraction:
    """The code found in an answer and how: `raw` (the answer as it is), `fenced` (its only
    block), `fenced:N-of-M` (block N of M), `unclosed` (a fence cut off), `unfenced` (prose
    stripped), with `+joined` when other blocks' imports or helpers were added; `dropped` names
    the top-level statements rule 5 removed, `cut` the broken tail rule 6 removed."""

    code: str
    how: str
    dropped: tuple[str, ...] = ()
    cut: bool = False


@dataclass(frozen=True)
class _Block:
    tag: str
    text: str
    closed: bool


def extract_code(answer: str, *, language: str = "python", entry_point: str | None = None) -> str:
    """The program in a model's answer (the module docstring has the rules)."""
    return extract(answer, language=language, entry_point=entry_point).code


def extract(answer: str, *, language: str = "python", entry_point: str | None = None) -> Extraction:
    """`extract_code` with how the code was found."""
    blocks = _fenced_blocks(answer)
    if blocks:
        code, how = _choose(blocks, language, entry_point)
        trusted = False
    elif language == "python":
        code, how = _unfenced_python(answer)
        trusted = how == "raw"
    else:
        return Extraction(answer, "raw")
    if language != "python" or not entry_point:
        return Extraction(code, how)
    cut = False
    if not trusted and _parse(code) is None:
        trimmed = _cut_broken_tail(code, entry_point)
        if trimmed is not None:
            code, cut = trimmed, True
    code, dropped = _drop_top_level_code(code, entry_point)
    return Extraction(code, how, dropped, cut)


def entry_point_from_tests(tests: str | None, language: str = "python") -> str | None:
    """The function Python tests call without defining it (`check(NAME)` in HumanEval's,
    `assert NAME(...)` in others), when there is exactly one; else None. An arm whose items
    carry no metadata is then extracted as the arm whose items do: the same rules for both."""
    if not tests or language != "python":
        return None
    tree = _parse(tests)
    if tree is None:
        return None
    names = _free_names(tree)
    return next(iter(names)) if len(names) == 1 else None


# --- fences ------------------------------------------------------------------------------------


def _fenced_blocks(answer: str) -> list[_Block]:
    """Every fenced block, in order; an unclosed last one runs to the end (CommonMark's rule:
    a closing fence uses the opening's character, at least as many, and nothing after it)."""
    blocks: list[_Block] = []
    lines = answer.splitlines()
    k = 0
    while k < len(lines):
        opening = _OPEN.match(lines[k])
        if opening is None:
            k += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"].expandtabs())
        info = opening["info"].strip()
        tag = info.split()[0].lower().strip("{}.") if info else ""
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = next((j for j in range(k + 1, len(lines)) if close.match(lines[j])), None)
        body = lines[k + 1 : end if end is not None else len(lines)]
        # A fence indented inside a list item indents its code as much: remove that much.
        body = [_unindent(line, indent) for line in body]
        blocks.append(_Block(tag, "".join(line + "\n" for line in body), end is not None))
        k = (end if end is not None else len(lines)) + 1
    return blocks


def _unindent(line: str, width: int) -> str:
    spaces = len(line) - len(line.lstrip(" "))
    return line[min(spaces, width) :]


def _fits(tag: str, language: str) -> bool:
    return tag in _TAGS.get(language, frozenset({language}))


def _choose(blocks: list[_Block], language: str, entry_point: str | None) -> tuple[str, str]:
    candidates = [b for b in blocks if not b.tag or _fits(b.tag, language)] or blocks
    chosen = None
    if entry_point:
        chosen = next((b for b in candidates if _defines(b.text, entry_point, language)), None)
    if chosen is None:
        chosen = next((b for b in candidates if _fits(b.tag, language)), candidates[0])
    k = blocks.index(chosen)
    how = "fenced" if len(blocks) == 1 else f"fenced:{k + 1}-of-{len(blocks)}"
    if not chosen.closed:
        how = "unclosed" if len(blocks) == 1 else f"unclosed:{k + 1}-of-{len(blocks)}"
    code = chosen.text
    # Joining completes the entry point's definition; without one there is nothing to complete.
    if language == "python" and entry_point and len(candidates) > 1:
        others = [b.text for b in candidates if b is not chosen]
        joined = _join_python(code, others)
        if joined != code:
            code, how = joined, how + "+joined"
    return code, how


def _defines(code: str, name: str, language: str) -> bool:
    """Whether `code` defines `name` at all (at any depth: a block cut off still counts)."""
    n = re.escape(name)
    if language == "python":
        tree = _parse(code)
        if tree is not None:
            return name in _top_level_names(tree)
        return (
            re.search(rf"^[ \t]*(?:(?:async[ \t]+)?def|class)[ \t]+{n}\b", code, re.M) is not None
        )
    if language in ("javascript", "typescript"):
        patterns = [
            rf"\bfunction\s*\*?\s*{n}\s*\(",
            rf"\b(?:const|let|var)\s+{n}\s*[=:]",
            rf"\bclass\s+{n}\b",
            rf"\b{n}\s*[:=]\s*(?:async\s*)?(?:function\b|\(|\w+\s*=>)",
            rf"\bexports\.{n}\s*=",
        ]
        return any(re.search(p, code) for p in patterns)
    return re.search(rf"\b{n}\b", code) is not None


# --- Python ------------------------------------------------------------------------------------


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: a NUL byte
        return None


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in stmt.names}
    return names


def _free_names(node: ast.AST) -> set[str]:
    """Names `node` reads and binds nowhere, builtins aside. Scopes are not told apart: a name
    bound anywhere counts as bound (it can only miss a need, never invent one)."""
    loaded: set[str] = set()
    bound: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            (loaded if isinstance(n.ctx, ast.Load) else bound).add(n.id)
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(n.name)
        elif isinstance(n, ast.arg):
            bound.add(n.arg)
        elif isinstance(n, ast.alias):
            bound.add((n.asname or n.name).split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
    return loaded - bound - _BUILTINS


def _lines_of(stmt: ast.stmt, lines: list[str]) -> str:
    """A top-level statement's source, its decorators included."""
    decorators = getattr(stmt, "decorator_list", [])
    start = min([stmt.lineno, *(d.lineno for d in decorators)])
    end = stmt.end_lineno or stmt.lineno
    return "".join(line + "\n" for line in lines[start - 1 : end])


def _join_python(code: str, others: list[str]) -> str:
    """`code` preceded by the imports and definitions it needs from the other blocks (rule 2)."""
    tree = _parse(code)
    if tree is None:
        return code
    needed = _free_names(tree)
    available: list[tuple[set[str], ast.stmt, str, list[str]]] = []
    for text in others:
        other = _parse(text)
        if other is None:
            continue
        lines = text.splitlines()
        for stmt in other.body:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                names = {(a.asname or a.name).split(".")[0] for a in stmt.names}
            elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = {stmt.name}
            else:
                continue
            available.append((names, stmt, text, lines))
    taken: list[int] = []
    changed = True
    while changed:  # helpers may need imports and helpers of their own
        changed = False
        for k, (names, stmt, _, _) in enumerate(available):
            if k not in taken and names & needed:
                taken.append(k)
                needed |= _free_names(stmt) - names
                needed -= names
                changed = True
    if not taken:
        return code
    pieces: list[str] = []
    for k in sorted(taken):  # the answer's order
        _, stmt, _, lines = available[k]
        piece = _lines_of(stmt, lines).rstrip()
        if piece not in pieces:
            pieces.append(piece)
    imports = "\n".join(p for p in pieces if p.startswith(("import ", "from ")))
    helpers = "\n\n".join(p for p in pieces if not p.startswith(("import ", "from ")))
    return "\n\n".join(part for part in (imports, helpers) if part) + "\n\n" + code.lstrip("\n")


def _is_prose(line: str) -> bool:
    """A line of a model's talk rather than code: a sentence, `Output:`, a list item."""
    s = line.strip()
    if not s or s.startswith("#") or line[0] in " \t":
        return False  # an indented line continues the code (a body cut off, say)
    if re.match(r"^(?:[-*+]|\d+[.)])\s+\S", s):
        return True
    if keyword.iskeyword(s.split()[0].rstrip(":,.")):
        return False
    if _parse(s) is not None or (s.endswith(":") and _parse(s + "\n pass") is not None):
        return False  # a statement on its own (an example call, `x = 1`, `for x in y:`)
    if not re.match(r"^[A-Za-z`*]", s):
        return False
    # A label (`Output:`, `Example usage:`) or a sentence; one broken word (`foo(`) is code.
    return s.endswith(":") or len(s.split()) >= 3


def _unfenced_python(answer: str) -> tuple[str, str]:
    if _parse(answer) is not None:
        return answer, "raw"
    lines = answer.splitlines()
    start = next((k for k, line in enumerate(lines) if _PY_START.match(line.lstrip())), None)
    if start is None:
        return answer, "raw"
    prose_before = any(line.strip() for line in lines[:start])
    region = lines[start:]
    end = None
    for j in range(len(region), 0, -1):
        if _parse(textwrap.dedent("\n".join(region[:j]))) is not None:
            end = j
            break
    rest = [line for line in region[end or 0 :] if line.strip()]
    if end is not None and (not rest or _is_prose(rest[0])):
        code = textwrap.dedent("".join(line + "\n" for line in region[:end])).rstrip() + "\n"
        return code, "unfenced"
    if prose_before:  # prose, then code that does not parse: the code, broken as it is
        return textwrap.dedent("".join(line + "\n" for line in region)), "unfenced"
    return answer, "raw"


def _cut_broken_tail(code: str, entry_point: str) -> str | None:
    """Rule 6: the longest prefix ending before a top-level line that parses and defines the
    entry point, or None."""
    lines = code.splitlines()
    for k in range(len(lines) - 1, 0, -1):
        line = lines[k]
        if not line.strip() or line[0] in " \t#":
            continue
        prefix = "".join(x + "\n" for x in lines[:k]).rstrip() + "\n"
        tree = _parse(prefix)
        if tree is not None:
            return prefix if entry_point in _top_level_names(tree) else None
    return None


def _is_main_guard(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.If)
        and isinstance(stmt.test, ast.Compare)
        and "__name__" in ast.unparse(stmt.test)
    )


def _calls(node: ast.AST, names: set[str]) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names
        for n in ast.walk(node)
    )


def _keeps(stmt: ast.stmt, own: set[str]) -> bool:
    """Rule 5: whether a top-level statement stays in the program."""
    if isinstance(stmt, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.AsyncFunctionDef):
        return True
    if isinstance(stmt, ast.ClassDef):
        return True
    if isinstance(stmt, ast.Expr):
        return isinstance(stmt.value, ast.Constant)  # a docstring; calls are examples
    if isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
        return not _calls(stmt, own | {"input", "print"})
    if isinstance(stmt, ast.Try):
        inner = [*stmt.body, *stmt.orelse, *stmt.finalbody]
        inner += [s for h in stmt.handlers for s in h.body]
        return all(_keeps(s, own) for s in inner)
    if isinstance(stmt, ast.If) and not _is_main_guard(stmt):
        return all(_keeps(s, own) for s in [*stmt.body, *stmt.orelse])
    return False  # assert, loops, with, the __main__ guard, raise, del, ...


def _drop_top_level_code(code: str, entry_point: str) -> tuple[str, tuple[str, ...]]:
    tree = _parse(code)
    if tree is None or entry_point not in _top_level_names(tree):
        return code, ()
    own = {
        s.name
        for s in tree.body
        if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    drop = [s for s in tree.body if not _keeps(s, own)]
    if not drop:
        return code, ()
    lines = code.splitlines(keepends=True)
    gone: set[int] = set()
    for stmt in drop:
        start, end = stmt.lineno - 1, (stmt.end_lineno or stmt.lineno) - 1
        # A comment right above an example ("# Test the function") goes with it.
        while start > 0 and lines[start - 1].strip().startswith("#"):
            start -= 1
        gone |= set(range(start, end + 1))
    kept = "".join(line for k, line in enumerate(lines) if k not in gone).rstrip() + "\n"
    names = tuple(f"line {s.lineno}: {type(s).__name__.lower()}" for s in drop)
    return kept, names
