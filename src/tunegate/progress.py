"""Progress bars for the long steps: training (with loss and ETA), generation, sandbox execution
and judge calls. Shown only on a terminal: logs, pipes, `--quiet` and `--json` get none, so
scripts read clean output.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console


class Bars:
    """A Rich progress display, or nothing where the console is not an interactive terminal."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.enabled = enabled and console.is_terminal and not console.quiet
        self._progress: Any = None
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=True,  # finished bars vanish; the step's summary line stays
            )

    def __enter__(self) -> Bars:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def counter(self, description: str, total: int | None) -> Callable[[int], None] | None:
        """An `advance(n)` for a step of `total` units, or None without bars."""
        if self._progress is None:
            return None
        task = self._progress.add_task(description, total=total, info="")
        return lambda n: self._progress.advance(task, n)

    def training(self, description: str) -> Callable[[int, int, dict[str, float]], None] | None:
        """A trainer hook `(step, max_steps, logs)`: the bar follows the step, shows the loss."""
        if self._progress is None:
            return None
        task = self._progress.add_task(description, total=None, info="")

        def update(step: int, max_steps: int, logs: dict[str, float]) -> None:
            info = f"loss {logs['loss']:.4f}" if "loss" in logs else ""
            if "tokens_per_second" in logs:
                info += f"  {logs['tokens_per_second']:,.0f} tok/s"
            self._progress.update(task, completed=step, total=max_steps or None, info=info)

        return update

    def ticker(self, prefix: str) -> Callable[[str, int], None] | None:
        """An evaluation `Context.progress`: one open-ended counter per kind (execute, judge)."""
        if self._progress is None:
            return None
        tasks: dict[str, Any] = {}

        def tick(kind: str, n: int) -> None:
            if kind not in tasks:
                tasks[kind] = self._progress.add_task(f"{prefix}: {kind}", total=None, info="")
            self._progress.advance(tasks[kind], n)

        return tick
