"""Baseline for bench/ladder_timing.py: stage 1's work as a plain transformers+peft+trl script.

Both arms: load tiny-llama in 4-bit nf4, LoRA on all linear layers, 10 steps at batch 1 on the
original plan's 5 samples, save the adapter, reload it from disk, generate once. No gates, no
tracking, no run directory — the least a hand-written script would do.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    started = time.perf_counter()
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from tunegate.data.micro import SEED_MICRO_SAMPLES
    from tunegate.models import ensure_tiny_llama

    model_dir = ensure_tiny_llama()
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    data = Dataset.from_list(
        [{"prompt": p + "\n", "completion": c + "\n"} for p, c in SEED_MICRO_SAMPLES]
    )
    with tempfile.TemporaryDirectory() as out:
        for arm in ("control", "experiment"):
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(
                model_dir, quantization_config=quant, dtype=torch.float32
            )
            trainer = SFTTrainer(
                model=model,
                args=SFTConfig(
                    output_dir=f"{out}/{arm}",
                    max_steps=10,
                    per_device_train_batch_size=1,
                    learning_rate=3e-3,
                    logging_steps=1,
                    save_strategy="no",
                    report_to=[],
                    bf16=False,
                    gradient_checkpointing=False,
                    use_cpu=True,
                    disable_tqdm=True,
                    seed=42,
                ),
                train_dataset=data,
                processing_class=tokenizer,
                peft_config=LoraConfig(
                    r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"
                ),
            )
            trainer.train()
            trainer.save_model(f"{out}/{arm}/adapter")
            base = AutoModelForCausalLM.from_pretrained(
                model_dir, quantization_config=quant, dtype=torch.float32
            )
            reloaded = PeftModel.from_pretrained(base, f"{out}/{arm}/adapter")
            enc = tokenizer(SEED_MICRO_SAMPLES[0][0] + "\n", return_tensors="pt")
            reloaded.generate(
                **enc, max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
    print(f"{time.perf_counter() - started:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
