"""Baseline for bench/train_throughput.py: the training a practitioner writes by hand.

The model in 4-bit nf4 (double quant), peft's prepare_model_for_kbit_training, LoRA r=16 on all
linear layers, trl's SFTTrainer with its defaults except what must match tunegate's run (steps,
batch, learning rate and its schedule, max length, packing, gradient checkpointing). Prompts are
used as the data file holds them (the bench renders them, for both sides alike); SFTTrainer
computes the loss on the completion only, its default for prompt-completion data. Prints one
JSON line: real tokens trained and the seconds `trainer.train()` took.

    python bench/plain_trl_train.py DATA.jsonl STEPS BATCH PACKING(0|1)
        [--model tiny-llama|smollm2-135m] [--lr LR] [--scheduler NAME] [--warmup N]
        [--max-length N] [--no-gradient-checkpointing]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def train_plain(
    model_dir: str,
    rows: list[dict],
    steps: int,
    batch: int,
    packing: bool,
    max_length: int,
    *,
    learning_rate: float | None = None,
    scheduler: str | None = None,
    warmup: int | None = None,
    gradient_checkpointing: bool = True,
) -> tuple[int, float]:
    """(real tokens trained, seconds of trainer.train()); bf16 on CUDA, fp32 on CPU."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        ),
        dtype=dtype,
        device_map={"": "cuda" if cuda else "cpu"},
    )
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=gradient_checkpointing
    )
    model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.05,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    schedule: dict[str, Any] = {}
    if scheduler is not None:
        schedule["lr_scheduler_type"] = scheduler
    if warmup is not None:
        schedule["warmup_steps"] = warmup
    if not gradient_checkpointing:
        schedule["gradient_checkpointing"] = False
    if learning_rate is None:
        learning_rate = 3e-3 if not cuda else 1e-4
    with tempfile.TemporaryDirectory() as out:
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(
                output_dir=out,
                max_steps=steps,
                per_device_train_batch_size=batch,
                learning_rate=learning_rate,
                max_length=max_length,
                packing=packing,
                include_num_input_tokens_seen="non_padding",
                save_strategy="no",
                report_to=[],
                bf16=cuda,
                use_cpu=not cuda,
                disable_tqdm=True,
                seed=42,
                **schedule,
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return int(trainer.state.num_input_tokens_seen), seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("steps", type=int)
    ap.add_argument("batch", type=int)
    ap.add_argument("packing", choices=("0", "1"))
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--scheduler", default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--no-gradient-checkpointing", action="store_true")
    args = ap.parse_args()
    from tunegate.models import resolve_model

    with open(args.data) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    tokens, seconds = train_plain(
        str(resolve_model(args.model)),
        rows,
        args.steps,
        args.batch,
        args.packing == "1",
        args.max_length,
        learning_rate=args.lr,
        scheduler=args.scheduler,
        warmup=args.warmup,
        gradient_checkpointing=not args.no_gradient_checkpointing,
    )
    print(json.dumps({"tokens": tokens, "seconds": seconds}))


if __name__ == "__main__":
    main()
