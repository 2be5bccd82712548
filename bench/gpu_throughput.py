"""Training throughput on a GPU: tunegate's trainer against a plain TRL script, padded and packed.

On tiny-llama (hidden 128) attention dominates the compute, so packing 512-token rows costs more
than the padding it saves; on a real model the MLP and the vocabulary dominate and packing pays.
This runs the comparison on a Llama-3.2-1B-shaped model (random bf16 weights, 4-bit nf4 + LoRA
r=16 on all linear layers) on CUDA, in one process: `train_arm` (what `tunegate train` and the
ladder call; MLflow is not installed on the GPU machine, so no metric sink) and the plain script's
`SFTTrainer`, alternating, REPS times each, for padded and packed batches. Data: the five example
scenarios' control items of at most 1024 tokens. tokens/s counts real tokens over train() alone.

    python bench/gpu_throughput.py --out gpu_throughput.json [--reps 5] [--steps 30]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def plain_trl(model_dir: Path, rows: list[dict], steps: int, batch: int, packing: bool) -> float:
    from plain_trl_train import train_plain

    tokens, seconds = train_plain(str(model_dir), rows, steps, batch, packing, 1024)
    return tokens / seconds


def tunegate_trainer(
    model_dir: Path, items: list, work: Path, steps: int, batch: int, packing: bool, k: int
) -> float:
    from tunegate.plan import LoraSettings, QuantizationConfig, TrainingConfig
    from tunegate.train.qlora import train_arm

    res = train_arm(
        model_dir=model_dir,
        train_items=items,
        val_items=[],
        out_dir=work / f"tg-{int(packing)}-{k}",
        training=TrainingConfig(
            max_steps=steps, batch_size=batch, learning_rate=1e-4, packing=packing
        ),
        quant=QuantizationConfig(),
        lora=LoraSettings(),
        max_length=1024,
        seed=42,
    )
    return res.tokens_per_second


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="meta-llama/Llama-3.2-1B")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--shrink", action="store_true", help="CPU smoke test of this script")
    ap.add_argument("--budget-s", type=float, default=300)
    args = ap.parse_args()
    import torch
    from gpu_qlora import build_random_model
    from transformers import AutoTokenizer

    from tunegate.data.items import load_items
    from tunegate.data.scenarios import write_example

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tg-gpu-tp-"))
    model_dir = work / "model"
    build_random_model(args.model, model_dir, args.shrink)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    write_example(work / "example")
    control = load_items(work / "example" / "data" / "control.jsonl")
    items = [i for i in control if len(tokenizer(i.prompt + i.completion)["input_ids"]) < 1024]
    rows = [{"prompt": i.prompt, "completion": i.completion} for i in items]
    report: dict = {
        "model": args.model,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "items": len(items),
        "steps": args.steps,
        "batch": args.batch,
        "reps": args.reps,
    }
    for packing in (False, True):
        runs: dict[str, list[float]] = {"tunegate": [], "plain_trl": []}
        for k in range(args.reps):
            if time.perf_counter() - started > args.budget_s:
                break
            order = ("tunegate", "plain_trl") if k % 2 == 0 else ("plain_trl", "tunegate")
            for tool in order:
                if tool == "tunegate":
                    rate = tunegate_trainer(
                        model_dir, items, work, args.steps, args.batch, packing, k
                    )
                else:
                    rate = plain_trl(model_dir, rows, args.steps, args.batch, packing)
                runs[tool].append(rate)
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                print(f"packing={packing} {tool:9s} {rate:9.0f} tokens/s", flush=True)
        report["packed" if packing else "padded"] = {
            tool: {"median": statistics.median(v), "runs": v} for tool, v in runs.items() if v
        }
        args.out.write_text(json.dumps(report, indent=2))
    pad, packed = report["padded"], report.get("packed", {})
    report["ratio_tunegate_vs_plain"] = pad["tunegate"]["median"] / pad["plain_trl"]["median"]
    if packed:
        report["ratio_tunegate_packed_vs_plain_padded"] = (
            packed["tunegate"]["median"] / pad["plain_trl"]["median"]
        )
        report["ratio_tunegate_packed_vs_plain_packed"] = (
            packed["tunegate"]["median"] / packed["plain_trl"]["median"]
        )
    report["total_seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k.startswith("ratio")}, indent=1))


if __name__ == "__main__":
    main()
