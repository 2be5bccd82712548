"""Generation: an arm's model (base + adapter, reloaded from disk) on a list of prompts.

Greedy and batched with left padding. Reloading from disk rather than reusing the trainer's model
is deliberate: it proves the saved adapter is complete (the seed's "model saves to disk" and
"inference works" checks are one act).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunegate.plan import QuantizationConfig


def load_for_inference(base_dir: Path, adapter_dir: Path, quant: QuantizationConfig) -> Any:
    from peft import PeftModel
    from transformers import AutoTokenizer

    from tunegate.train.qlora import load_base

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    tokenizer.padding_side = "left"  # decoder-only batches pad on the left
    if quant.method == "full":
        model = load_base(adapter_dir, quant)  # full fine-tuning saved the whole model there
    else:
        model = PeftModel.from_pretrained(load_base(base_dir, quant), adapter_dir)
    model.eval()
    return model, tokenizer


def generate(
    model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    import torch

    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        enc = tokenizer(batch, return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        outputs += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return outputs
