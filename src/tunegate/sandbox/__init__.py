"""Where generated code runs: `run(language, program, tests)` executes a program with its tests
and gives an `Execution` (verdict PASS, FAIL, TIMEOUT or ERROR, exit code, seconds, output tail).

- `isolation`: the layers around every child (bubblewrap namespaces, seccomp, rlimits, uid nobody,
  a scrubbed environment, a fresh directory), detected once and reported;
- `verdict`: the one verdict rule (`judge`) and the nonce-and-channel protocol it rests on;
- `checks`: test assertions rewritten so that their expected values are compared here, outside;
- `python`, `javascript`, `sql`: one module per language, each owning its pre-warmed pool where
  one exists (`process_wide` shares it across the process);
- `programs/`: the harness programs that run inside the sandbox, as real files.
"""

from __future__ import annotations

from tunegate.sandbox import javascript, python, sql
from tunegate.sandbox.verdict import Execution, Verdict

__all__ = ["LANGUAGES", "Execution", "Verdict", "close_pools", "run"]

LANGUAGES = frozenset({"python", "javascript", "sql"})


def run(language: str, program: str, tests: str, timeout_s: float = 5.0) -> Execution:
    """Run `program` with `tests` by language (python, javascript or sql); pre-warmed workers
    where they exist, which give the verdicts a fresh process gives, in milliseconds."""
    if language == "python":
        pool = python.default_pool.get()
        if pool is not None:
            return pool.run(program, tests, timeout_s=timeout_s)
        return python.run_python(program, tests, timeout_s=timeout_s)  # no bubblewrap
    if language == "javascript":
        spares = javascript.default_spares.get()
        if spares is not None:
            return spares.run(program, tests, timeout_s=timeout_s)
        return javascript.run_javascript(program, tests, timeout_s=timeout_s)  # its ERROR: no node
    if language == "sql":
        return sql.run_sql(program, tests, timeout_s=timeout_s)
    raise ValueError(
        f"no executor for language '{language}' (known: {', '.join(sorted(LANGUAGES))})"
    )


def close_pools() -> None:
    """Close the process-wide Python pool and JavaScript spares (the next `run` starts new ones)."""
    python.default_pool.close()
    javascript.default_spares.close()
