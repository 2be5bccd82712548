"""The trainer: QLoRA (or LoRA / full) through transformers + peft + trl + bitsandbytes.

One path, top to bottom: load the base (4-bit nf4 with double quantization for QLoRA) → prepare it
for k-bit training (peft's `prepare_model_for_kbit_training`, called here because trl 1.x no longer
does) → wrap it in LoRA on every linear layer → SFTTrainer with completion-only loss and EOS
appended → checkpoints every `save_steps` (resume picks the last) → save adapter + tokenizer +
`tunegate.json`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunegate.data.items import Item, items_hash
from tunegate.plan import LoraSettings, QuantizationConfig, TrainingConfig

# Receives batches of (metrics, step); it must skip steps it has already recorded, because a
# resumed run replays the checkpoint's history to fill what a kill interrupted.
MetricSink = Callable[[list[tuple[dict[str, float], int]]], None]


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
    stopped_reason: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
        model.to(device)
    return model


def count_linear4bit(model: Any) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def versions() -> dict[str, str]:
    import bitsandbytes
    import peft
    import torch
    import transformers
    import trl

    import tunegate

    return {
        "tunegate": tunegate.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "trl": trl.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }


def _numeric(logs: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and k != "step"}


def _last_checkpoint(checkpoints: Path) -> Path | None:
    found = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


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
) -> TrainResult:
    """Train one arm into `out_dir/adapter`; resume from `out_dir/checkpoints` if present."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoTokenizer, TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    started = time.perf_counter()
    device, _ = device_and_dtype(quant.compute_dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_base(model_dir, quant)
    n4 = count_linear4bit(model) if quant.method == "qlora" else 0
    if quant.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=training.gradient_checkpointing
        )
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
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    too_long = [
        f"{i.id} ({n} tokens)"
        for i in train_items + val_items
        if (n := len(tokenizer(i.prompt + i.completion)["input_ids"]) + 1) > max_length  # + EOS
    ]
    if too_long and not allow_truncation:
        # TRL would truncate these silently and train on cut-off completions.
        raise ValueError(
            f"{len(too_long)} sample(s) exceed model.max_length={max_length} and would be "
            f"truncated: {', '.join(too_long[:10])}"
        )

    def to_dataset(items: list[Item]) -> Dataset:
        return Dataset.from_list([{"prompt": i.prompt, "completion": i.completion} for i in items])

    checkpoints = out_dir / "checkpoints"
    config = SFTConfig(
        output_dir=str(checkpoints),
        seed=seed,
        data_seed=seed,  # same seed → same data order in both arms
        learning_rate=training.learning_rate,
        per_device_train_batch_size=training.batch_size,
        per_device_eval_batch_size=max(training.batch_size, 8),
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        num_train_epochs=training.epochs,
        max_steps=training.max_steps or -1,
        lr_scheduler_type=training.lr_scheduler,
        warmup_steps=training.warmup_steps,
        weight_decay=training.weight_decay,
        gradient_checkpointing=training.gradient_checkpointing,
        max_length=max_length,
        completion_only_loss=True,  # loss on the completion only (TRL's default for this shape)
        logging_steps=1,  # SFTConfig default 10; the loss gate needs every step
        logging_first_step=True,
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=2,
        eval_strategy="no",
        report_to=[],  # tunegate logs to MLflow itself (nested runs, buffered for resume)
        bf16=device == "cuda" and quant.compute_dtype in ("auto", "bfloat16"),
        use_cpu=device == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )

    sink_state: dict[str, Any] = {"buffer": [], "stopped": None}

    class _Watch(TrainerCallback):
        """Holds step metrics back until a checkpoint covers them: after a kill, the resumed run
        restarts at that checkpoint, so a step logged past it would be logged again with other
        values. Stops on a NaN/inf loss (the watchdog)."""

        def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
            logs = logs or {}
            loss = logs.get("loss")
            if loss is not None and not math.isfinite(loss):
                sink_state["stopped"] = f"loss is {loss} at step {state.global_step}"
                control.should_training_stop = True
            if "loss" in logs:
                sink_state["buffer"].append((_numeric(logs), state.global_step))

        def on_save(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            flush()

    def flush() -> None:
        if metric_sink and sink_state["buffer"]:
            metric_sink(list(sink_state["buffer"]))
        sink_state["buffer"].clear()

    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=to_dataset(train_items),
        eval_dataset=to_dataset(val_items) if val_items else None,
        processing_class=tokenizer,
        callbacks=[_Watch()],
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # tunegate prints its own summary
    resume = _last_checkpoint(checkpoints)
    before_file = out_dir / "eval_before.json"
    eval_before: float | None = None
    if val_items:
        if before_file.is_file():
            eval_before = json.loads(before_file.read_text())["eval_loss"]
        else:
            eval_before = float(trainer.evaluate()["eval_loss"])
            out_dir.mkdir(parents=True, exist_ok=True)
            before_file.write_text(json.dumps({"eval_loss": eval_before}))
    if resume and metric_sink:
        # A kill between writing a checkpoint and logging its steps loses them from tracking;
        # the checkpoint's own history has them. The sink skips what it already holds.
        history = json.loads((resume / "trainer_state.json").read_text())["log_history"]
        metric_sink([(_numeric(h), int(h["step"])) for h in history if "loss" in h])
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    flush()
    eval_after = float(trainer.evaluate()["eval_loss"]) if val_items else None

    adapter_dir = out_dir / "adapter"
    trainer.save_model(str(adapter_dir))
    tokenizer.save_pretrained(adapter_dir)
    losses = [(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h]
    train_tokens = int(trainer.state.num_input_tokens_seen or 0) or sum(
        len(tokenizer(i.prompt + i.completion)["input_ids"]) for i in train_items
    ) * max(1, math.ceil(training.epochs))
    result = TrainResult(
        adapter_dir=str(adapter_dir),
        steps=int(trainer.state.global_step),
        losses=losses,
        eval_loss_before=eval_before,
        eval_loss_after=eval_after,
        linear4bit_layers=n4,
        trainable_params=int(trainable),
        train_tokens=train_tokens,
        seconds=time.perf_counter() - started,
        resumed_from=resume.name if resume else None,
        stopped_reason=sink_state["stopped"],
        versions=versions(),
    )
    meta = {
        "base_model": str(model_dir),
        "method": quant.method,
        "seed": seed,
        "train_items": len(train_items),
        "train_data_hash": items_hash(train_items),
        "val_data_hash": items_hash(val_items),
        "training": training.model_dump(),
        "quantization": quant.model_dump(),
        "lora": lora.model_dump(),
        "versions": result.versions,
        **(provenance or {}),
    }
    (adapter_dir / "tunegate.json").write_text(json.dumps(meta, indent=2))
    return result
