"""Hostile plans: each is refused in one line naming the file and the line, exit 2, with no
traceback, in under 10 s and under 1 GB; or, where it is merely unusual, loaded (exit 0) with a
warning naming the line. Every case runs `tunegate plan` as a user would (`tunegate run` loads a
plan through the same `load_plan`).

The corpus is tests/hostile_plans/*.yaml. Each file says why it is hostile, then
`# expect: <exit code> <the message, from its start after file:line>`, and marks the line the
message names with `# <- here`. Cases too large to commit, or that need a FIFO, a NUL byte or
the plan path itself to be something odd, are generated below.

The cases run once per module, two at a time (each is a ~1 s CLI start, so one at a time would
take a minute); each test then checks one case's outcome.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import EXAMPLE, run_cli

CORPUS = Path(__file__).resolve().parent / "hostile_plans"
MAX_SECONDS = 10.0  # to refuse a plan
# A plan that loads goes on to the ladder's imports (torch) and the power analysis, as any valid
# plan does: ~4 s on an idle 2-core machine; the limit leaves room for a busy one.
MAX_SECONDS_LOADED = 30.0
MAX_ERROR_BYTES = 1024  # one line, values quoted in it cut to ~200 characters
MAX_RSS = 1 << 30
ARMS = (
    "arms:\n"
    "  control: {role: control, data: data/control.jsonl}\n"
    "  experiment: {role: experiment, data: data/experiment.jsonl}\n"
)
HEAD = "name: hostile\n" + ARMS  # 4 lines: what follows starts on line 5
# libyaml stops flow nesting at 1,000 levels itself, before tunegate's 32 are counted.
TOO_DEEP = r"(nested more than 32 levels deep|invalid YAML: exceeded maximum nesting depth)"


@dataclass(frozen=True)
class Expected:
    code: int  # 2: refused; 0: loaded with a warning
    line: int | None  # the line the message names; None: the message names the file only
    text: str  # a regular expression for how the message starts after `file[:line]: `


def corpus_expectation(text: str) -> Expected:
    found = re.search(r"^# expect: ([02]) (.+)$", text, flags=re.M)
    assert found, "a corpus file says `# expect: <code> <message>`"
    marked = [n for n, line in enumerate(text.splitlines(), 1) if line.endswith("# <- here")]
    assert len(marked) <= 1, f"`# <- here` marks lines {marked}"
    return Expected(int(found.group(1)), marked[0] if marked else None, re.escape(found.group(2)))


# --- generated cases -----------------------------------------------------------------------
# Each writes a plan into a copy of the example's directory and returns its path.


def text_plan(text: str | bytes) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        plan = directory / "hostile.yaml"
        if isinstance(text, bytes):
            plan.write_bytes(text)
        else:
            plan.write_text(text, encoding="utf-8")
        return plan

    return make


def fifo_data(directory: Path) -> Path:
    """An arm whose data is a named pipe nobody writes to: opening it would wait forever."""
    os.mkfifo(directory / "data" / "pipe.jsonl")
    return text_plan(HEAD.replace("data/experiment.jsonl", "data/pipe.jsonl"))(directory)


def fifo_plan(directory: Path) -> Path:
    plan = directory / "pipe.yaml"
    os.mkfifo(plan)
    return plan


def directory_plan(directory: Path) -> Path:
    plan = directory / "plan.yaml"
    plan.mkdir()
    return plan


def block_nesting(levels: int) -> str:
    """`k0:` / `  k1:` / `    k2:` ... : nesting by indentation, one level per line."""
    return "".join(f"{'  ' * i}k{i}:\n" for i in range(levels - 1)) + f"{'  ' * levels}1\n"


TOO_LONG_NAME = "bad name " + "x" * 500_000  # under the size limit; fails the name's pattern
LONG_KEY = "k" * 1000  # libyaml's limit for a key is 1,024 characters

GENERATED = {
    "deep-lists-200k": (text_plan(HEAD + "x: " + "[" * 200_000 + "\n"), Expected(2, 5, TOO_DEEP)),
    "deep-mappings-200k": (
        text_plan(HEAD + "x: " + "{a: " * 200_000 + "\n"),
        Expected(2, 5, TOO_DEEP),
    ),
    "deep-lists-100": (
        text_plan(HEAD + "x: " + "[" * 100 + "]" * 100 + "\n"),
        Expected(2, 5, "nested more than 32 levels deep"),
    ),
    "deep-indentation": (
        # The root mapping is level 1 and k<i>'s key level i + 2: level 33 is k31's, line 5 + 31.
        text_plan(HEAD + block_nesting(40)),
        Expected(2, 5 + 31, "nested more than 32 levels deep"),
    ),
    "sixty-thousand-values": (
        text_plan(
            HEAD + "stages:\n  - name: s\n    gates: {model_saved: true}\n"
            "    recovery: [" + ", ".join(["x"] * 60_000) + "]\n"
        ),
        Expected(2, 8, "the plan has more than 50,000 values"),
    ),
    "name-of-50-mb": (
        text_plan("name: " + "x" * 50_000_000 + "\n" + ARMS),
        Expected(
            2,
            1,
            re.escape(
                f"the plan is {len('name: ') + 50_000_000 + 1 + len(ARMS):,} bytes, past the "
                "limit of 1,048,576 on this line"
            ),
        ),
    ),
    "long-value-cut": (
        text_plan(ARMS + "name: " + TOO_LONG_NAME + "\n"),
        Expected(
            2,
            4,
            re.escape(
                "name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.-]*$' (got "
                f"{repr(TOO_LONG_NAME)[:200]}… ({len(repr(TOO_LONG_NAME)):,} characters))\n"
            ),
        ),
    ),
    "long-unknown-key-cut": (
        text_plan(HEAD + LONG_KEY + ": 1\n"),
        Expected(2, 5, re.escape(LONG_KEY[:200] + "… (1,000 characters): unknown field\n")),
    ),
    "long-data-path-cut": (
        text_plan(HEAD.replace("data/control.jsonl", "d" * 300_000)),
        Expected(
            2,
            3,
            re.escape("arms.control.data: dataset file is unreadable (File name too long): ")
            + r".{200}… \(\d{3},\d{3} characters\)\n",
        ),
    ),
    "int-of-5000-digits": (
        text_plan(HEAD + "seed: " + "7" * 5000 + "\n"),
        Expected(
            2,
            5,
            re.escape("invalid YAML: cannot read this value (Exceeds the limit (4300 digits)"),
        ),
    ),
    "nul-byte": (
        text_plan(HEAD.encode() + b"seed: 4\x002\n"),
        Expected(2, 5, "invalid YAML: control characters are not allowed"),
    ),
    "data-is-a-fifo": (
        fifo_data,
        Expected(
            2,
            4,
            re.escape("arms.experiment.data: dataset path is a FIFO (named pipe), not a regular"),
        ),
    ),
    "plan-is-a-fifo": (fifo_plan, Expected(2, None, re.escape("the plan is a FIFO (named pipe)"))),
    "plan-is-a-directory": (directory_plan, Expected(2, None, "the plan is a directory")),
}

CORPUS_IDS = sorted(p.stem for p in CORPUS.glob("*.yaml"))


# --- running them --------------------------------------------------------------------------


@dataclass
class Outcome:
    plan: Path
    expected: Expected
    result: subprocess.CompletedProcess[str]
    seconds: float
    files_before: set[Path]
    files_after: set[Path]


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def children_peak_rss() -> int:
    """The largest resident set of any child process this one has waited for, in bytes."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("hostile")
    cases: dict[str, tuple[Path, Expected]] = {}
    for case in [*CORPUS_IDS, *GENERATED]:
        directory = root / case  # a copy of the example: the plans' arms point at its data/
        shutil.copytree(EXAMPLE, directory, ignore=shutil.ignore_patterns("runs"))
        if case in GENERATED:
            make, expected = GENERATED[case]
            cases[case] = (make(directory), expected)
        else:
            text = (CORPUS / f"{case}.yaml").read_text(encoding="utf-8")
            plan = directory / f"{case}.yaml"
            plan.write_text(text, encoding="utf-8")
            cases[case] = (plan, corpus_expectation(text))

    def run(case: str) -> Outcome:
        plan, expected = cases[case]
        before = files_under(plan.parent)
        start = time.monotonic()
        result = run_cli("plan", str(plan), cwd=plan.parent, timeout=60)
        seconds = time.monotonic() - start
        return Outcome(plan, expected, result, seconds, before, files_under(plan.parent))

    # The slow ones (plans that load) first, so that the quick refusals fill in beside them.
    order = sorted(cases, key=lambda case: cases[case][1].code)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(order, pool.map(run, order), strict=True))


@pytest.fixture(scope="module")
def peak_rss(outcomes: dict[str, Outcome]) -> int | None:
    """The largest resident set of any case, or None where it cannot be told: the children's
    peak is a running maximum, which an earlier test's child (a training run) may have set."""
    peak = children_peak_rss()
    return peak if peak < MAX_RSS else None


def check(outcome: Outcome, peak_rss: int | None) -> None:
    result, expected = outcome.result, outcome.expected
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-2000:]
    assert result.returncode == expected.code, output[-2000:]
    limit = MAX_SECONDS if expected.code == 2 else MAX_SECONDS_LOADED
    assert outcome.seconds < limit, f"took {outcome.seconds:.1f} s"
    assert peak_rss is None or peak_rss < MAX_RSS
    plan = re.escape(str(outcome.plan))
    where = f"{plan}:{expected.line}" if expected.line is not None else plan
    if expected.code == 2:
        assert len(output.encode()) < MAX_ERROR_BYTES, f"{len(output.encode()):,} bytes"
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
        assert re.match(f"error: {where}: {expected.text}", result.stderr), result.stderr
        # Refused before anything is written, or run: `!!python/object/apply:os.system
        # ["touch pwned"]` would leave a file.
        assert outcome.files_after == outcome.files_before
    else:
        warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
        assert any(re.match(f"warning: {where}: {expected.text}", w) for w in warnings), (
            warnings or result.stdout[:2000]
        )


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS_IDS) + len(GENERATED) >= 30


@pytest.mark.parametrize("case", CORPUS_IDS)
def test_hostile_plan(outcomes: dict[str, Outcome], peak_rss: int | None, case: str) -> None:
    check(outcomes[case], peak_rss)


@pytest.mark.parametrize("case", list(GENERATED))
def test_generated_hostile_plan(
    outcomes: dict[str, Outcome], peak_rss: int | None, case: str
) -> None:
    check(outcomes[case], peak_rss)


def test_valid_plans_load_quickly_without_warnings(tmp_path: Path) -> None:
    """The example and `tunegate init`'s plan (the embedded default) load as before: no
    warning, far within the limits. (`test_example_is_still_valid` runs `tunegate plan` on it.)"""
    from tunegate.plan import MAX_PLAN_DEPTH, MAX_PLAN_VALUES, _PlanLoader, load_plan

    assert run_cli("init", str(tmp_path / "init")).returncode == 0
    for path in (EXAMPLE / "tunegate.yaml", tmp_path / "init" / "tunegate.yaml"):
        start = time.monotonic()
        plan = load_plan(path)
        assert time.monotonic() - start < 1.0
        assert plan.warnings == []
        loader = _PlanLoader(path.read_text())
        root = loader.get_single_node()
        values, levels = loader.sizes[id(root)]
        assert values < MAX_PLAN_VALUES / 100 and levels < MAX_PLAN_DEPTH / 4
