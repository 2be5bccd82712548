"""The `tunegate` command: parse, call one function, print. No logic lives here."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Quiet, offline defaults before any HF import: nothing may reach a hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")

import typer
from rich.console import Console

from tunegate.errors import UserError

if TYPE_CHECKING:
    from tunegate.state import LadderState

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Staged, gated validation of fine-tuning experiments.",
)
# Piped output (CI logs, `| less`) gets room for the ladder's tables instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
DEFAULT_PLAN = Path("tunegate.yaml")

from tunegate.cli_data import data_app  # noqa: E402  (after the environment defaults above)

app.add_typer(data_app, name="data")
from tunegate.cli_train import memory, train  # noqa: E402

app.command()(train)
app.command()(memory)
from tunegate.cli_exec import exec_  # noqa: E402

app.command(name="exec")(exec_)
from tunegate.cli_evaluate import evaluate  # noqa: E402

app.command()(evaluate)
from tunegate.cli_serve import serve  # noqa: E402

app.command()(serve)
from tunegate.cli_stats import stats  # noqa: E402

app.command()(stats)


def _quiet_libraries() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("bitsandbytes", "transformers", "trl", "peft", "accelerate", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()


@app.command()
def init(
    directory: Path = typer.Argument(Path("."), help="Where to write tunegate.yaml and data/."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Write a commented tunegate.yaml and the example experiment (control + experiment arms)."""
    from importlib.resources import files

    from tunegate.data.example import write_example

    plan_path = directory / "tunegate.yaml"
    if plan_path.exists() and not force:
        raise UserError("already exists (use --force to overwrite)", where=str(plan_path))
    directory.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(files("tunegate").joinpath("resources/tunegate.yaml").read_text())
    control, experiment = write_example(directory / "data")
    console.print(
        f"Wrote {plan_path}, {control}, {experiment}.\n"
        f"Next: [bold]cd {directory} && tunegate plan && tunegate run[/]"
    )


@app.command()
def plan(plan_path: Path = typer.Argument(DEFAULT_PLAN, metavar="[PLAN]")) -> None:
    """Print the ladder: what each stage does, its gates and its estimated time and cost."""
    from tunegate.data.arms import load_experiment
    from tunegate.plan import load_plan

    # Validate before the heavy imports (torch via ladder): a bad plan answers in a blink.
    p = load_plan(plan_path)
    exp = load_experiment(p)
    from tunegate.ladder import power_notes
    from tunegate.render import cost_table, plan_table

    warnings = power_notes(p, exp)
    console.print(plan_table(p, warnings))
    console.print(cost_table(p))


@app.command()
def run(
    plan_path: Path = typer.Argument(DEFAULT_PLAN, metavar="[PLAN]"),
    stage: int | None = typer.Option(None, "--stage", help="Run only stage N."),
    start: int | None = typer.Option(None, "--from", help="Run from stage N (re-running it)."),
    until: int | None = typer.Option(None, "--until", help="Stop after stage N."),
    force_stage: list[int] = typer.Option(
        [],
        "--force-stage",
        help="Run stage N although the one before did not "
        "pass (recorded in state, report and tracking).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the verdict table."),
    as_json: bool = typer.Option(
        False, "--json", help="Nothing but the verdicts, gates and report paths, as JSON."
    ),
) -> None:
    """Climb the ladder: resume at the first stage not passed; stop at the first that fails."""
    from tunegate.data.arms import load_experiment
    from tunegate.plan import load_plan

    p = load_plan(plan_path)
    exp = load_experiment(p)
    from tunegate.ladder import Ladder, RunOptions
    from tunegate.render import final_answer, verdict_table
    from tunegate.report import report_file

    _quiet_libraries()
    ladder = Ladder(p, exp, Console(quiet=quiet or as_json, width=console.width))
    records = ladder.climb(
        RunOptions(stage=stage, start=start, until=until, force=set(force_stage))
    )
    state = ladder.run.load_state()
    if as_json:
        print(json.dumps(_verdicts_json(p, state, ladder.run.root), indent=2))
    else:
        console.print()
        console.print(verdict_table(p, state))
        console.print(f"[bold]{final_answer(p, state)}[/]   run directory: {ladder.run.root}")
        report = report_file(ladder.run.root, "html")
        if report.is_file():
            console.print(f"Report: {report}", highlight=False, soft_wrap=True)
    if ladder.blocked or (records and records[-1].verdict != "PASS"):
        raise typer.Exit(1)
    end = until if until is not None else (stage if stage is not None else len(p.stages) - 1)
    if records and records[-1].index < end:
        raise typer.Exit(1)  # blocked before the requested end


def _verdicts_json(p: Any, state: LadderState, root: Path) -> dict[str, Any]:
    """`run --json`: the answer and each stage's verdict with its gates, for scripts."""
    from tunegate.render import final_answer
    from tunegate.report import report_file

    stages = []
    for i, stage in enumerate(p.stages):
        rec = state.stage(stage.name)
        stages.append(
            {
                "index": i,
                "name": stage.name,
                "verdict": rec.verdict if rec else None,
                "forced": bool(rec and rec.forced),
                "seconds": rec.seconds if rec else None,
                "gates": [asdict(g) for g in rec.gates] if rec else [],
                "actual": rec.actual.to_json() if rec and rec.actual else None,
            }
        )
    return {
        "answer": final_answer(p, state),
        "run_dir": str(root),
        "stages": stages,
        "report": {f: str(report_file(root, f)) for f in ("html", "md")},
        "mlflow": {"tracking_uri": state.tracking_uri, "parent": state.mlflow_parent},
    }


def _run_dir(run_dir: Path | None, plan_path: Path) -> Path:
    """The run directory named, or the plan's (from ./tunegate.yaml)."""
    if run_dir is not None:
        return run_dir
    from tunegate.ladder import run_dir_for
    from tunegate.plan import load_plan

    return run_dir_for(load_plan(plan_path)).root


@app.command()
def status(
    run_dir: Path | None = typer.Argument(
        None, help="A run directory (default: the plan's, from ./tunegate.yaml)."
    ),
    plan_path: Path = typer.Option(DEFAULT_PLAN, "--plan"),
) -> None:
    """Show each stage's verdict and evidence for a run."""
    from tunegate.render import final_answer, verdict_table
    from tunegate.report import load

    p, state = load(_run_dir(run_dir, plan_path))
    console.print(verdict_table(p, state))
    console.print(f"[bold]{final_answer(p, state)}[/]")


class ReportFormat(StrEnum):
    html = "html"
    md = "md"


@app.command()
def report(
    run_dir: Path | None = typer.Argument(
        None, help="A run directory (default: the plan's, from ./tunegate.yaml)."
    ),
    fmt: ReportFormat = typer.Option(
        ReportFormat.html,
        "--format",
        help="html: one self-contained page; md: Markdown, also printed for a terminal or a PR.",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Also write it here (default: RUN_DIR/report/report.FORMAT)."
    ),
    plan_path: Path = typer.Option(DEFAULT_PLAN, "--plan"),
) -> None:
    """Write the run's report: verdicts and gate evidence, loss curves, comparisons with
    confidence intervals, power, cost and time, recovery actions, plan, hashes and versions."""
    import shutil

    from tunegate.report import write

    path = write(_run_dir(run_dir, plan_path), (fmt.value,))[fmt.value]
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, output)
        path = output
    if fmt is ReportFormat.md:
        print(path.read_text(encoding="utf-8"))
    console.print(f"Report: {path}", highlight=False, soft_wrap=True)


@app.command()
def doctor(
    plan_path: Path = typer.Argument(DEFAULT_PLAN, metavar="[PLAN]"),
    as_json: bool = typer.Option(False, "--json", help="Checks and total_seconds as JSON."),
) -> None:
    """Check the environment (stage 0), every check in parallel with timeouts; exit 1 on a FAIL."""
    import time

    from tunegate.doctor import run_checks
    from tunegate.plan import load_plan

    plan = load_plan(plan_path)
    started = time.monotonic()
    checks = run_checks(plan)
    seconds = round(time.monotonic() - started, 2)
    if as_json:
        body = {"checks": [c.to_json() for c in checks], "total_seconds": seconds}
        print(json.dumps(body, indent=2))
    else:
        from rich.markup import escape

        for c in checks:
            color = {"PASS": "green", "WARN": "yellow", "FAIL": "red"}[c.status]
            fix = f" — {c.fix}" if c.fix and c.status != "PASS" else ""
            console.print(f"[{color}]{c.status:<4}[/] {escape(f'{c.name}: {c.value}{fix}')}")
        console.print(f"{len(checks)} checks in {seconds:.1f} s")
    if any(c.status == "FAIL" for c in checks):
        raise typer.Exit(1)


def main() -> None:
    try:
        # standalone_mode=False: click returns typer.Exit's code instead of exiting itself.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except UserError as err:
        from rich.markup import escape

        # escape: a message quoting a regex or a path with [brackets] must print verbatim.
        Console(stderr=True).print(
            f"[red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True
        )
        sys.exit(err.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        Console(stderr=True).print("aborted")
        sys.exit(130)
    except Exception as err:
        if isinstance(err, _usage_errors()):
            err.show()  # type: ignore[attr-defined]  # "Usage: … Error: No such option"
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        raise


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's usage errors: typer ≥ 0.20 parses with its own copy of click, whose exceptions
    are not click's; either kind is a one-line user error, not a traceback."""
    import click

    kinds: list[type[Exception]] = [click.exceptions.ClickException]
    try:
        from typer._click.exceptions import ClickException

        kinds.append(ClickException)
    except ImportError:  # an older typer parses with click itself
        pass
    return tuple(kinds)


if __name__ == "__main__":
    main()
