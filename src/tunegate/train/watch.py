"""What watches a training run: the loss watchdog, the stop it raises, memory and rank readings.

A module of its own, importing no ML library at import time, because both the trainer
(`train.qlora`) and its callbacks (`train.callbacks`) use it and neither may import the other's
heavy parts at import time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable

# Receives batches of (metrics, step); it must skip steps it has already recorded, because a
# resumed run replays the checkpoint's history to fill what a kill interrupted.
MetricSink = Callable[[list[tuple[dict[str, float], int]]], None]


# The line a training process prints for each batch of step metrics when STREAM_ENV is set: a
# climb that trains on another machine reads them from the log it follows and records them
# itself, so the plan's tracking server need be reachable from the laptop alone.
METRICS_MARK = "@tunegate-metrics "
STREAM_ENV = "TUNEGATE_STREAM_METRICS"


def streaming(sink: MetricSink | None) -> MetricSink | None:
    """`sink`, and each batch printed as a METRICS_MARK line on stdout when STREAM_ENV is set."""
    if not os.environ.get(STREAM_ENV):
        return sink

    def both(entries: list[tuple[dict[str, float], int]]) -> None:
        if sink is not None:
            sink(entries)
        rows = [[step, metrics] for metrics, step in entries]
        print(METRICS_MARK + json.dumps(rows, allow_nan=True), flush=True)

    return both


def read_metrics_line(line: str) -> list[tuple[dict[str, float], int]] | None:
    """The metrics a METRICS_MARK line carries; None for any other line (or a cut one)."""
    if not line.startswith(METRICS_MARK):
        return None
    try:
        rows = json.loads(line[len(METRICS_MARK) :])
        return [({str(k): float(v) for k, v in m.items()}, int(step)) for step, m in rows]
    except (ValueError, TypeError, AttributeError):
        return None


class TrainingStopped(RuntimeError):
    """A guard stopped training (loss watchdog, out of memory): the arm FAILs with this message."""


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch (and the only process otherwise)."""
    return int(os.environ.get("RANK", "0")) == 0


def cuda_gib(stat: str) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return getattr(torch.cuda, stat)() / 2**30


# Near zero a ratio is noise: 0.02 → 0.06 nats a token is a converged model's wiggle, not a
# divergence. Windows are compared against at least this floor.
LOSS_NOISE_FLOOR = 0.1


class LossWatchdog:
    """NaN/inf stops at once; divergence is judged on window means (one noisy step is not a
    divergence): stop when the latest window's mean exceeds `factor` × the best window mean
    (or × LOSS_NOISE_FLOOR, when the best is below it).

    A loss that does not move at all is stopped too: the same value, to a millionth, over
    `2 × window` logged steps. Weights blown up by a huge learning rate can saturate every logit
    to one value (the loss then sits at ln(vocabulary size), below the random-init loss, so it
    never looks like a divergence); a learning rate of 0 or a frozen model shows the same.
    Different batches always give different losses to a model that still learns."""

    def __init__(self, window: int, factor: float) -> None:
        self.window, self.factor = window, factor
        self.losses: list[tuple[int, float]] = []
        self.best: tuple[float, int] | None = None  # (mean, last step of that window)

    def _stuck(self) -> str | None:
        span = 2 * self.window
        if len(self.losses) < span:
            return None
        recent = [v for _, v in self.losses[-span:]]
        if max(recent) - min(recent) > 1e-6 * max(1.0, abs(recent[-1])):
            return None
        first, last = self.losses[-span][0], self.losses[-1][0]
        return (
            f"loss stuck at {recent[-1]:.6g} for steps {first}–{last} (it does not move at all: "
            "the model is no longer learning; a learning rate too high for it saturates the "
            "weights, one of 0 never moves them)"
        )

    def check(self, step: int, loss: float, grad_norm: float | None = None) -> str | None:
        if not math.isfinite(loss):
            return f"loss is {loss} at step {step}"
        if grad_norm is not None and not math.isfinite(grad_norm):
            # The weights are now NaN/inf: what the loss shows next is meaningless (trl's fused
            # head reports 0.0 for NaN logits).
            return f"gradient norm is {grad_norm} at step {step} (loss {loss:.4g})"
        self.losses.append((step, loss))
        if (stuck := self._stuck()) is not None:
            return stuck
        if len(self.losses) < self.window:
            return None
        recent = self.losses[-self.window :]
        mean = sum(v for _, v in recent) / self.window
        if self.best is not None and mean > self.factor * max(self.best[0], LOSS_NOISE_FLOOR):
            return (
                f"loss diverged at step {step}: mean {mean:.4g} over steps {recent[0][0]}–{step} "
                f"is {mean / self.best[0]:.1f}× the best window's {self.best[0]:.4g} "
                f"(ending at step {self.best[1]})"
            )
        if self.best is None or mean < self.best[0]:
            self.best = (mean, step)
        return None
