"""The trainer: QLoRA (or LoRA / full) through transformers + peft + trl + bitsandbytes.

One path, top to bottom: load the base (4-bit nf4 with double quantization for QLoRA) → prepare it
for k-bit training (`prepare_for_kbit`, the one preparation path: trl 1.x no longer prepares) →
wrap it in LoRA on every linear layer → SFTTrainer with completion-only loss and EOS appended →
checkpoints every `save_steps` and on SIGTERM (resume picks the last) → save adapter + tokenizer +
`tunegate.json` (written last: its presence means the adapter is complete). `train_arm` runs
these as `load_arm` → `build_trainer` → `fit` → `save_arm`; the callbacks that watch training
are in `tunegate.train.callbacks`.

Guards: a loss watchdog (NaN/inf at once, divergence over windows), CUDA out-of-memory turned into
a FAIL with the measured peak and concrete advice, and token lengths counted before training so
nothing is truncated silently.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate import __version__
from tunegate.data.items import Item, items_hash
from tunegate.determinism import machine_record, one_cpu_path, pin
from tunegate.plan import LoraSettings, QuantizationConfig, TrainingConfig
from tunegate.train.memory import TrainingShape, advice, estimate, load_shape
from tunegate.train.watch import (
    LossWatchdog,
    MetricSink,
    TrainingStopped,
    cuda_gib,
    is_main_process,
)

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from tunegate.train.callbacks import MetricBuffer, SigtermCheckpoint


@dataclass
class TrainResult:
    adapter_dir: str
    steps: int
    losses: list[tuple[int, float]]
    eval_loss_before: float | None
    eval_loss_after: float | None
    linear4bit_layers: int
    trainable_params: int
    train_tokens: int
    seconds: float
    resumed_from: str | None = None
    train_seconds: float = 0.0  # trainer.train() alone: what tokens/s is measured over
    load_memory_gib: float | None = None  # CUDA: allocated once the base is loaded
    peak_memory_gib: float | None = None  # CUDA: allocator peak while training
    device: str = "cpu"
    merged_dir: str | None = None
    world_size: int = 1  # processes that trained it (torchrun / accelerate launch)
    # Each logged step after the first: its seconds and tokens (callbacks.StepRecorder).
    step_seconds: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)  # determinism.MachineRecord

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / max(self.train_seconds, 1e-9)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        """A result read back (a container's `result.json`): derived keys are dropped."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["losses"] = [(int(step), float(loss)) for step, loss in values.get("losses", [])]
        return cls(**values)


def device_and_dtype(compute_dtype: str) -> tuple[str, Any]:
    import torch

    on_cuda = torch.cuda.is_available()
    if compute_dtype == "auto":
        dtype = torch.bfloat16 if on_cuda else torch.float32  # CPU kernels are fp32
    else:
        dtype = getattr(torch, compute_dtype)
    return ("cuda" if on_cuda else "cpu"), dtype


def load_base(model_dir: Path, quant: QuantizationConfig) -> Any:
    """Load the base model as the plan says: 4-bit for qlora, else full precision."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    device, dtype = device_and_dtype(quant.compute_dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quant.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant.quant_type,
            bnb_4bit_use_double_quant=quant.double_quant,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if quant.method != "qlora":
        # transformers types `to` through a decorator whose first argument is the model.
        model.to(device)  # type: ignore[arg-type]
    one_cpu_path(model)  # the same 4-bit kernel before and after an evaluation, on every CPU
    return model


def prepare_for_kbit(model: Any, *, gradient_checkpointing: bool, upcast_frozen: bool) -> Any:
    """The one k-bit preparation path (trl 1.x no longer calls peft's for us).

    `upcast_frozen=True` is peft's `prepare_model_for_kbit_training` as is. Otherwise the same
    steps without its cast of every non-4-bit weight to fp32: freeze the base, and for gradient
    checkpointing make the embeddings' output require grad so the checkpointed blocks backprop
    into LoRA. Non-reentrant checkpointing is what torch recommends and works with frozen inputs.
    """
    kwargs = {"use_reentrant": False}
    if upcast_frozen:
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=kwargs,
        )
    for param in model.parameters():
        param.requires_grad_(False)
    if gradient_checkpointing:
        enable_checkpointing(model)
        model.enable_input_require_grads()
    return model


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing (transformers ≥ 5.2x renamed the method)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def build_model(
    model_dir: Path,
    quant: QuantizationConfig,
    lora: LoraSettings,
    *,
    gradient_checkpointing: bool,
    seed: int,
) -> tuple[Any, int]:
    """Base (4-bit for qlora) → k-bit preparation → LoRA. Returns the model and its number of
    `Linear4bit` layers."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    model = load_base(model_dir, quant)
    n4 = count_linear4bit(model) if quant.method == "qlora" else 0
    if quant.method == "qlora":
        model = prepare_for_kbit(
            model,
            gradient_checkpointing=gradient_checkpointing,
            upcast_frozen=quant.upcast_frozen,
        )
    elif gradient_checkpointing:
        enable_checkpointing(model)
        if quant.method == "lora":
            model.enable_input_require_grads()
    if quant.method in ("qlora", "lora"):
        # Seed before LoRA's random init (Trainer seeds only later): both arms start from the
        # same adapter weights whatever ran before them in this process.
        set_seed(seed)
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model, n4


def keep_adapter_precision(model: Any, adapter: dict[str, Any]) -> None:
    """Undo TRL's cast of a quantized model's LoRA weights to bf16: they stay as peft made them
    (fp32, peft's default), with their exact initial values.

    Why: resuming from a checkpoint, transformers loads the adapter through peft, which upcasts
    it to fp32. An uninterrupted run then trained bf16 weights and a resumed one fp32 weights, so
    a run killed after its first checkpoint gave other figures than one never interrupted.
    fp32 adapters cost little (r = 16 on an 8B model: ~40 M parameters, 0.16 GB)."""
    for name, param in model.named_parameters():
        if name in adapter and param.dtype != adapter[name].dtype:
            param.data = adapter[name]


def count_linear4bit(model: Any) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def versions() -> dict[str, str]:
    import bitsandbytes
    import peft
    import torch
    import transformers
    import trl

    return {
        "tunegate": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "trl": trl.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }


@dataclass(frozen=True)
class ArmSettings:
    """What one arm trains with: the base model and the plan's settings."""

    model_dir: Path
    training: TrainingConfig
    quant: QuantizationConfig
    lora: LoraSettings
    max_length: int
    seed: int


@dataclass
class LoadedArm:
    """The model ready to train, its tokenizer, and what loading them measured."""

    model: Any
    tokenizer: Any
    device: str
    linear4bit_layers: int
    trainable_params: int
    baseline_gib: float  # CUDA memory allocated before loading: this arm's figures are above it
    load_memory_gib: float | None


def _last_checkpoint(checkpoints: Path) -> Path | None:
    found = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def _above(value: float | None, baseline: float) -> float | None:
    return None if value is None else value - baseline


def _out_of_memory(
    err: BaseException, step: int, arm: ArmSettings, baseline_gib: float
) -> TrainingStopped:
    """The FAIL for CUDA out of memory: this run's measured peak and concrete advice. Empties
    the CUDA cache, so that what runs next (the other arm) is not short of memory."""
    import torch

    peak = (cuda_gib("max_memory_allocated") or 0.0) - baseline_gib
    total = 0.0
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
    shape = TrainingShape.from_settings(arm.training, arm.quant, arm.lora, arm.max_length)
    tips = advice(estimate(load_shape(str(arm.model_dir)), shape, vram_gib=total or 12.0))
    torch.cuda.empty_cache()
    return TrainingStopped(
        f"CUDA out of memory at step {step}: this run's peak {peak:.2f} GiB allocated on a "
        f"{total:.1f} GiB device; "
        f"try {'; or '.join(tips)} ({type(err).__name__})"
    )


def _checkpointing_field() -> str:
    """transformers ≥ 5.2x renamed TrainingArguments.gradient_checkpointing."""
    from trl import SFTConfig

    names = {f.name for f in fields(SFTConfig)}
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else ("gradient_checkpointing")
    )


def train_arm(
    *,
    model_dir: Path,
    train_items: list[Item],
    val_items: list[Item],
    out_dir: Path,
    training: TrainingConfig,
    quant: QuantizationConfig,
    lora: LoraSettings,
    max_length: int,
    seed: int,
    metric_sink: MetricSink | None = None,
    provenance: dict[str, Any] | None = None,
    allow_truncation: bool = False,
    progress: Callable[[str], None] | None = None,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train one arm into `out_dir/adapter`; resume from `out_dir/checkpoints` if present.

    Raises `TrainingStopped` when a guard stops it, and `SystemExit(143)` after checkpointing
    when the process receives SIGTERM (resume continues from that checkpoint). `progress` gets
    lines to print; `on_step(step, max_steps, logs)` follows every logged step (a progress
    bar), and replaces the per-step line when given.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tunegate.train.callbacks import (
        LossGuard,
        MetricBuffer,
        SigtermCheckpoint,
        StepRecorder,
        StopOnFailedWrite,
    )

    # What is loaded by now (libraries, no model) is out of the collector's sight while this
    # arm trains: the trainer's full collection takes milliseconds, not half a second.
    with frozen_heap():
        started = time.perf_counter()
        pin(training.threads, deterministic=training.deterministic)
        arm = ArmSettings(model_dir, training, quant, lora, max_length, seed)
        say = progress or (lambda _: None)
        loaded = load_arm(arm, say)
        check_lengths(loaded.tokenizer, train_items + val_items, max_length, allow_truncation)
        metrics = MetricBuffer(metric_sink if is_main_process() else None)
        guard = LossGuard(LossWatchdog(training.divergence_window, training.divergence_factor))
        sigterm = SigtermCheckpoint()
        recorder = StepRecorder(metrics, loaded.baseline_gib, say, on_step)
        checkpoints = out_dir / "checkpoints"
        stop = StopOnFailedWrite(metrics)
        trainer = build_trainer(
            loaded, arm, train_items, val_items, checkpoints, [guard, recorder, sigterm, stop]
        )
        resume = _last_checkpoint(checkpoints)
        eval_before = eval_loss_before(trainer, out_dir) if val_items else None
        if resume:
            metrics.replay(resume)
        train_seconds = fit(trainer, arm, resume, metrics, sigterm, loaded.baseline_gib)
        if sigterm.requested:
            raise SystemExit(143)  # checkpoint saved by the callback; resume continues from it
        if guard.stopped:
            raise TrainingStopped(guard.stopped)
        # The training peak, read before the evaluation adds its own.
        peak_memory = _above(cuda_gib("max_memory_allocated"), loaded.baseline_gib)
        eval_after = float(trainer.evaluate()["eval_loss"]) if val_items else None
        result = TrainResult(
            **_trained_figures(trainer, loaded, arm, out_dir, train_items),
            eval_loss_before=eval_before,
            eval_loss_after=eval_after,
            peak_memory_gib=peak_memory,
            seconds=time.perf_counter() - started,
            resumed_from=resume.name if resume else None,
            train_seconds=train_seconds,
            step_seconds=[seconds for seconds, _ in recorder.steps],
            step_tokens=[tokens for _, tokens in recorder.steps],
        )
        if trainer.is_world_process_zero():  # rank 0 alone writes the adapter and its record
            save_arm(trainer, loaded.tokenizer, arm, result, train_items, val_items, provenance)
        return result


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Every object alive now moved out of the garbage collector's sight until the block ends
    (`gc.freeze`): `Trainer.train` runs a full collection per arm, which walks the millions of
    objects torch, transformers and MLflow leave, half a second each time on 2 cores. Nothing
    frozen is freed by the collector meanwhile (reference counting still frees it), so the
    block unfreezes at its end; an outer block (the climb's) holds it for an inner one."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def load_arm(arm: ArmSettings, say: Callable[[str], None]) -> LoadedArm:
    """Tokenizer and model (base → k-bit preparation → LoRA), with the memory loading took."""
    import torch
    from transformers import AutoTokenizer

    device, _ = device_and_dtype(arm.quant.compute_dtype)
    tokenizer = AutoTokenizer.from_pretrained(arm.model_dir)
    # Memory is measured above what was allocated before (a caller may hold other models).
    baseline = cuda_gib("memory_allocated") or 0.0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        model, n4 = build_model(
            arm.model_dir,
            arm.quant,
            arm.lora,
            gradient_checkpointing=arm.training.gradient_checkpointing,
            seed=arm.seed,
        )
    except torch.OutOfMemoryError as err:
        raise _out_of_memory(err, 0, arm, baseline) from None
    load_memory = _above(cuda_gib("memory_allocated"), baseline)
    if arm.quant.method == "qlora":
        where = f"{load_memory:.2f} GiB VRAM" if load_memory is not None else "on CPU"
        say(f"Loaded in 4-bit: {where} ({n4} Linear4bit layers)")
    else:
        say(f"Loaded for {arm.quant.method} training on {device}")
    return LoadedArm(
        model=model,
        tokenizer=tokenizer,
        device=device,
        linear4bit_layers=n4,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        baseline_gib=baseline,
        load_memory_gib=load_memory,
    )


def check_lengths(
    tokenizer: Any, items: list[Item], max_length: int, allow_truncation: bool
) -> None:
    """Refuse items longer than `max_length` tokens: TRL would truncate them silently and train
    on cut-off completions."""
    too_long = [
        f"{i.id} ({n} tokens)"
        for i in items
        if (n := len(tokenizer(i.prompt + i.completion)["input_ids"]) + 1) > max_length  # + EOS
    ]
    if too_long and not allow_truncation:
        raise ValueError(
            f"{len(too_long)} sample(s) exceed model.max_length={max_length} and would be "
            f"truncated: {', '.join(too_long[:10])}"
        )


def sft_config(arm: ArmSettings, checkpoints: Path, device: str) -> Any:
    """TRL's settings for one arm: checkpoints into `checkpoints`, every step logged."""
    from trl import SFTConfig

    training = arm.training
    # Checkpointing was set up by prepare_for_kbit / build_model (non-reentrant); the Trainer's
    # own call would redo it with other kwargs.
    checkpointing: dict[str, Any] = {_checkpointing_field(): False}
    return SFTConfig(
        output_dir=str(checkpoints),
        seed=arm.seed,
        data_seed=arm.seed,  # same seed → same data order in both arms
        learning_rate=training.learning_rate,
        per_device_train_batch_size=training.batch_size,
        per_device_eval_batch_size=max(training.batch_size, 8),
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        num_train_epochs=training.epochs,
        max_steps=training.max_steps or -1,
        lr_scheduler_type=training.lr_scheduler,
        warmup_steps=training.warmup_steps,
        weight_decay=training.weight_decay,
        **checkpointing,
        max_length=arm.max_length,
        packing=training.packing,
        completion_only_loss=True,  # loss on the completion only (TRL's default for this shape)
        logging_steps=1,  # SFTConfig default 10; the loss gate and the watchdog need every step
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",  # tokens/s counts real tokens, not padding
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=2,
        eval_strategy="no",
        report_to=[],  # tunegate logs to MLflow itself (nested runs, buffered for resume)
        bf16=device == "cuda" and arm.quant.compute_dtype in ("auto", "bfloat16"),
        use_cpu=device == "cpu",
        ddp_backend="gloo"
        if device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1
        else None,
        # LoRA leaves no parameter unused; Trainer's True costs an extra graph walk per step.
        ddp_find_unused_parameters=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def _dataset(items: list[Item]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": i.prompt, "completion": i.completion} for i in items])


def build_trainer(
    loaded: LoadedArm,
    arm: ArmSettings,
    train_items: list[Item],
    val_items: list[Item],
    checkpoints: Path,
    callbacks: list[TrainerCallback],
) -> Any:
    """SFTTrainer on the loaded model, its LoRA weights kept in the precision peft made them."""
    from transformers import PrinterCallback
    from trl import SFTTrainer

    config = sft_config(arm, checkpoints, loaded.device)
    model = loaded.model
    adapter = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=_dataset(train_items),
        eval_dataset=_dataset(val_items) if val_items else None,
        processing_class=loaded.tokenizer,
        callbacks=callbacks,
    )
    keep_adapter_precision(trainer.model, adapter)  # after TRL's cast, which it undoes
    trainer.remove_callback(PrinterCallback)  # tunegate prints its own summary
    return trainer


def eval_loss_before(trainer: Any, out_dir: Path) -> float:
    """The validation loss of the untrained model, measured once: a resumed run reads the first
    run's record (its model is no longer untrained)."""
    before_file = out_dir / "eval_before.json"
    if before_file.is_file():
        return float(json.loads(before_file.read_text())["eval_loss"])
    eval_before = float(trainer.evaluate()["eval_loss"])
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
        before_file.write_text(json.dumps({"eval_loss": eval_before}))
    return eval_before


def fit(
    trainer: Any,
    arm: ArmSettings,
    resume: Path | None,
    metrics: MetricBuffer,
    sigterm: SigtermCheckpoint,
    baseline_gib: float,
) -> float:
    """Train from scratch or from `resume`, catching SIGTERM; returns the seconds
    `trainer.train()` took. The held-back step metrics are written whatever happens."""
    import torch
    from transformers import set_seed

    if resume is None:
        # The validation pass before training may draw random numbers; a run resumed before its
        # first checkpoint skips it. Both start training from the same stream (a checkpoint
        # restores its own).
        set_seed(arm.seed)
    try:
        with sigterm.handling_sigterm():
            train_started = time.perf_counter()
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            return time.perf_counter() - train_started
    except torch.OutOfMemoryError as err:
        raise _out_of_memory(err, int(trainer.state.global_step), arm, baseline_gib) from None
    finally:
        metrics.close()


def _trained_figures(
    trainer: Any, loaded: LoadedArm, arm: ArmSettings, out_dir: Path, train_items: list[Item]
) -> dict[str, Any]:
    """The TrainResult fields the trained trainer and the loaded model give."""
    tokens = int(trainer.state.num_input_tokens_seen or 0) or sum(
        len(loaded.tokenizer(i.prompt + i.completion)["input_ids"]) for i in train_items
    ) * max(1, math.ceil(arm.training.epochs))
    merge = arm.training.merge_adapter and arm.quant.method != "full"
    return dict(
        adapter_dir=str(out_dir / "adapter"),
        steps=int(trainer.state.global_step),
        losses=[
            (int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h
        ],
        linear4bit_layers=loaded.linear4bit_layers,
        trainable_params=int(loaded.trainable_params),
        train_tokens=tokens,
        load_memory_gib=loaded.load_memory_gib,
        device=loaded.device,
        merged_dir=str(out_dir / "merged") if merge else None,
        world_size=int(trainer.args.world_size),
        versions=versions(),
        machine=machine_record().to_json(),
    )


def save_arm(
    trainer: Any,
    tokenizer: Any,
    arm: ArmSettings,
    result: TrainResult,
    train_items: list[Item],
    val_items: list[Item],
    provenance: dict[str, Any] | None,
) -> None:
    """Adapter, tokenizer (and the merged model), then `tunegate.json`: written last, its
    presence means the adapter is complete."""
    adapter_dir = Path(result.adapter_dir)
    trainer.save_model(str(adapter_dir))
    tokenizer.save_pretrained(adapter_dir)
    if result.merged_dir is not None:
        save_merged(arm.model_dir, adapter_dir, Path(result.merged_dir), arm.quant)
    meta = {
        "base_model": str(arm.model_dir),
        "method": arm.quant.method,
        "seed": arm.seed,
        "train_items": len(train_items),
        "train_data_hash": items_hash(train_items),
        "val_data_hash": items_hash(val_items),
        "training": arm.training.model_dump(),
        "quantization": arm.quant.model_dump(),
        "lora": arm.lora.model_dump(),
        "result": {k: v for k, v in result.to_json().items() if k != "losses"},
        "versions": result.versions,
        **(provenance or {}),
    }
    (adapter_dir / "tunegate.json").write_text(json.dumps(meta, indent=2))


def save_merged(base_dir: Path, adapter_dir: Path, target: Path, quant: QuantizationConfig) -> None:
    """Base + adapter merged into one 16-bit model (loadable without peft). A 4-bit base is
    reloaded in 16-bit for the merge: merging into quantized weights would round the update."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, dtype = device_and_dtype(quant.compute_dtype)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(target)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(target)
