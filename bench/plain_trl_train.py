"""Baseline for bench/train_throughput.py: the training a practitioner writes by hand.

tiny-llama in 4-bit nf4 (double quant), peft's prepare_model_for_kbit_training, LoRA r=16 on all
linear layers, trl's SFTTrainer with its defaults except what must match tunegate's run (steps,
batch, learning rate, max length, packing). Prints one JSON line: real tokens trained and the
seconds `trainer.train()` took.

    python bench/plain_trl_train.py DATA.jsonl STEPS BATCH PACKING(0|1)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def train_plain(
    model_dir: str, rows: list[dict], steps: int, batch: int, packing: bool, max_length: int
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
    model = prepare_model_for_kbit_training(model)
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
    with tempfile.TemporaryDirectory() as out:
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(
                output_dir=out,
                max_steps=steps,
                per_device_train_batch_size=batch,
                learning_rate=3e-3 if not cuda else 1e-4,
                max_length=max_length,
                packing=packing,
                include_num_input_tokens_seen="non_padding",
                save_strategy="no",
                report_to=[],
                bf16=cuda,
                use_cpu=not cuda,
                disable_tqdm=True,
                seed=42,
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return int(trainer.state.num_input_tokens_seen), seconds


def main() -> None:
    data_file, steps, batch, packing = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    from tunegate.models import ensure_tiny_llama

    with open(data_file) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    tokens, seconds = train_plain(str(ensure_tiny_llama()), rows, steps, batch, packing == "1", 512)
    print(json.dumps({"tokens": tokens, "seconds": seconds}))


if __name__ == "__main__":
    main()
