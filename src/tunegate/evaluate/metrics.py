"""Metrics: per-item scores over an arm's generation. Aggregation and statistics live elsewhere.

Each metric maps (item, generation) → a float in [0, 1], or None with a reason when it cannot
run for that item (e.g. no tests) — never a made-up value.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Callable
from dataclasses import dataclass

from tunegate.data.items import Item
from tunegate.evaluate.execute_more import LANGUAGES, execute


@dataclass
class Score:
    value: float | None
    detail: str = ""


def extract_code(generation: str) -> str:
    """The code in a generation: a fenced block if there is one, else the text itself."""
    fenced = re.search(r"```[a-zA-Z0-9_+-]*\n(.*?)```", generation, re.S)
    return fenced.group(1) if fenced else generation


def normalize_code(code: str, language: str) -> str:
    """Whitespace- and comment-insensitive form; AST-normalized for Python when it parses."""
    if language == "python":
        try:
            return ast.dump(ast.parse(code))
        except SyntaxError:
            try:
                tokens = tokenize.generate_tokens(io.StringIO(code).readline)
                code = " ".join(
                    t.string
                    for t in tokens
                    if t.type
                    not in (
                        tokenize.COMMENT,
                        tokenize.NL,
                        tokenize.NEWLINE,
                        tokenize.INDENT,
                        tokenize.DEDENT,
                        tokenize.ENDMARKER,
                    )
                )
            except (tokenize.TokenError, IndentationError, SyntaxError):
                pass
    else:
        code = _strip_comments(code, LINE_COMMENT.get(language, "//"))
    return " ".join(code.split())


LINE_COMMENT = {"javascript": "//", "typescript": "//", "sql": "--"}


def _strip_comments(code: str, line_comment: str) -> str:
    """Drop line and block comments but not look-alikes inside strings (`'http://x'`, `i--`
    only matters for SQL's `--`, which JavaScript never treats as a comment)."""
    strings = r"\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|`(?:\\.|[^`\\])*`"
    pattern = re.compile(rf"({strings})|{re.escape(line_comment)}[^\n]*|/\*.*?\*/", re.S)
    return pattern.sub(lambda m: m.group(1) or "", code)


def code_accuracy(item: Item, generation: str, timeout_s: float) -> Score:
    same = normalize_code(extract_code(generation), item.language) == normalize_code(
        item.completion, item.language
    )
    return Score(1.0 if same else 0.0)


def functional_correctness(item: Item, generation: str, timeout_s: float) -> Score:
    if not item.tests:
        return Score(None, "item has no tests")
    if item.language not in LANGUAGES:
        return Score(None, f"no executor for language '{item.language}'")
    result = execute(item.language, extract_code(generation), item.tests, timeout_s=timeout_s)
    return Score(1.0 if result.verdict == "PASS" else 0.0, result.verdict)


METRICS: dict[str, Callable[[Item, str, float], Score]] = {
    "code_accuracy": code_accuracy,
    "functional_correctness": functional_correctness,
}
BINARY_METRICS = frozenset({"code_accuracy", "functional_correctness"})
