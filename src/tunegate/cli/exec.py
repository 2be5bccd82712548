"""`tunegate exec`: one program through the sandbox, for debugging an item's verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from tunegate.cli.common import EXIT_FAILED
from tunegate.errors import UserError


def _read(path: Path, what: str) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    if not path.is_file():
        raise UserError(f"{what} file does not exist", where=str(path))
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"not UTF-8 text (byte {err.start})", where=str(path)) from None


def exec_(
    program: Path = typer.Argument(..., help="The program file ('-' for stdin)."),
    language: str = typer.Option(..., "--language", "-l", help="python | javascript | sql"),
    tests: Path | None = typer.Option(None, "--tests", help="Tests run after the program."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds before TIMEOUT."),
    as_json: bool = typer.Option(False, "--json", help="Print the execution as JSON."),
) -> None:
    """Run one program through the sandbox and print its verdict (exit 0 on PASS, else 1)."""
    from tunegate.sandbox import LANGUAGES
    from tunegate.sandbox import run as execute
    from tunegate.sandbox.isolation import detect

    if language not in LANGUAGES:
        raise UserError(f"--language: '{language}' is not one of {', '.join(sorted(LANGUAGES))}")
    source = _read(program, "program")
    test_source = _read(tests, "tests") if tests is not None else ""
    result = execute(language, source, test_source, timeout_s=timeout)
    isolation = detect().describe()
    if as_json:
        print(
            json.dumps(
                {
                    "verdict": result.verdict,
                    "exit_code": result.exit_code,
                    "seconds": result.seconds,
                    "output_tail": result.output_tail,
                    "checks": result.checks,
                    "isolation": isolation,
                },
                indent=2,
            )
        )
    else:
        console = Console(highlight=False)
        color = "green" if result.verdict == "PASS" else "red"
        ms = result.seconds * 1000
        console.print(f"[{color}]{result.verdict}[/] exit {result.exit_code} in {ms:.0f} ms")
        console.print(f"sandbox: {isolation}")
        if result.checks:
            console.print(f"checks: {result.checks}")
        if result.output_tail.strip():
            console.print("output (tail):")
            console.out(result.output_tail.rstrip())
    if result.verdict != "PASS":
        raise typer.Exit(EXIT_FAILED)
