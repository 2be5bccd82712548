"""One training job outside the ladder: `tunegate train`, and the container's entrypoint.

Configured like the original plan's `llama3-training` image, by environment variables with the same
names and meaning (DATASET_PATH, VAL_DATASET_PATH, MAX_STEPS, BATCH_SIZE, EPOCHS, MODEL_NAME,
MLFLOW_TRACKING_URI), plus tunegate's own (ENV_EXTRAS) for what the original plan left implicit. A
plan file, when given, supplies the defaults; command-line flags override both. A malformed value,
an unknown `TUNEGATE_*` variable or a near-miss of a known name (`EPOCH=3`) is an error naming the
variable: a typo must not silently train with defaults for a night.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunegate.determinism import MachineRecord
from tunegate.errors import UserError
from tunegate.models import TINY_LLAMA, resolve_model
from tunegate.plan import LoraSettings, QuantizationConfig, TrainingConfig, load_plan, redact
from tunegate.rundir import atomic_write_json
from tunegate.tracking import Tracker
from tunegate.train.watch import (
    STREAM_ENV,
    MetricSink,
    TrainingStopped,
    is_main_process,
    streaming,
)

if TYPE_CHECKING:  # the trainer, the items' model and inference load only when a job runs
    from tunegate.data.items import Item
    from tunegate.train.qlora import TrainResult

# The original plan's variables: name → (TrainJob field, meaning).
SEED_ENV = {
    "DATASET_PATH": ("data", "training data, JSONL (required)"),
    "VAL_DATASET_PATH": ("val_data", "validation data, JSONL"),
    "MAX_STEPS": ("max_steps", "stop after this many optimizer steps (wins over EPOCHS)"),
    "BATCH_SIZE": ("batch_size", "per-device batch size"),
    "EPOCHS": ("epochs", "passes over the data"),
    "MODEL_NAME": ("name", "name of the trained model: saved to OUTPUT_DIR/MODEL_NAME"),
    "MLFLOW_TRACKING_URI": ("tracking_uri", "MLflow server or store"),
}
# tunegate's additions, for what the original plan's image hard-coded.
ENV_EXTRAS = {
    "BASE_MODEL": ("base_model", "base model: an embedded model or a local directory"),
    "OUTPUT_DIR": ("output_dir", "where MODEL_NAME's directory goes (the original plan's /models)"),
    "LEARNING_RATE": ("learning_rate", "peak learning rate"),
    "GRADIENT_ACCUMULATION_STEPS": ("gradient_accumulation_steps", "effective batch multiplier"),
    "MAX_LENGTH": ("max_length", "token limit per sample (longer samples are an error)"),
    "LORA_R": ("lora_r", "LoRA rank"),
    "METHOD": ("method", "qlora | lora | full"),
    "SEED": ("seed", "seed for data order and LoRA init"),
    "SAVE_STEPS": ("save_steps", "checkpoint interval"),
    "PACKING": ("packing", "pack samples into max_length rows (true/false)"),
    "MERGE_ADAPTER": ("merge_adapter", "also save the merged 16-bit model (true/false)"),
    "MLFLOW_EXPERIMENT_NAME": ("experiment", "MLflow experiment"),
    "TUNEGATE_PLAN": ("plan", "a tunegate.yaml whose model/training settings are the defaults"),
    "TUNEGATE_SETTINGS_JSON": (
        "settings_json",
        "JSON {training, quantization, lora}: a plan's blocks, whole (what executors pass)",
    ),
}
KNOWN_ENV = {**SEED_ENV, **ENV_EXTRAS}


class TrainJob(BaseModel):
    """What `tunegate train` runs. Unset fields come from the plan (if any), else the defaults."""

    model_config = ConfigDict(extra="forbid")

    data: Path
    val_data: Path | None = None
    name: str = Field("model", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    output_dir: Path = Path("models")
    base_model: str | None = None
    tracking_uri: str | None = None
    experiment: str = "tunegate-train"
    plan: Path | None = None
    max_steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    learning_rate: float | None = Field(None, gt=0)
    gradient_accumulation_steps: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=16)
    lora_r: int | None = Field(None, ge=1)
    method: str | None = Field(None, pattern=r"^(qlora|lora|full)$")
    seed: int | None = None
    save_steps: int | None = Field(None, ge=1)
    packing: bool | None = None
    merge_adapter: bool | None = None
    settings_json: str | None = None

    @property
    def out_dir(self) -> Path:
        return self.output_dir / self.name


def _env_error(var: str, value: str, err: ValidationError) -> UserError:
    message = err.errors()[0]["msg"]
    return UserError(f"environment variable {var}={value!r}: {message}")


# tunegate's variables that are not the job's settings: the cache, and the metric lines a climb
# following this job from another machine reads (train.watch.STREAM_ENV).
_NOT_JOB_ENV = ("TUNEGATE_CACHE", STREAM_ENV)


def job_from_env(environ: Mapping[str, str], overrides: dict[str, Any]) -> TrainJob:
    """The job the environment describes, with command-line `overrides` (None = unset) on top."""
    for var in environ:
        if var in KNOWN_ENV:
            continue
        if var.startswith("TUNEGATE_") and var not in _NOT_JOB_ENV:
            known = [v for v in KNOWN_ENV if v.startswith("TUNEGATE_")] + list(_NOT_JOB_ENV)
            raise UserError(
                f"environment variable {var}: unknown (tunegate reads {', '.join(known)})"
            )
        near = difflib.get_close_matches(var, list(KNOWN_ENV), n=1, cutoff=0.86)
        if near:
            raise UserError(f"environment variable {var}: unknown — did you mean {near[0]}?")
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for var, (fld, _) in KNOWN_ENV.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        values[fld] = raw
        source[fld] = var
    values |= {k: v for k, v in overrides.items() if v is not None}
    if "data" not in values:
        raise UserError("no training data: set DATASET_PATH or pass --data")
    try:
        return TrainJob.model_validate(values)
    except ValidationError as err:
        fld = str(err.errors()[0]["loc"][0])
        if fld in source and fld not in {k for k, v in overrides.items() if v is not None}:
            raise _env_error(source[fld], environ[source[fld]], err) from None
        raise UserError(f"--{fld.replace('_', '-')}: {err.errors()[0]['msg']}") from None


@dataclass
class ResolvedJob:
    """A job with the plan's (or default) settings filled in: what the trainer receives."""

    job: TrainJob
    base_model: str
    training: TrainingConfig
    quant: QuantizationConfig
    lora: LoraSettings
    max_length: int
    seed: int
    tracking_uri: str
    notes: list[str] = field(default_factory=list)


def resolve(job: TrainJob) -> ResolvedJob:
    if job.plan is not None:
        plan = load_plan(job.plan)
        training, quant, lora = plan.training, plan.quantization, plan.lora
        base, max_length, seed = plan.model.name, plan.model.max_length, plan.seed
    else:
        training, quant, lora = TrainingConfig(), QuantizationConfig(), LoraSettings()
        base, max_length, seed = TINY_LLAMA, 512, 42
    if job.settings_json:
        try:
            blocks = json.loads(job.settings_json)
            training = TrainingConfig.model_validate(blocks.get("training", training.model_dump()))
            quant = QuantizationConfig.model_validate(
                blocks.get("quantization", quant.model_dump())
            )
            lora = LoraSettings.model_validate(blocks.get("lora", lora.model_dump()))
        except (ValueError, AttributeError, ValidationError) as err:
            first = str(err).splitlines()[0]
            raise UserError(f"environment variable TUNEGATE_SETTINGS_JSON: {first}") from None
    updates = {
        k: getattr(job, k)
        for k in (
            "max_steps",
            "batch_size",
            "epochs",
            "learning_rate",
            "gradient_accumulation_steps",
            "save_steps",
            "packing",
            "merge_adapter",
        )
        if getattr(job, k) is not None
    }
    try:
        training = TrainingConfig.model_validate(training.model_dump() | updates)
    except ValidationError as err:  # a value the plan would refuse too (an lr above 1, say)
        error = err.errors()[0]
        name = str(error["loc"][0])
        var = next((v for v, (f, _) in KNOWN_ENV.items() if f == name), None)
        flag = f"--{name.replace('_', '-')}"
        raise UserError(f"{f'{var} / ' if var else ''}{flag}: {error['msg']}") from None
    if job.lora_r is not None:
        lora = lora.model_copy(update={"r": job.lora_r, "alpha": 2 * job.lora_r})
    if job.method is not None:
        quant = quant.model_copy(update={"method": job.method})
    uri = job.tracking_uri or f"sqlite:///{(job.output_dir / 'mlflow.db').resolve()}"
    return ResolvedJob(
        job=job,
        base_model=job.base_model or base,
        training=training,
        quant=quant,
        lora=lora,
        max_length=job.max_length or max_length,
        seed=job.seed if job.seed is not None else seed,
        tracking_uri=uri,
    )


def env_help() -> str:
    rows = [f"  {var:<28} {meaning}" for var, (_, meaning) in SEED_ENV.items()]
    rows += ["  tunegate's additions:"]
    rows += [f"  {var:<28} {meaning}" for var, (_, meaning) in ENV_EXTRAS.items()]
    return "\n".join(rows)


@dataclass
class JobTracking:
    """The job's MLflow run (rank 0 only), the trainer's metric sink into it and the system
    metrics monitor on it."""

    tracker: Tracker
    run_id: str
    sink: MetricSink
    monitor: Any  # MLflow's SystemMetricsMonitor, or None where it cannot run


def run_job(
    r: ResolvedJob,
    say: Callable[[str], None],
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train, save, reload and smoke-generate, logging to MLflow (rank 0 only). Returns the
    record also written to OUTPUT_DIR/MODEL_NAME/result.json. Raises TrainingStopped when a
    guard stops training."""
    from tunegate.data.items import load_items

    job = r.job
    train_items = load_items(job.data)
    val_items = load_items(job.val_data) if job.val_data else []
    model_dir = resolve_model(r.base_model)
    tracking = start_tracking(r, len(train_items)) if is_main_process() else None
    say(f"Loading model: {r.base_model}")
    res = train_job(r, model_dir, train_items, val_items, tracking, say, on_step)
    if tracking is None:  # not rank 0: rank 0 reports, reloads and logs
        return {"rank": os.environ.get("RANK"), "steps": res.steps}
    losses = [v for _, v in res.losses]
    shown = losses if len(losses) <= 6 else [*losses[:3], *losses[-3:]]
    say("Loss: " + " → ".join(f"{v:.2f}" for v in shown))
    say(f"Model saved to {res.adapter_dir}")
    prompt = (val_items or train_items)[0].prompt
    sample = smoke_generate(model_dir, Path(res.adapter_dir), r.quant, prompt)
    say(f"Inference check (reloaded from disk): {sample[:120]!r}")
    result = {**res.to_json(), "smoke_generation": sample, "mlflow_run": tracking.run_id}
    atomic_write_json(job.out_dir / "result.json", result)
    finish_tracking(tracking, res, job.out_dir / "result.json")
    return result


def start_tracking(r: ResolvedJob, train_items: int) -> JobTracking:
    """Open the job's MLflow run, the same one again when the job resumes, and log its
    settings."""
    job = r.job
    job.out_dir.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(r.tracking_uri, job.experiment, job.output_dir)
    record = job.out_dir / "tracking.json"  # the run id: a resumed job logs into the same run
    previous = json.loads(record.read_text())["run_id"] if record.is_file() else None
    run_id = tracker.start(job.name, run_id=previous, tags={"tunegate.level": "train"})
    atomic_write_json(record, {"run_id": run_id, "tracking_uri": redact(r.tracking_uri)})
    tracker.params(
        run_id,
        {
            **{f"training.{k}": v for k, v in r.training.model_dump().items()},
            **{f"quantization.{k}": v for k, v in r.quant.model_dump().items()},
            **{f"lora.{k}": v for k, v in r.lora.model_dump().items()},
            "base_model": r.base_model,
            "max_length": r.max_length,
            "seed": r.seed,
            "data": str(job.data),
            "val_data": str(job.val_data or ""),
            "train_items": train_items,
        },
    )
    return JobTracking(tracker, run_id, tracker.step_sink(run_id), tracker.system_metrics(run_id))


def train_job(
    r: ResolvedJob,
    model_dir: Path,
    train_items: list[Item],
    val_items: list[Item],
    tracking: JobTracking | None,
    say: Callable[[str], None],
    on_step: Callable[[int, int, dict[str, float]], None] | None,
) -> TrainResult:
    """`train_arm` on the job; a stopped or refused training marks the MLflow run FAILED and is
    raised as TrainingStopped."""
    from tunegate.train.qlora import train_arm

    try:
        return train_arm(
            model_dir=model_dir,
            train_items=train_items,
            val_items=val_items,
            out_dir=r.job.out_dir,
            training=r.training,
            quant=r.quant,
            lora=r.lora,
            max_length=r.max_length,
            seed=r.seed,
            metric_sink=streaming(tracking.sink) if tracking else None,
            provenance={"job": r.job.model_dump(mode="json")},
            progress=say,
            on_step=on_step,
        )
    except (TrainingStopped, ValueError) as err:
        if tracking is not None:
            tracking.tracker.tags(tracking.run_id, {"tunegate.error": str(err)[:5000]})
            tracking.tracker.end(tracking.run_id, "FAILED")
        raise TrainingStopped(str(err)) from None
    finally:
        if tracking is not None and tracking.monitor is not None:
            tracking.monitor.finish()


def smoke_generate(
    model_dir: Path, adapter_dir: Path, quant: QuantizationConfig, prompt: str
) -> str:
    """A few tokens from the adapter reloaded from disk: what was saved loads and generates."""
    from tunegate.generate import generate, load_for_inference

    model, tokenizer = load_for_inference(model_dir, adapter_dir, quant)
    return generate(model, tokenizer, [prompt], max_new_tokens=32)[0]


def finish_tracking(tracking: JobTracking, res: TrainResult, result_file: Path) -> None:
    """Log what made the figures, the figures, the adapter and the result; end the run."""
    tracker, run_id = tracking.tracker, tracking.run_id
    tracker.params(run_id, MachineRecord.from_json(res.machine).params())
    losses = [v for _, v in res.losses]
    tracker.metrics(
        run_id,
        {
            "train_seconds": res.train_seconds,
            "train_tokens": res.train_tokens,
            "tokens_per_second": res.tokens_per_second,
            **({"final_loss": losses[-1]} if losses else {}),
            **({"peak_memory_gib": res.peak_memory_gib} if res.peak_memory_gib else {}),
        },
        res.steps,
    )
    tracker.artifact(run_id, Path(res.adapter_dir), "adapter")
    tracker.artifact(run_id, result_file)
    tracker.end(run_id, "FINISHED")
