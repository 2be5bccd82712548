"""Training throughput: `tunegate train` against a plain TRL SFTTrainer script, same run.

Same model (tiny-llama, 4-bit nf4 + LoRA r=16 on all linear layers), same data (the five example
scenarios' control items of at most 512 tokens: code of mixed lengths, as in a real run), same
steps, batch and learning rate. tokens/s counts real (non-padding) tokens over `trainer.train()`
alone, so start-up is excluded on both sides; tunegate's checkpoints (every 25 steps) and metric
logging are inside it, the plain script saves nothing. The two alternate, REPS times each, and
the medians are compared; then both again with packing on.

    python bench/train_throughput.py [--reps 5] [--steps 40] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TUNEGATE = str(Path(sys.executable).with_name("tunegate"))


def tunegate_run(data: Path, work: Path, steps: int, batch: int, packing: bool, k: int) -> dict:
    name = f"run{k}-{int(packing)}"
    env = {
        **os.environ,
        "DATASET_PATH": str(data),
        "MAX_STEPS": str(steps),
        "BATCH_SIZE": str(batch),
        "MODEL_NAME": name,
        "OUTPUT_DIR": str(work),
        "LEARNING_RATE": "3e-3",
        "PACKING": "true" if packing else "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }
    subprocess.run([TUNEGATE, "train", "--json"], env=env, check=True, capture_output=True)
    result = json.loads((work / name / "result.json").read_text())
    return {"tokens": result["train_tokens"], "seconds": result["train_seconds"]}


def plain_run(data: Path, steps: int, batch: int, packing: bool) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "plain_trl_train.py"),
            str(data),
            str(steps),
            str(batch),
            "1" if packing else "0",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from tunegate.data.items import load_items, write_items
    from tunegate.data.scenarios import write_example
    from tunegate.models import ensure_tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_llama())
    report: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "steps": args.steps,
        "batch": args.batch,
        "reps": args.reps,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_example(work / "example")
        control = load_items(work / "example" / "data" / "control.jsonl")
        fitting = [i for i in control if len(tokenizer(i.prompt + i.completion)["input_ids"]) < 512]
        data = work / "train.jsonl"
        write_items(data, fitting)
        report["items"] = len(fitting)
        for packing in (False, True):
            runs: dict[str, list[float]] = {"tunegate": [], "plain_trl": []}
            for k in range(args.reps):
                for tool in ("tunegate", "plain_trl") if k % 2 == 0 else ("plain_trl", "tunegate"):
                    r = (
                        tunegate_run(data, work, args.steps, args.batch, packing, k)
                        if tool == "tunegate"
                        else plain_run(data, args.steps, args.batch, packing)
                    )
                    runs[tool].append(r["tokens"] / r["seconds"])
                    print(
                        f"packing={packing} {tool:9s} {r['tokens']:6d} tokens "
                        f"{r['seconds']:6.2f} s {runs[tool][-1]:8.0f} tokens/s",
                        flush=True,
                    )
            key = "packed" if packing else "padded"
            report[key] = {
                tool: {"median": statistics.median(v), "runs": v} for tool, v in runs.items()
            }
        pad, packed = report["padded"], report["packed"]
        report["ratio_tunegate_vs_plain"] = pad["tunegate"]["median"] / pad["plain_trl"]["median"]
        report["ratio_tunegate_packed_vs_plain"] = (
            packed["tunegate"]["median"] / pad["plain_trl"]["median"]
        )
        report["ratio_packed_vs_plain_packed"] = (
            packed["tunegate"]["median"] / packed["plain_trl"]["median"]
        )
    print(json.dumps(report, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "train_throughput.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
