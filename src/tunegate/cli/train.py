"""`tunegate train` (also the container's entrypoint) and `tunegate memory`."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunegate.cli.common import EXIT_FAILED, console, quiet_libraries
from tunegate.errors import UserError
from tunegate.job import env_help, job_from_env, resolve, run_job
from tunegate.plan import load_plan
from tunegate.progress import Bars
from tunegate.train.memory import (
    MemoryEstimate,
    ModelShape,
    TrainingShape,
    advice,
    estimate,
    gib,
    load_shape,
)
from tunegate.train.watch import TrainingStopped


def train(
    data: Path | None = typer.Option(None, "--data", help="Training JSONL (env DATASET_PATH)."),
    val_data: Path | None = typer.Option(None, "--val-data", help="Env VAL_DATASET_PATH."),
    name: str | None = typer.Option(None, "--name", help="Env MODEL_NAME."),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Env OUTPUT_DIR."),
    base_model: str | None = typer.Option(None, "--base-model", help="Env BASE_MODEL."),
    plan: Path | None = typer.Option(None, "--plan", help="Take settings from a tunegate.yaml."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Env MAX_STEPS."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Env BATCH_SIZE."),
    epochs: float | None = typer.Option(None, "--epochs", help="Env EPOCHS."),
    learning_rate: float | None = typer.Option(None, "--learning-rate", help="Env LEARNING_RATE."),
    max_length: int | None = typer.Option(None, "--max-length", help="Env MAX_LENGTH."),
    method: str | None = typer.Option(None, "--method", help="qlora | lora | full (env METHOD)."),
    packing: bool | None = typer.Option(None, "--packing/--no-packing", help="Env PACKING."),
    merge_adapter: bool | None = typer.Option(
        None, "--merge/--no-merge", help="Also save the merged model (env MERGE_ADAPTER)."
    ),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help="Env MLFLOW_TRACKING_URI."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train one model: the original plan's llama3-training container, as a command.

    Reads the original plan's environment variables (flags override them), trains with QLoRA, saves
    the adapter to OUTPUT_DIR/MODEL_NAME, reloads it and generates once. Exit 1 when a guard stops
    training (NaN or diverging loss, out of memory), 2 on bad input. Resumes from the last
    checkpoint when run again on the same OUTPUT_DIR/MODEL_NAME.
    """
    overrides = {
        "data": data,
        "val_data": val_data,
        "name": name,
        "output_dir": output_dir,
        "base_model": base_model,
        "plan": plan,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "max_length": max_length,
        "method": method,
        "packing": packing,
        "merge_adapter": merge_adapter,
        "tracking_uri": tracking_uri,
    }
    job = resolve(job_from_env(os.environ, overrides))
    quiet_libraries()

    say = (lambda _: None) if as_json else (lambda line: console.print(line, highlight=False))
    try:
        # On a terminal a bar follows the steps; logs and pipes get the original plan's step lines.
        with Bars(console, enabled=not as_json) as bars:
            result = run_job(job, say, bars.training(f"{job.job.name}: train"))
    except TrainingStopped as err:
        Console(stderr=True).print(f"[red]FAIL:[/] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        print(json.dumps(result, indent=2, default=str))


train.__doc__ = (train.__doc__ or "") + "\n\nEnvironment variables:\n\n" + env_help()


def memory(
    model: str = typer.Argument(
        ...,
        metavar="MODEL_OR_CONFIG",
        help="A local model directory, a config.json, a shipped hub id (meta-llama/"
        "Meta-Llama-3-8B), an embedded model (tiny-llama, smollm2-135m), or a tunegate.yaml (its "
        "model and settings).",
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    max_length: int | None = typer.Option(None, "--max-length", min=16),
    lora_r: int | None = typer.Option(None, "--lora-r", min=1),
    lora_dropout: float | None = typer.Option(None, "--lora-dropout", min=0, max=0.99),
    method: str | None = typer.Option(None, "--method", help="qlora | lora | full"),
    checkpointing: bool | None = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing"
    ),
    upcast_frozen: bool | None = typer.Option(
        None, "--upcast-frozen/--no-upcast-frozen", help="peft's fp32 cast of frozen weights."
    ),
    vram: float = typer.Option(12.0, "--vram", help="GiB of the target GPU (RTX 4070 Ti: 12)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Estimate the GPU memory a fine-tuning run needs; exit 1 when it does not fit --vram."""
    model, base = _memory_baseline(model)
    if method is not None and method not in ("qlora", "lora", "full"):
        raise UserError(f"--method: '{method}' is not one of qlora, lora, full")
    flags: dict[str, Any] = {
        "method": method,
        "batch_size": batch_size,
        "max_length": max_length,
        "lora_r": lora_r,
        "lora_dropout": lora_dropout,
        "gradient_checkpointing": checkpointing,
        "upcast_frozen": upcast_frozen,
    }
    shape = load_shape(model)
    chosen = replace(base, **{k: v for k, v in flags.items() if v is not None})
    est = estimate(shape, chosen, vram_gib=vram)
    if as_json:
        print(json.dumps(est.to_json(), indent=2))
    else:
        _print_memory(model, shape, est, vram)
    if not est.fits:
        raise typer.Exit(EXIT_FAILED)


def _memory_baseline(model: str) -> tuple[str, TrainingShape]:
    """The model to estimate and the settings the flags override: a plan's, or the defaults."""
    if not model.endswith((".yaml", ".yml")):
        return model, TrainingShape()
    p = load_plan(Path(model))
    return p.model.name, TrainingShape.from_settings(
        p.training, p.quantization, p.lora, p.model.max_length
    )


def _print_memory(model: str, shape: ModelShape, est: MemoryEstimate, vram: float) -> None:
    t = est.training
    console.print(
        f"[bold]{model}[/]: {shape.total_params / 1e9:.2f} B parameters "
        f"({shape.linear_params / 1e9:.2f} B in linear layers), {t.method}, "
        f"batch {t.batch_size} × {t.max_length} tokens, LoRA r={t.lora_r}, "
        f"checkpointing {'on' if t.gradient_checkpointing else 'off'}",
        highlight=False,
    )
    table = Table(show_header=True, header_style="bold")
    table.add_column("component")
    table.add_column("memory", justify="right")
    for name, value in est.components.items():
        if name != "weights at load":
            table.add_row(name, gib(value))
    table.add_row(
        "allocator slack", gib(est.total - est.allocated_peak - est.components["cuda context"])
    )
    table.add_row("[bold]total[/]", f"[bold]{gib(est.total)}[/]")
    console.print(table)
    if t.method == "qlora":
        console.print(
            f"Loaded in 4-bit: {gib(est.load)} (before k-bit preparation)", highlight=False
        )
    if est.fits:
        console.print(f"[green]fits[/] in {vram:g} GiB", highlight=False)
    else:
        console.print(
            f"[red]does not fit[/] in {vram:g} GiB; try: " + "; ".join(advice(est)),
            highlight=False,
        )
