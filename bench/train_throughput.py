"""Training throughput: `tunegate train` against a plain TRL SFTTrainer script, same run.

Same model (4-bit nf4 + LoRA r=16 on all linear layers), same data, same steps, batch, learning
rate and max length. tokens/s counts real (non-padding) tokens over `trainer.train()` alone, so
start-up is excluded on both sides; tunegate's checkpoints (every `save_steps`) and metric
logging are inside it, the plain script saves nothing. The two alternate, REPS times each, and
the medians are compared.

- `--model tiny-llama` (the default): the five example scenarios' control items of at most 512
  tokens (code of mixed lengths, as in a real run), learning rate 3e-3; padded, then packed.
- `--model smollm2-135m`: the real-model example's control items (HumanEval) of at most 512
  tokens, prompts rendered through the chat template once, in the data file both sides read;
  completion-only loss on both sides (the assistant turn); tunegate trains with the real-model
  plan's settings (`TUNEGATE_PLAN`: learning rate 5e-4, cosine with 2 warm-up steps, LoRA
  dropout 0.05, max length 1024, gradient checkpointing off), the plain script with the same;
  packing off.

    python bench/train_throughput.py [--model tiny-llama] [--reps 5] [--steps 40] [--batch 4]
    python bench/train_throughput.py --model smollm2-135m --reps 3 --steps 5 --batch 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmodels import (
    BENCH_MODELS,
    MODELS,
    REAL_MODEL,
    BenchModel,
    LoadLog,
    cpu_model,
    run_quiet,
    tunegate_cmd,
    wait_for_idle,
    write_real_example,
)

HERE = Path(__file__).resolve().parent


def tunegate_run(
    bm: BenchModel,
    plan: Path | None,
    data: Path,
    work: Path,
    steps: int,
    batch: int,
    packing: bool,
    k: int,
) -> dict:
    name = f"run{k}-{int(packing)}"
    env = {
        **os.environ,
        "DATASET_PATH": str(data),
        "MAX_STEPS": str(steps),
        "BATCH_SIZE": str(batch),
        "MODEL_NAME": name,
        "OUTPUT_DIR": str(work),
        "LEARNING_RATE": str(bm.learning_rate),
        "PACKING": "true" if packing else "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }
    if plan is not None:  # the plan's model and training settings (prompts are pre-rendered)
        env["TUNEGATE_PLAN"] = str(plan)
    run_quiet([*tunegate_cmd(), "train", "--json"], env)
    result = json.loads((work / name / "result.json").read_text())
    return {"tokens": result["train_tokens"], "seconds": result["train_seconds"]}


def plain_run(bm: BenchModel, data: Path, steps: int, batch: int, packing: bool) -> dict:
    cmd = [
        sys.executable,
        str(HERE / "plain_trl_train.py"),
        str(data),
        str(steps),
        str(batch),
        "1" if packing else "0",
    ]
    if bm.name != "tiny-llama":  # tiny-llama: the command of the earlier results, unchanged
        cmd += [
            "--model",
            bm.name,
            "--lr",
            str(bm.learning_rate),
            "--scheduler",
            "cosine",
            "--warmup",
            "2",
            "--max-length",
            str(bm.max_length),
        ]
        if not bm.gradient_checkpointing:
            cmd.append("--no-gradient-checkpointing")
    out = run_quiet(cmd, dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=MODELS, default="tiny-llama")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--no-wait", action="store_true", help="Do not wait for a load below 1.5.")
    ap.add_argument(
        "--fast-kernels",
        action="store_true",
        help="smollm2-135m: tunegate with `training.deterministic: false` (the fastest kernels, "
        "as the plain script runs), to measure what determinism costs.",
    )
    args = ap.parse_args()

    from tunegate.data.items import load_items, write_items
    from tunegate.data.scenarios import write_example

    bm = BENCH_MODELS[args.model]
    tokenizer = bm.tokenizer()
    report: dict[str, Any] = {
        "model": bm.name,
        "machine": f"{cpu_model()}, {platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "steps": args.steps,
        "batch": args.batch,
        "reps": args.reps,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plan: Path | None = None
        if bm.name == REAL_MODEL:
            plan = write_real_example(work / "example")
            if args.fast_kernels:
                text = plan.read_text()
                plan.write_text(
                    text.replace(
                        "  save_steps: 50\n", "  save_steps: 50\n  deterministic: false\n", 1
                    )
                )
                report["tunegate_deterministic"] = False
            items = bm.render(tokenizer, load_items(work / "example" / "data" / "control.jsonl"))
            report["data"] = (
                "real-model example, control arm, chat-rendered prompts, items under 512 tokens"
            )
            report["settings"] = {
                "learning_rate": bm.learning_rate,
                "lr_scheduler": "cosine",
                "warmup_steps": 2,
                "max_length": bm.max_length,
                "gradient_checkpointing": bm.gradient_checkpointing,
                "lora": "r=16, alpha 32, dropout 0.05, all linear layers",
                "quantization": "nf4, double quant, fp32 compute on CPU",
            }
        else:
            write_example(work / "example")
            items = load_items(work / "example" / "data" / "control.jsonl")
        fitting = [i for i in items if len(tokenizer(i.prompt + i.completion)["input_ids"]) < 512]
        data = work / "train.jsonl"
        write_items(data, fitting)
        report["items"] = len(fitting)
        load_at_start = wait_for_idle() if not args.no_wait else os.getloadavg()[0]
        loads = LoadLog()
        for packing in (False, True) if bm.name == "tiny-llama" else (False,):
            runs: dict[str, list[float]] = {"tunegate": [], "plain_trl": []}
            for k in range(args.reps):
                for tool in ("tunegate", "plain_trl") if k % 2 == 0 else ("plain_trl", "tunegate"):
                    loads.sample()
                    r = (
                        tunegate_run(bm, plan, data, work, args.steps, args.batch, packing, k)
                        if tool == "tunegate"
                        else plain_run(bm, data, args.steps, args.batch, packing)
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
        report["load_average_1min"] = loads.summary(load_at_start)
        pad = report["padded"]
        report["ratio_tunegate_vs_plain"] = pad["tunegate"]["median"] / pad["plain_trl"]["median"]
        if "packed" in report:
            packed = report["packed"]
            report["ratio_tunegate_packed_vs_plain"] = (
                packed["tunegate"]["median"] / pad["plain_trl"]["median"]
            )
            report["ratio_packed_vs_plain_packed"] = (
                packed["tunegate"]["median"] / packed["plain_trl"]["median"]
            )
    print(json.dumps(report, indent=2))
    name = "train_throughput" if bm.name == "tiny-llama" else "train_throughput-smollm2"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{name}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
