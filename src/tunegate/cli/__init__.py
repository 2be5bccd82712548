"""The `tunegate` command: parse, call one function, print. No logic lives here.

This package only assembles the app: each command group is a module of plain functions
(`run`: init, plan, run, status, report, doctor; `train`: train, memory; `data`: the `data`
sub-app; `evaluate`, `exec`, `serve`, `stats`), all sharing `common`. Heavy libraries (torch,
transformers, mlflow) are imported inside the commands, so `tunegate --help` stays fast.
"""

from __future__ import annotations

import typer

from tunegate.cli import common, data, evaluate, image, run, serve, stats, train
from tunegate.cli import exec as exec_command

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Staged, gated validation of fine-tuning experiments.",
)
# Typer lists commands in the order they are registered: this order is the help's.
app.command()(train.train)
app.command()(train.memory)
app.command(name="exec")(exec_command.exec_)
app.command()(evaluate.evaluate)
app.command()(serve.serve)
app.command()(stats.stats)
app.command()(run.init)
app.command()(run.plan)
app.command()(run.run)
app.command()(run.status)
app.command()(run.report)
app.command()(run.doctor)
app.add_typer(data.data_app, name="data")
app.add_typer(image.image_app, name="image")


def main() -> None:
    """The console script (`tunegate = "tunegate.cli:main"`)."""
    common.run_app(app)
