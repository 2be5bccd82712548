"""What the benchmarks share when they take `--model`: the model's directory, its data and how
its prompts are rendered, so that tunegate and the baseline see the same model, the same data and
the same rendering.

- `tiny-llama` (the default): the toy model; data from the five-scenario example, prompts raw.
- `smollm2-135m`: SmolLM2-135M-Instruct; data from the real-model example (`tunegate init
  --example real-model`: HumanEval python items, answers fenced), prompts rendered through the
  chat template as one user turn, as `model.prompt_format: chat` does, on both sides.

The tunegate CLI runs as `python -m tunegate.cli` with this interpreter, so the tunegate that
`PYTHONPATH` points at is measured (a console script may point at another checkout); set
`BENCH_TUNEGATE` to a command (split on spaces) to measure another one.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunegate.data.items import Item

MODELS = ("tiny-llama", "smollm2-135m")
REAL_MODEL = "smollm2-135m"


def tunegate_cmd() -> list[str]:
    """The command that runs the tunegate CLI under measurement."""
    override = os.environ.get("BENCH_TUNEGATE")
    return override.split() if override else [sys.executable, "-m", "tunegate.cli"]


@dataclass(frozen=True)
class BenchModel:
    """One model as a benchmark uses it, with the settings its example plan trains with."""

    name: str
    chat: bool  # prompts through the chat template (the real-model plan's prompt_format: chat)
    max_length: int
    learning_rate: float
    gradient_checkpointing: bool  # the plan's setting; both sides use it

    def model_dir(self) -> Path:
        """The model's local directory (built or converted once, outside any timing)."""
        from tunegate.models import resolve_model

        return Path(resolve_model(self.name))

    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_dir())

    def render(self, tokenizer: Any, items: list[Item]) -> list[Item]:
        """Prompts as tunegate renders them for this model: raw, or one chat user turn."""
        from tunegate.prompts import PromptFormat

        return PromptFormat("chat" if self.chat else "raw").render_items(tokenizer, items)

    def render_text(self, tokenizer: Any, prompt: str) -> str:
        from tunegate.prompts import PromptFormat

        return PromptFormat("chat" if self.chat else "raw").render(tokenizer, prompt)


BENCH_MODELS = {
    "tiny-llama": BenchModel(
        "tiny-llama", chat=False, max_length=512, learning_rate=3e-3, gradient_checkpointing=True
    ),
    # The real-model plan (src/tunegate/resources/real-model/tunegate.yaml): max_length 1024,
    # learning rate 5e-4, gradient checkpointing off.
    REAL_MODEL: BenchModel(
        REAL_MODEL, chat=True, max_length=1024, learning_rate=5e-4, gradient_checkpointing=False
    ),
}


def write_real_example(directory: Path) -> Path:
    """The real-model example (plan and data) into `directory`, as `tunegate init --example
    real-model` writes it; returns the plan."""
    from tunegate.data.scenarios import write_real_model_example

    return write_real_model_example(directory)[0]


def wait_for_idle(
    limit: float = 1.5, poll_s: float = 20.0, max_wait_s: float | None = None
) -> float:
    """Wait until the 1-minute load average is below `limit` (at most `max_wait_s`, default
    $BENCH_MAX_WAIT_S or 600), then return it: timings on a shared machine are recorded with the
    load they ran under."""
    if max_wait_s is None:
        max_wait_s = float(os.environ.get("BENCH_MAX_WAIT_S", "600"))
    waited = 0.0
    load = os.getloadavg()[0]
    while load >= limit and waited < max_wait_s:
        print(f"load average {load:.2f} ≥ {limit}: waiting", file=sys.stderr, flush=True)
        time.sleep(poll_s)
        waited += poll_s
        load = os.getloadavg()[0]
    return load


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


class LoadLog:
    """The 1-minute load average before each timed run, for the record."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def sample(self) -> None:
        self.samples.append(round(os.getloadavg()[0], 2))

    def summary(self, at_start: float) -> dict[str, Any]:
        s = self.samples or [at_start]
        return {
            "at_start": round(at_start, 2),
            "before_runs": s,
            "median": statistics.median(s),
            "max": max(s),
        }


def run_quiet(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a benchmark side; on failure show its stderr's tail (a bench must not fail
    silently)."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        done.check_returncode()
    return done
