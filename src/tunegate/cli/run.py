"""`tunegate init`, `plan`, `run`, `status`, `report` and `doctor`: the ladder's commands."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from tunegate.cli.common import (
    DEFAULT_PLAN,
    EXIT_ABORTED,
    EXIT_FAILED,
    console,
    quiet_libraries,
    refuse_overwrite,
)
from tunegate.errors import UserError
from tunegate.rundir import RunDir, run_dir_for

if TYPE_CHECKING:
    from tunegate.ladder.climb import Ladder
    from tunegate.state import LadderState


EXAMPLES = ("metadata-experiment", "real-model")


def init(
    directory: Path = typer.Argument(Path("."), help="Where to write tunegate.yaml and data/."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
    example: str = typer.Option(
        "metadata-experiment",
        "--example",
        help="metadata-experiment: tiny-llama, seconds a stage (the default). real-model: "
        "SmolLM2-135M-Instruct on HumanEval's python problems, minutes a stage.",
    ),
) -> None:
    """Write a commented tunegate.yaml and the example experiment (control + experiment arms)."""
    from importlib.resources import files

    from tunegate.data.example import write_example
    from tunegate.data.scenarios import write_real_model_example

    if example not in EXAMPLES:
        raise UserError(f"--example: '{example}' is not one of {', '.join(EXAMPLES)}")
    plan_path = directory / "tunegate.yaml"
    refuse_overwrite([plan_path], force)
    directory.mkdir(parents=True, exist_ok=True)
    if example == "real-model":
        plan_path, control, experiment = write_real_model_example(directory)
    else:
        plan_path.write_text(files("tunegate").joinpath("resources/tunegate.yaml").read_text())
        control, experiment = write_example(directory / "data")
    console.print(
        f"Wrote {plan_path}, {control}, {experiment}.\n"
        f"Next: [bold]cd {directory} && tunegate plan && tunegate run[/]"
    )


def plan(plan_path: Path = typer.Argument(DEFAULT_PLAN, metavar="[PLAN]")) -> None:
    """Print the ladder: what each stage does, its gates and its estimated time and cost."""
    from tunegate.data.arms import load_experiment
    from tunegate.plan import load_plan

    # Validate before the heavy imports (torch via ladder): a bad plan answers in a blink.
    p = load_plan(plan_path)
    exp = load_experiment(p)
    from tunegate.ladder.selection import power_notes
    from tunegate.render import cost_table, plan_table

    warnings = power_notes(p, exp)
    _print_warnings(p.warnings, console)
    console.print(plan_table(p, warnings))
    console.print(cost_table(p))


def _print_warnings(warnings: list[str], to: Console) -> None:
    """What the plan loads with but probably does not mean, one line each."""
    from rich.markup import escape

    for warning in warnings:  # escape: a path or value with [brackets] prints verbatim
        to.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


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
    events: Path | None = typer.Option(
        None,
        "--events",
        help="Also append every event of the climb to FILE as JSON lines ('-': to stdout, "
        "instead of the console). The run directory's events.jsonl always has them.",
    ),
) -> None:
    """Climb the ladder: resume at the first stage not passed; stop at the first that fails."""
    from tunegate.data.arms import load_experiment
    from tunegate.plan import load_plan

    p = load_plan(plan_path)
    exp = load_experiment(p)
    if not quiet:  # on stderr: `--json` and `--events -` keep stdout for what they print
        _print_warnings(p.warnings, Console(stderr=True))
    # A state.json this climb cannot resume from is refused before the heavy imports (torch,
    # transformers), as a bad plan is.
    before = run_dir_for(p).load_state(p.name)
    ladder: Ladder | None = None
    try:
        from tunegate.artifacts import missing_artifacts
        from tunegate.events import Sink
        from tunegate.events.jsonl import JsonLinesSink
        from tunegate.ladder.climb import Ladder
        from tunegate.ladder.selection import RunOptions
        from tunegate.render import final_answer, verdict_table
        from tunegate.report import report_file

        quiet_libraries()
        to_stdout = events is not None and str(events) == "-"
        with contextlib.ExitStack() as stack:
            sinks: list[Sink] = []
            if events is not None:
                stream = sys.stdout if to_stdout else stack.enter_context(events.open("a"))
                sinks.append(JsonLinesSink(stream))
            quiet_console = Console(quiet=quiet or as_json or to_stdout, width=console.width)
            ladder = Ladder(p, exp, quiet_console, sinks)
            records = ladder.climb(
                RunOptions(stage=stage, start=start, until=until, force=set(force_stage))
            )
    except KeyboardInterrupt:
        # Left to typer, Ctrl-C is a silent exit 130: say what it cut short and how to go on.
        now = ladder.ctx.state if ladder is not None else before
        _say_interrupted(before, now, plan_path, (start, stage, until, force_stage))
        raise typer.Exit(EXIT_ABORTED) from None
    state = ladder.run.load_state()
    if to_stdout:
        pass  # the events were the output
    elif as_json:
        print(json.dumps(_verdicts_json(p, state, ladder.run.root), indent=2))
    else:
        console.print()
        console.print(verdict_table(p, state))
        answered = final_answer(p, state, missing_artifacts(p, state, ladder.run))
        console.print(f"[bold]{answered}[/]   run directory: {ladder.run.root}")
        report = report_file(ladder.run.root, "html")
        if report.is_file():
            console.print(f"Report: {report}", highlight=False, soft_wrap=True)
    if ladder.blocked or (records and records[-1].verdict != "PASS"):
        raise typer.Exit(EXIT_FAILED)
    end = until if until is not None else (stage if stage is not None else len(p.stages) - 1)
    if records and records[-1].index < end:
        raise typer.Exit(EXIT_FAILED)  # blocked before the requested end


def _say_interrupted(
    before: LadderState,
    state: LadderState,
    plan_path: Path,
    flags: tuple[int | None, int | None, int | None, list[int]],
) -> None:
    """Ctrl-C during `run`: what it cut short and the command that goes on from there. The state
    on disk is whole (every save is atomic); `before` is the one the climb began from, `flags`
    are the command's --from, --stage, --until and --force-stage."""
    import shlex

    start, stage, until, force = flags

    def started_now(name: str) -> bool:
        old = before.stage(name)
        return state.stages[name].started != (old.started if old else None)

    command = ["tunegate", "run", str(plan_path)]
    # A stage left running by an earlier interrupted climb is not this one's.
    running = [n for n, r in state.stages.items() if r.status == "running" and started_now(n)]
    if running:
        record = state.stages[running[0]]
        training = [arm for arm, a in record.arms.items() if a.status == "training"]
        what = f"stage {record.index} ({running[0]})"
        if training:
            what += f", while training arm {', '.join(training)}"
    elif any(started_now(name) for name in state.stages):
        what = "the climb between stages"
    else:
        what = "the climb before its first stage"
        if start is not None:
            command += ["--from", str(start)]  # nothing of it ran: ask for it again
    # Otherwise no --from: the climb resumes at the first stage not passed, the one cut short.
    if stage is not None:
        command += ["--stage", str(stage)]
    if until is not None:
        command += ["--until", str(until)]
    for index in sorted(set(force)):
        command += ["--force-stage", str(index)]
    Console(stderr=True).print(
        f"Interrupted {what}; the state is saved.\nResume with: {shlex.join(command)}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


def _verdicts_json(p: Any, state: LadderState, root: Path) -> dict[str, Any]:
    """`run --json`: the answer and each stage's verdict with its gates, for scripts."""
    from tunegate.artifacts import missing_artifacts
    from tunegate.render import answer
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
    answered = answer(p, state, missing_artifacts(p, state, RunDir(root)))
    return {
        "answer": str(answered),
        "verdict": answered.word,  # GO, GO so far, INVESTIGATE, FIX, NOT A GO or NOT RUN
        "run_dir": str(root),
        "stages": stages,
        "report": {f: str(report_file(root, f)) for f in ("html", "md")},
        "mlflow": {"tracking_uri": state.tracking_uri, "parent": state.mlflow_parent},
    }


def _run_dir(run_dir: Path | None, plan_path: Path) -> Path:
    """The run directory named, or the plan's (from ./tunegate.yaml)."""
    if run_dir is not None:
        return run_dir
    from tunegate.plan import load_plan

    return run_dir_for(load_plan(plan_path)).root


def status(
    run_dir: Path | None = typer.Argument(
        None, help="A run directory (default: the plan's, from ./tunegate.yaml)."
    ),
    plan_path: Path = typer.Option(DEFAULT_PLAN, "--plan"),
) -> None:
    """Show each stage's verdict and evidence for a run."""
    root = _run_dir(run_dir, plan_path)
    RunDir(root).check_state()  # in a blink, before the report's imports
    from rich.markup import escape

    from tunegate.artifacts import missing_artifacts
    from tunegate.render import final_answer, forecast_lines, verdict_table
    from tunegate.report import load

    p, state = load(root)
    console.print(verdict_table(p, state))
    for line in forecast_lines(p, state):
        console.print(escape(line), highlight=False)
    console.print(f"[bold]{final_answer(p, state, missing_artifacts(p, state, RunDir(root)))}[/]")


class ReportFormat(StrEnum):
    html = "html"
    md = "md"


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

    root = _run_dir(run_dir, plan_path)
    RunDir(root).check_state()  # in a blink, before the report's imports
    from tunegate.report import write

    path = write(root, (fmt.value,))[fmt.value]
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, output)
        path = output
    if fmt is ReportFormat.md:
        print(path.read_text(encoding="utf-8"))
    console.print(f"Report: {path}", highlight=False, soft_wrap=True)


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
            console.print(f"[{color}]{c.status:<4}[/] {escape(f'{c.name}: {c.value}')}")
            if c.fix and c.status != "PASS":  # its own line: wrapped after a dash, it read as a
                console.print(f"     fix: {escape(c.fix)}")  # check of its own
        flagged = {s: [c.name for c in checks if c.status == s] for s in ("FAIL", "WARN")}
        summary = ", ".join(
            f"{len(names)} {word} ({', '.join(names)})"
            for names, word in ((flagged["FAIL"], "failed"), (flagged["WARN"], "to look at"))
            if names
        )
        console.print(
            f"{len(checks)} checks in {seconds:.1f} s" + (f": {summary}" if summary else "")
        )
    if any(c.status == "FAIL" for c in checks):
        raise typer.Exit(EXIT_FAILED)
