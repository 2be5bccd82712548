"""What every `tunegate` command shares: offline defaults, the console, exit codes, and how
errors reach the user. Every command module imports this one; it imports none of them."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import NoReturn

# Quiet, offline defaults before any HF import: nothing may reach a hub at run time. Here
# because every command module imports this one first, whichever of them is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")

import typer
from rich.console import Console
from rich.markup import escape

from tunegate.errors import UserError

DEFAULT_PLAN = Path("tunegate.yaml")
EXIT_FAILED = 1  # the answer is no: a stage, gate, check or estimate failed
EXIT_ABORTED = 130  # Ctrl-C, as a shell reports SIGINT
# UserError.exit_code (2) is bad input, as click's usage errors.


def output_width(piped: int = 140) -> int | None:
    """The terminal's width on a TTY; `piped` columns otherwise, so CI logs and `| less` get
    room for tables instead of rich's 80."""
    return None if sys.stdout.isatty() else piped


console = Console(width=output_width())


def quiet_libraries() -> None:
    """Silence the ML libraries' warnings, logs and progress bars: nothing a user acts on.
    Called just before the heavy work, so that `--help` and bad input never import them."""
    warnings.filterwarnings("ignore")
    # kernels: bitsandbytes >= 0.50 asks it for a hub kernel on AVX-512-BF16 CPUs at import, and
    # offline it warns; the deterministic 4-bit path never uses that kernel.
    for name in (
        "bitsandbytes",
        "kernels",
        "transformers",
        "trl",
        "peft",
        "accelerate",
        "mlflow",
        "alembic",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Their progress bars, by the switches they read when first imported: importing them here
    # (0.6 s) would make a refused `run` pay for libraries it never uses.
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # transformers' and the hub's
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:  # already imported (a library caller): switched off now
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()


def refuse_overwrite(paths: list[Path], force: bool) -> None:
    """A command that writes files stops before touching any when one exists, unless --force."""
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise UserError("already exists (use --force to overwrite)", where=str(existing[0]))


def run_app(app: typer.Typer) -> NoReturn:
    """Run `app` and exit: bad input prints one line (no traceback) and exits 2."""
    try:
        # standalone_mode=False: click returns typer.Exit's code instead of exiting itself.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except UserError as err:
        # escape: a message quoting a regex or a path with [brackets] must print verbatim.
        Console(stderr=True).print(
            f"[red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True
        )
        sys.exit(err.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        Console(stderr=True).print("aborted")
        sys.exit(EXIT_ABORTED)
    except Exception as err:
        if isinstance(err, _usage_errors()):
            err.show()  # type: ignore[attr-defined]  # "Usage: … Error: No such option"
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        from tunegate.diskspace import disk_full
        from tunegate.remote.host import RemoteError

        if isinstance(err, RemoteError):  # the tower unreachable or a step there failed
            Console(stderr=True).print(
                f"[red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True
            )
            sys.exit(EXIT_FAILED)

        # A full disk trips every handler that tries to record it: one line for all of them.
        full = disk_full(err)
        if full is not None:
            Console(stderr=True).print(
                f"[red]error:[/] {escape(str(full))}", highlight=False, soft_wrap=True
            )
            sys.exit(full.exit_code)
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
