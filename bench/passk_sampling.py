"""pass@k sampling throughput: tunegate's batched generation against the loop a practitioner
writes, same model, same prompts, same sampling settings, in one run.

- baseline: for each prompt, one `model.generate(do_sample=True, num_return_sequences=n)` call
  (the usual pass@k loop, as human-eval's and lm-evaluation-harness's samplers do per prompt);
- tunegate: `TransformersBackend.generate` — prompts sorted by length, several prompts ×
  `num_return_sequences=n` per forward pass (`max_batch_sequences` rows);
- for the record, one `generate` call per sample (the baseline of an earlier version of this
  benchmark, a strawman: nobody samples pass@k that way).

The sides alternate for ROUNDS rounds; medians of samples/s are compared with the baseline.

- `--model tiny-llama` (the default): the first PROMPTS prompts of the metadata example's control
  arm, raw; all three sides.
- `--model smollm2-135m`: the first PROMPTS HumanEval prompts of the real-model example's control
  arm, rendered through the chat template (as `model.prompt_format: chat` generates), the same
  rendered text on every side; both stop at the end-of-turn token. The one-sample-at-a-time side
  is left out (`--strawman` adds it): on a CPU it alone would take most of the budget.

    python bench/passk_sampling.py [--rounds 3] [--prompts 16] [--n 10] [--max-new-tokens 48]
    python bench/passk_sampling.py --model smollm2-135m --rounds 3 --prompts 3 \
        --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmodels import (
    BENCH_MODELS,
    MODELS,
    REAL_MODEL,
    LoadLog,
    cpu_model,
    wait_for_idle,
    write_real_example,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=MODELS, default="tiny-llama")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument(
        "--batch-sequences",
        type=int,
        default=None,
        help="tunegate's rows per forward pass (default: 160 on tiny-llama, else the ladder's 64).",
    )
    ap.add_argument(
        "--strawman",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Also time one generate call per sample (default: on tiny-llama only).",
    )
    ap.add_argument("--no-wait", action="store_true", help="Do not wait for a load below 1.5.")
    args = ap.parse_args()
    bm = BENCH_MODELS[args.model]
    tiny = bm.name == "tiny-llama"
    batch_sequences = args.batch_sequences or (160 if tiny else 64)
    strawman = tiny if args.strawman is None else args.strawman

    import torch
    from transformers import set_seed

    from tunegate.data.items import load_items
    from tunegate.generate import Sampling, TransformersBackend, load_for_inference
    from tunegate.plan import QuantizationConfig

    model_dir = bm.model_dir()
    quant = QuantizationConfig()
    model, tokenizer = load_for_inference(model_dir, model_dir, quant)
    if bm.name == REAL_MODEL:
        with tempfile.TemporaryDirectory() as tmp:
            write_real_example(Path(tmp))
            items = load_items(Path(tmp) / "data" / "control.jsonl")
    else:
        items = load_items(REPO / "examples" / "metadata-experiment" / "data" / "control.jsonl")
    prompts = [bm.render_text(tokenizer, i.prompt) for i in items[: args.prompts]]
    sampling = Sampling(
        n=args.n, temperature=0.8, top_p=0.95, seed=0, max_new_tokens=args.max_new_tokens
    )
    backend = TransformersBackend(
        model, tokenizer, name=bm.name, max_batch_sequences=batch_sequences
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
    strawman_name = "one sample at a time (old strawman)"
    sides: dict[str, Callable[[], int]] = {baseline: per_prompt, "tunegate batched": batched}
    if strawman:
        sides[strawman_name] = one_at_a_time
    rates: dict[str, list[float]] = {name: [] for name in sides}
    if tiny:
        batched()  # warm-up: first-call allocations, not throughput
    else:  # the same warm-up for both sides, short: a full batched pass takes minutes here
        warm = Sampling(n=2, temperature=0.8, top_p=0.95, seed=0, max_new_tokens=8)
        backend.generate(prompts[:2], warm)
    load_at_start = wait_for_idle() if not args.no_wait else os.getloadavg()[0]
    loads = LoadLog()
    for k in range(args.rounds):
        # The sides alternate; off tiny-llama, which goes first alternates with the rounds.
        order = list(sides.items()) if tiny or k % 2 == 0 else list(reversed(sides.items()))
        for name, run in order:
            loads.sample()
            started = time.perf_counter()
            samples = run()
            rates[name].append(samples / (time.perf_counter() - started))
            print(f"{name:34s} {rates[name][-1]:8.2f} samples/s", flush=True)
    base = statistics.median(rates[baseline])
    model_note = (
        "tiny-llama (2 layers, 4-bit nf4 on CPU, as tunegate's default)"
        if tiny
        else f"{bm.name} (SmolLM2-135M-Instruct, 4-bit nf4 on CPU, as tunegate's default; "
        "prompts chat-rendered)"
    )
    report: dict[str, Any] = {
        "machine": f"{cpu_model()}, {platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "model": model_note,
        "prompts": len(prompts),
        "n": args.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_new_tokens": args.max_new_tokens,
        "batch_sequences": batch_sequences,
        "rates": {name: {"median": statistics.median(v), "runs": v} for name, v in rates.items()},
        "baseline": baseline,
        "ratio_batched_vs_baseline": statistics.median(rates["tunegate batched"]) / base,
        "load_average_1min": loads.summary(load_at_start),
    }
    if strawman:
        report["ratio_batched_vs_one_at_a_time"] = statistics.median(
            rates["tunegate batched"]
        ) / statistics.median(rates[strawman_name])
    print(json.dumps(report, indent=2))
    name = "passk_sampling" if tiny else "passk_sampling-smollm2"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{name}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
