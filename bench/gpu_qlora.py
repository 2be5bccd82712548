"""QLoRA on a real GPU: a model shaped like a shipped config, random weights, tunegate's trainer.

Memory and speed do not depend on the weights' values, so a Llama-3-8B-shaped model built from
its config.json (no download) measures what the real one would: the 4-bit load (the original plan's
"Loaded in 4-bit: 5.2 GB VRAM"), the training peak against `tunegate memory`'s estimate, tokens/s,
and the out-of-memory guard under a capped memory fraction.

    python bench/gpu_qlora.py --model meta-llama/Meta-Llama-3-8B --out gpu.json
    python bench/gpu_qlora.py --shrink --out /tmp/gpu.json     # CPU smoke test of this script

Each measurement is written to --out as soon as it is done; one that fails records its error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_random_model(model: str, target: Path, shrink: bool) -> dict:
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM, AutoTokenizer

    from tunegate.models import ensure_tiny_llama
    from tunegate.train.memory import shipped_models

    config = json.loads(shipped_models()[model].read_text())
    if shrink:  # CPU smoke test: same code path, a model that fits in seconds
        config.update(
            num_hidden_layers=2,
            hidden_size=256,
            intermediate_size=512,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    config = CONFIG_MAPPING[config.pop("model_type")](**config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    with torch.device(device):
        net = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    net.save_pretrained(target)
    del net
    if device == "cuda":
        torch.cuda.empty_cache()
    # Any tokenizer whose ids fit the vocabulary will do: tiny-llama's (512 ids) is built locally.
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_llama())
    tokenizer.save_pretrained(target)
    return {"build_seconds": time.perf_counter() - started}


def items(n: int, tokens: int, tokenizer) -> list:  # type: ignore[no-untyped-def]
    from tunegate.data.items import Item

    rng = random.Random(0)
    words = ["def", "return", "value", "items", "for", "in", "range", "(", ")", ":", "x", "+", "1"]
    out = []
    for k in range(n):
        text = " ".join(rng.choice(words) for _ in range(tokens))
        ids = tokenizer(text)["input_ids"][: tokens - 2]
        body = tokenizer.decode(ids)
        cut = len(body) // 4
        out.append(Item(id=f"g{k}", scenario="gpu", prompt=body[:cut], completion=body[cut:]))
    return out


def measure_load(model_dir: Path) -> dict:
    import gc

    import torch

    gc.collect()

    from tunegate.plan import QuantizationConfig
    from tunegate.train.qlora import count_linear4bit, load_base

    started = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
    model = load_base(model_dir, QuantizationConfig())
    out = {
        "load_seconds": time.perf_counter() - started,
        "linear4bit_layers": count_linear4bit(model),
    }
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        out |= {
            "allocated_gib": (torch.cuda.memory_allocated() - before) / 2**30,
            "device_used_gib": (total - free) / 2**30,  # what nvidia-smi shows: context included
        }
    del model
    gc.collect()
    return out


def measure_train(
    model_dir: Path,
    work: Path,
    model: str,
    *,
    batch: int,
    length: int,
    steps: int,
    checkpointing: bool,
    upcast: bool,
    r: int = 16,
    dropout: float = 0.05,
) -> dict:
    import gc

    import torch

    gc.collect()  # the previous measurement's model sits in reference cycles until collected
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    from transformers import AutoTokenizer

    from tunegate.plan import LoraSettings, QuantizationConfig, TrainingConfig
    from tunegate.train.memory import TrainingShape, estimate, load_shape
    from tunegate.train.qlora import train_arm

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = items(batch * steps, length, tokenizer)
    quant = QuantizationConfig(upcast_frozen=upcast)
    lora = LoraSettings(r=r, alpha=2 * r, dropout=dropout)
    training = TrainingConfig(
        batch_size=batch,
        max_steps=steps,
        save_steps=10_000,
        gradient_checkpointing=checkpointing,
        learning_rate=1e-4,
    )
    logged: list = []
    out_dir = work / f"b{batch}-s{length}-ck{int(checkpointing)}-up{int(upcast)}-r{r}-d{dropout}"
    shutil.rmtree(out_dir, ignore_errors=True)
    res = train_arm(
        model_dir=model_dir,
        train_items=data,
        val_items=[],
        out_dir=out_dir,
        training=training,
        quant=quant,
        lora=lora,
        max_length=length,
        seed=0,
        metric_sink=logged.extend,
    )
    per_step = [m["tokens_per_second"] for m, _ in logged if "tokens_per_second" in m]
    shape = TrainingShape(
        batch_size=batch,
        max_length=length,
        lora_r=r,
        lora_dropout=dropout,
        gradient_checkpointing=checkpointing,
        upcast_frozen=upcast,
    )
    est = estimate(load_shape(model), shape).to_json()
    out = {
        "batch_size": batch,
        "max_length": length,
        "steps": res.steps,
        "lora_r": r,
        "lora_dropout": dropout,
        "gradient_checkpointing": checkpointing,
        "upcast_frozen": upcast,
        "train_tokens": res.train_tokens,
        "train_seconds": res.train_seconds,
        "tokens_per_second_overall": res.tokens_per_second,
        "tokens_per_second_median_step": statistics.median(per_step) if per_step else None,
        "losses": res.losses,
        "load_memory_gib": res.load_memory_gib,
        "peak_memory_gib": res.peak_memory_gib,
        "estimate": est,
    }
    if torch.cuda.is_available():
        out["reserved_peak_gib"] = torch.cuda.max_memory_reserved() / 2**30
        torch.cuda.empty_cache()
    return out


def measure_oom(model_dir: Path, work: Path, model: str, cap_gib: float) -> dict:
    import torch

    from tunegate.train.watch import TrainingStopped

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA"}
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    torch.cuda.set_per_process_memory_fraction(cap_gib / total)
    try:
        measure_train(
            model_dir,
            work,
            model,
            batch=4,
            length=2048,
            steps=2,
            checkpointing=False,
            upcast=True,
            dropout=0.05,
        )
        return {"caught": False, "message": "trained without running out of memory"}
    except TrainingStopped as err:
        return {"caught": True, "message": str(err)}
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="meta-llama/Meta-Llama-3-8B")
    ap.add_argument("--second-model", default="Qwen/Qwen2.5-7B")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tunegate-gpu"))
    ap.add_argument("--shrink", action="store_true")
    ap.add_argument("--budget-s", type=float, default=420, help="skip what would start later")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    import torch

    started = time.perf_counter()
    report: dict = {
        "model": args.model,
        "shrunk": args.shrink,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "measurements": {},
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        report |= {"gpu": props.name, "gpu_total_gib": props.total_memory / 2**30}
    from tunegate.train.qlora import versions

    report["versions"] = versions()

    def save() -> None:
        args.out.write_text(json.dumps(report, indent=2))

    model_dir = args.work / "model"
    steps = args.steps
    m, second = args.model, args.second_model
    second_dir = args.work / "model2"

    def train(model_dir: Path = model_dir, model: str = m, **kw):  # type: ignore[no-untyped-def]
        return lambda: measure_train(model_dir, args.work, model, steps=steps, **kw)

    plan = [
        ("build", lambda: build_random_model(m, model_dir, args.shrink)),
        ("load_4bit", lambda: measure_load(model_dir)),
        ("train_b2_s2048_ckpt", train(batch=2, length=2048, checkpointing=True, upcast=False)),
        (
            "train_b2_s2048_ckpt_peft_upcast",
            train(batch=2, length=2048, checkpointing=True, upcast=True),
        ),
        ("train_b2_s2048_no_ckpt", train(batch=2, length=2048, checkpointing=False, upcast=False)),
        (
            "train_b2_s2048_no_ckpt_dropout0",
            train(batch=2, length=2048, checkpointing=False, upcast=False, dropout=0.0),
        ),
        ("train_b1_s512_ckpt", train(batch=1, length=512, checkpointing=True, upcast=False)),
        (
            "train_torchtune_like_r8_b2_s2048",
            train(batch=2, length=2048, checkpointing=True, upcast=False, r=8, dropout=0.0),
        ),
        ("train_b4_s1024_ckpt", train(batch=4, length=1024, checkpointing=True, upcast=False)),
        ("oom_guard_cap_12gib", lambda: measure_oom(model_dir, args.work, m, 12.0)),
        ("build_second", lambda: build_random_model(second, second_dir, args.shrink)),
        ("second_load_4bit", lambda: measure_load(second_dir)),
        (
            "second_train_b2_s2048_ckpt",
            train(second_dir, second, batch=2, length=2048, checkpointing=True, upcast=False),
        ),
        (
            "second_train_b2_s2048_no_ckpt",
            train(second_dir, second, batch=2, length=2048, checkpointing=False, upcast=False),
        ),
    ]
    for name, run in plan:
        if time.perf_counter() - started > args.budget_s:
            report["measurements"][name] = {"skipped": "time budget"}
            continue
        t0 = time.perf_counter()
        try:
            report["measurements"][name] = run()
        except Exception as err:  # record and go on: one failure must not lose the others
            report["measurements"][name] = {
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()[-3000:],
            }
        report["measurements"][name]["wall_seconds"] = time.perf_counter() - t0
        print(name, json.dumps(report["measurements"][name])[:600], flush=True)
        save()
    report["total_seconds"] = time.perf_counter() - started
    save()
    shutil.rmtree(args.work, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
