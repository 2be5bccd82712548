"""Generated code runs in a bounded child process; the verdict comes from the harness."""

from __future__ import annotations

import ast
import sys

import pytest

from tunegate.sandbox.programs import source
from tunegate.sandbox.python import run_python

TESTS = "assert add(2, 3) == 5\n"


def test_correct_program_passes() -> None:
    assert run_python("def add(a, b):\n    return a + b\n", TESTS).verdict == "PASS"


def test_wrong_program_fails_naming_the_check_and_the_value() -> None:
    result = run_python("def add(a, b):\n    print('adding')\n    return a - b\n", TESTS)
    assert result.verdict == "FAIL"
    assert "adding" in result.output_tail  # the program's own output comes first
    assert "tests line 1: add(2, 3) == 5 (got -1)" in result.output_tail


@pytest.mark.parametrize(
    "program",
    [
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "print('PASSED')\nraise SystemExit(0)\n",
        "import builtins, sys\n"
        "builtins.AssertionError = type('X', (Exception,), {})\nsys.exit(0)\n",
    ],
    ids=["sys.exit", "os._exit", "print-passed", "patch-assert"],
)
def test_forged_pass_is_not_a_pass(program: str) -> None:
    assert run_python(program, TESTS).verdict != "PASS"


def test_infinite_loop_times_out() -> None:
    result = run_python("while True:\n    pass\n", TESTS, timeout_s=0.5)
    assert result.verdict == "TIMEOUT"


def test_memory_bomb_is_bounded() -> None:
    result = run_python("x = bytearray(4 * 1024**3)\n", TESTS, memory_mb=256)
    assert result.verdict in ("FAIL", "ERROR")


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    result = run_python("import os\nprint(sorted(os.environ))\nassert 0\n", "")
    assert "OPENAI_API_KEY" not in result.output_tail and "sk-secret" not in result.output_tail


@pytest.mark.parametrize("name", ["python_runner.py", "python_worker.py"])
def test_sandbox_programs_need_only_the_standard_library(name: str) -> None:
    """They run as `python -I -S -c TEXT`, where nothing of tunegate's is importable: the
    recorder's import is replaced by its text, and everything else is the standard library."""
    tree = ast.parse(source(name))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {
        n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module is not None
    }
    roots = {module.split(".")[0] for module in imported}
    assert roots and roots <= set(sys.stdlib_module_names), roots - set(sys.stdlib_module_names)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "recorder" for n in tree.body)
