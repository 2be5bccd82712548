"""Baseline for bench/ladder_timing.py: stage 1's work as a plain transformers+peft+trl script.

Both arms: load the model in 4-bit nf4, LoRA on all linear layers, 10 steps at batch 1 on the
original plan's 5 samples, save the adapter, reload it from disk, generate once. No gates, no
tracking, no run directory — the least a hand-written script would do.

- `--model tiny-llama` (the default): raw prompts, learning rate 3e-3, 32 new tokens.
- `--model smollm2-135m`: as the real-model plan's stage 1 — prompts rendered through the chat
  template (one user turn), completion-only loss (SFTTrainer's default for prompt-completion
  data), learning rate 5e-4 with its cosine schedule and 2 warm-up steps, LoRA dropout 0.05,
  and one greedy generation of at most 64 new tokens (the model's generation config stops it
  at the end of turn).

    python bench/plain_trl_stage1.py [--model tiny-llama|smollm2-135m]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    started = time.perf_counter()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-llama")
    args = ap.parse_args()
    real = args.model != "tiny-llama"
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from tunegate.data.micro import SEED_MICRO_SAMPLES
    from tunegate.models import resolve_model

    model_dir = resolve_model(args.model)
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )

    def rendered(prompt: str) -> str:
        """The prompt as the model is asked: raw, or one user turn of its chat template."""
        if not real:
            return prompt
        messages = [{"role": "user", "content": prompt}]
        return str(
            template.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )

    template = AutoTokenizer.from_pretrained(model_dir)
    data = Dataset.from_list(
        [{"prompt": rendered(p + "\n"), "completion": c + "\n"} for p, c in SEED_MICRO_SAMPLES]
    )
    extra: dict[str, Any] = (
        {"lr_scheduler_type": "cosine", "warmup_steps": 2, "max_length": 1024} if real else {}
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
                    learning_rate=5e-4 if real else 3e-3,
                    logging_steps=1,
                    save_strategy="no",
                    report_to=[],
                    bf16=False,
                    gradient_checkpointing=False,
                    use_cpu=True,
                    disable_tqdm=True,
                    seed=42,
                    **extra,
                ),
                train_dataset=data,
                processing_class=tokenizer,
                peft_config=LoraConfig(
                    r=16,
                    lora_alpha=32,
                    target_modules="all-linear",
                    task_type="CAUSAL_LM",
                    **({"lora_dropout": 0.05} if real else {}),
                ),
            )
            trainer.train()
            trainer.save_model(f"{out}/{arm}/adapter")
            base = AutoModelForCausalLM.from_pretrained(
                model_dir, quantization_config=quant, dtype=torch.float32
            )
            reloaded = PeftModel.from_pretrained(base, f"{out}/{arm}/adapter")
            enc = tokenizer(rendered(SEED_MICRO_SAMPLES[0][0] + "\n"), return_tensors="pt")
            reloaded.generate(
                **enc,
                max_new_tokens=64 if real else 32,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
    print(f"{time.perf_counter() - started:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
