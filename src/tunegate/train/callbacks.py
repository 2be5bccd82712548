"""What watches the trainer while it trains: the loss guard, the step metrics (held back until a
checkpoint covers them), and a checkpoint on SIGTERM.

`train_arm` imports this module when it starts training: it loads transformers, which
`tunegate.train.qlora` itself must not do at import time (the CLI imports it for its errors).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tunegate.train.watch import LossWatchdog, MetricSink, cuda_gib, is_main_process


def numeric_logs(logs: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and k != "step"}


class MetricBuffer:
    """Step metrics held back until a checkpoint covers them: after a kill, the resumed run
    restarts at that checkpoint, so a step logged past it would be logged again with other values.

    Flushed metrics go to the sink on a background thread, in order: training does not wait on an
    MLflow round trip at every checkpoint. A kill before the write lands is repaired on resume
    from the checkpoint's own history (`replay`), as for a kill before the flush. A write that
    fails (tracking down past its deadline, a full disk) is kept in `failed`: `StopOnFailedWrite`
    stops training at the next step, and `close` raises it."""

    def __init__(self, sink: MetricSink | None) -> None:
        self.sink = sink  # None: nothing is written (no tracking, or not rank 0)
        self.held: list[tuple[dict[str, float], int]] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunegate-metrics")
        self._pending: list[Future[None]] = []
        self.failed: BaseException | None = None

    def add(self, metrics: dict[str, float], step: int) -> None:
        self.held.append((metrics, step))

    def flush(self) -> None:
        if self.sink and self.held:
            future = self._writer.submit(self.sink, list(self.held))
            future.add_done_callback(self._note_failure)
            self._pending.append(future)
        self.held.clear()

    def _note_failure(self, future: Future[None]) -> None:
        if self.failed is None and not future.cancelled():
            self.failed = future.exception()

    def close(self) -> None:
        """Flush, then wait for every write: a tracking error surfaces here, not lost in the
        thread."""
        self.flush()
        self._writer.shutdown(wait=True)
        for future in self._pending:
            future.result()

    def replay(self, checkpoint: Path) -> None:
        """A kill between writing a checkpoint and logging its steps loses them from tracking;
        the checkpoint's own history has them. The sink skips what it already holds."""
        if not self.sink:
            return
        history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
        self.sink([(numeric_logs(h), int(h["step"])) for h in history if "loss" in h])


class LossGuard(TrainerCallback):
    """Runs the loss watchdog on every logged step; its first complaint stops training and is
    kept in `stopped`."""

    def __init__(self, watchdog: LossWatchdog) -> None:
        self.watchdog = watchdog
        self.stopped: str | None = None

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.stopped is not None or not logs or "loss" not in logs:
            return
        grad_norm = logs.get("grad_norm")
        self.stopped = self.watchdog.check(
            state.global_step,
            float(logs["loss"]),
            None if grad_norm is None else float(grad_norm),
        )
        if self.stopped:
            control.should_training_stop = True


class StepRecorder(TrainerCallback):
    """Adds tokens/s and the CUDA peak to every logged step, holds the step in `metrics` until
    the next checkpoint flushes it, and reports progress (rank 0 only).

    `on_step(step, max_steps, metrics)` replaces the per-step line given to `say`."""

    def __init__(
        self,
        metrics: MetricBuffer,
        baseline_gib: float,
        say: Callable[[str], None],
        on_step: Callable[[int, int, dict[str, float]], None] | None,
    ) -> None:
        self.metrics, self.baseline_gib = metrics, baseline_gib
        self.say, self.on_step = say, on_step
        self._last: tuple[float, int] | None = None  # (time, tokens seen) at the previous log
        # (seconds, tokens) of each step after the first (which pays the warm-up): what a step
        # costs at this batch, for the forecast of a stage at another (`forecast.step_cost`).
        self.steps: list[tuple[float, int]] = []

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "loss" not in logs:
            return
        logs = dict(logs)
        now, seen = time.perf_counter(), int(state.num_input_tokens_seen or 0)
        if self._last is not None and now > self._last[0]:
            logs["tokens_per_second"] = (seen - self._last[1]) / (now - self._last[0])
            self.steps.append((now - self._last[0], seen - self._last[1]))
        self._last = (now, seen)
        if (peak := cuda_gib("max_memory_allocated")) is not None:
            logs["peak_memory_gib"] = peak - self.baseline_gib
        self.metrics.add(numeric_logs(logs), state.global_step)
        if is_main_process():
            self._report(state, logs)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.metrics.flush()

    def _report(self, state: TrainerState, logs: dict[str, Any]) -> None:
        if self.on_step is not None:
            self.on_step(state.global_step, state.max_steps, numeric_logs(logs))
            return
        rate = logs.get("tokens_per_second")
        self.say(
            f"Training steps: {state.global_step}/{state.max_steps}  "
            f"loss {float(logs['loss']):.4f}" + (f"  {rate:,.0f} tokens/s" if rate else "")
        )


class StopOnFailedWrite(TrainerCallback):
    """A step-metrics write failed (`MetricBuffer.failed`): save a checkpoint at the end of this
    step and stop, so that the failure ends training in one step, not at the last one, and the
    resume loses nothing. `MetricBuffer.close` then raises it (in a distributed run, where only
    rank 0 writes, at the end of training)."""

    def __init__(self, metrics: MetricBuffer) -> None:
        self.metrics = metrics

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if args.world_size > 1:
            return  # rank 0 alone writes metrics: stopping it alone would hang the others
        if self.metrics.failed is not None and not control.should_training_stop:
            control.should_save = True
            control.should_training_stop = True


class SigtermCheckpoint(TrainerCallback):
    """SIGTERM (a scheduler preempting the job) saves a checkpoint at the end of the current
    step and stops training; `requested` tells the caller, and resume continues from it."""

    def __init__(self) -> None:
        self.requested = False

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True

    @contextmanager
    def handling_sigterm(self) -> Iterator[None]:
        """Catch SIGTERM inside the block. Python lets only the main thread set a handler: a
        caller training in another thread keeps SIGTERM's previous meaning."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._request)
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
