"""The checks the harness verifies outside the program: Python's == on plain data, line numbers
kept, and verdicts from what the sandbox reports."""

from __future__ import annotations

import itertools
import re

import pytest

from tunegate.sandbox.checks import instrument
from tunegate.sandbox.programs.recorder import encode
from tunegate.sandbox.python import run_python

PLAIN = [
    0,
    1,
    -1,
    True,
    False,
    0.0,
    -0.0,
    1.0,
    1.5,
    2**70,
    float(2**70),
    2**53 + 1,
    float(2**53),
    float("inf"),
    -float("inf"),
    1e-300,
    complex(1, 0),
    1j,
    "",
    "1",
    "a,b",
    "s1:",
    b"1",
    b"",
    None,
    [],
    (),
    {},
    set(),
    frozenset(),
    [1],
    (1,),
    [1.0],
    [True],
    ["a", "b"],
    ["a,b"],
    [1, [2, 3]],
    (1, (2, 3)),
    [1, (2, 3)],
    {1},
    frozenset({1}),
    {1, 2},
    {2, 1.0},
    {1: 2},
    {True: 2},
    {1: 2.0},
    {1: "2"},
    {"a": [1]},
    {"a": (1,)},
    10**5000,
]


def test_codes_follow_pythons_equality_on_plain_data() -> None:
    for a, b in itertools.product(PLAIN, repeat=2):
        assert (encode(a) == encode(b)) == (a == b), (a, b)


def test_other_types_never_equal_a_literal() -> None:
    class Anything:
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = object.__hash__

    assert encode(Anything()).startswith("?")
    assert encode([Anything()]) != encode([1])
    loop: list = []
    loop.append(loop)
    assert "?big" in encode(loop)  # bounded: no hang, no recursion error


def test_instrumenting_keeps_line_numbers_and_other_assertions() -> None:
    tests = (
        "def check(f):\n"
        "    assert f(1) == [1,\n"
        "                    2], 'a message'\n"
        "    assert f(2) is None\n"
        "    assert f(3) in (1, 2)\n"
        "    assert f(4) == f(5)\n"
        "    assert f(6)\n"
        "    assert True\n"
        "    x = {'k': 1}; assert f(x) != {'k': 1}\n"
    )
    done = instrument(tests)
    assert done.tests.count("\n") == tests.count("\n")
    lines = done.tests.splitlines()
    assert lines[1:3] == ["    __tg_record__(0, (f(1))", ")"]  # the call spans the same lines
    assert lines[3] == "    __tg_record__(1, (f(2)), 1)"
    assert lines[5] == "    __tg_pair__(3, (f(4)), (f(5)))"
    assert lines[6] == "    assert f(6)"  # left to the sandbox: nothing here to compare
    assert lines[8].endswith("__tg_record__(4, (f(x)))")
    assert [c.op for c in done.checks.values()] == ["eq", "is", "in", "pair", "ne"]
    assert [c.line for c in done.checks.values()] == [2, 4, 5, 6, 9]
    assert done.assertions == 6  # `assert True` checks nothing of the program's


def test_untestable_source_is_left_alone() -> None:
    assert instrument("assert (").tests == "assert ("


@pytest.mark.parametrize(
    ("program", "verdict", "message"),
    [
        ("def f(x):\n    return x * 2\n", "PASS", ""),
        ("def f(x):\n    return x * 2.0\n", "PASS", ""),  # 4.0 == 4, as in Python
        ("def f(x):\n    return x + 2\n", "FAIL", "tests line 2: f(3) == 6 (got 5)"),
        ("def f(x):\n    return [x * 2]\n", "FAIL", "(got [4])"),
        (
            "import builtins\nbuiltins.range = lambda *a: []\ndef f(x):\n    return 0\n",
            "FAIL",
            "tests line 4: f(i) == 2 * i never ran",
        ),
    ],
)
def test_the_harness_judges_recorded_checks(program: str, verdict: str, message: str) -> None:
    tests = "assert f(2) == 4\nassert f(3) == 6\nfor i in range(3):\n    assert f(i) == 2 * i\n"
    # The last check compares two computed values: in the sandbox, by canonical codes.
    result = run_python(program, tests)
    assert result.verdict == verdict, result
    assert message in result.output_tail
    if verdict == "PASS":
        assert result.checks == "2/3 test checks verified outside the program"
    elif "got" in message:  # a results row says which check failed, not only how many ran
        assert re.match(r"\d+ failed, first tests line \d+: ", result.checks), result.checks
        assert result.checks.endswith("test checks verified outside the program")


def test_a_mismatch_fails_even_if_the_tests_then_hang() -> None:
    result = run_python(
        "def f():\n    return 1\n", "assert f() == 2\nwhile True:\n    pass\n", timeout_s=1.0
    )
    assert result.verdict == "FAIL"
    assert "tests line 1: f() == 2 (got 1)" in result.output_tail
