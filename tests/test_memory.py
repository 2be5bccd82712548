"""`tunegate memory`: parameter counts against transformers itself, the estimate against a
measured H100 run and published figures, and the command's verdicts and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from tunegate.errors import UserError
from tunegate.train.memory import GIB, TrainingShape, estimate, load_shape, shipped_models

MEASURED = REPO / "bench" / "results" / "gpu_qlora_h100.json"


@pytest.mark.parametrize("model", sorted(shipped_models()))
def test_parameter_counts_equal_the_instantiated_model(model: str) -> None:
    """Build each shipped config on the meta device with transformers and count."""
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    config = json.loads(shipped_models()[model].read_text())
    hf_config = CONFIG_MAPPING[config.pop("model_type")](**config)
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(hf_config)
    shape = load_shape(model)
    assert shape.total_params == sum(p.numel() for p in net.parameters())
    linear = sum(
        m.weight.numel()
        for name, m in net.named_modules()
        if isinstance(m, torch.nn.Linear) and "lm_head" not in name
    )
    assert shape.linear_params == linear


def test_estimate_is_within_ten_percent_of_the_h100_measurements() -> None:
    """bench/gpu_qlora.py on an H100 (Llama-3-8B and Qwen2.5-7B shapes, tunegate's trainer):
    the allocator's peak, with and without checkpointing, dropout and peft's upcast."""
    report = json.loads(MEASURED.read_text())
    checked = 0
    for name, m in report["measurements"].items():
        if "peak_memory_gib" not in m:
            continue
        model = report["model"] if not name.startswith("second") else "Qwen/Qwen2.5-7B"
        shape = TrainingShape(
            batch_size=m["batch_size"],
            max_length=m["max_length"],
            lora_r=m["lora_r"],
            lora_dropout=m["lora_dropout"],
            gradient_checkpointing=m["gradient_checkpointing"],
            upcast_frozen=m["upcast_frozen"],
        )
        est = estimate(load_shape(model), shape)
        assert est.allocated_peak / GIB == pytest.approx(m["peak_memory_gib"], rel=0.10), name
        assert est.allocated_peak / GIB >= m["peak_memory_gib"] * 0.98, name  # errs high
        checked += 1
    assert checked >= 8
    load = report["measurements"]["load_4bit"]["allocated_gib"]
    llama = estimate(load_shape("meta-llama/Meta-Llama-3-8B"), TrainingShape())
    assert llama.load / GIB == pytest.approx(load, rel=0.01)


def test_published_figures() -> None:
    llama3 = load_shape("meta-llama/Meta-Llama-3-8B")
    # The original plan: "Loaded in 4-bit: 5.2 GB VRAM".
    assert estimate(llama3, TrainingShape()).load / GIB == pytest.approx(5.2, rel=0.05)
    # torchtune: Llama-3.1-8B QLoRA, batch 2, seq 2048, peak 7.4 GiB on an RTX 4090 (r=8,
    # no dropout, activation checkpointing, chunked loss).
    tt = TrainingShape(batch_size=2, max_length=2048, lora_r=8, lora_dropout=0.0)
    est = estimate(load_shape("meta-llama/Llama-3.1-8B"), tt)
    assert est.allocated_peak / GIB == pytest.approx(7.4, rel=0.05)
    assert est.fits  # on the original plan's 12 GiB RTX 4070 Ti


def test_memory_command_verdicts(tmp_path: Path) -> None:
    fits = run_cli("memory", "meta-llama/Meta-Llama-3-8B", "--batch-size", "1")
    assert fits.returncode == 0 and "fits in 12 GiB" in fits.stdout
    too_big = run_cli(
        "memory", "Meta-Llama-3-8B", "--batch-size", "2", "--max-length", "2048",
        "--no-gradient-checkpointing",
    )  # fmt: skip
    assert too_big.returncode == 1 and "does not fit in 12 GiB" in too_big.stdout
    assert "turn gradient_checkpointing on" in too_big.stdout
    as_json = run_cli("memory", "qwen/qwen2.5-7b", "--vram", "24", "--json")
    data = json.loads(as_json.stdout)
    assert data["fits"] and data["vram_gib"] == 24 and data["training"]["method"] == "qlora"

    local = tmp_path / "my-model"
    local.mkdir()
    local_config = json.loads(shipped_models()["mistralai/Mistral-7B-v0.3"].read_text())
    (local / "config.json").write_text(json.dumps(local_config))
    by_dir = run_cli("memory", str(local), "--json")
    assert json.loads(by_dir.stdout)["load_gib"] == pytest.approx(
        estimate(load_shape("mistralai/Mistral-7B-v0.3"), TrainingShape()).load / GIB
    )


def test_memory_of_a_plan_uses_its_settings(example: Path) -> None:
    proc = run_cli("memory", str(example), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["model"] == "tiny-llama" and data["training"]["batch_size"] == 4


def test_bad_model_arguments(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a shipped config"):
        load_shape("no-such/model")
    broken = tmp_path / "config.json"
    broken.write_text('{\n  "hidden_size": 4096,\n  oops\n}')
    proc = run_cli("memory", str(broken))
    assert proc.returncode == 2 and f"{broken}:3:" in proc.stderr
    missing = tmp_path / "m2" / "config.json"
    missing.parent.mkdir()
    missing.write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4}))
    proc = run_cli("memory", str(missing.parent))
    assert proc.returncode == 2 and f"{missing}: no 'intermediate_size'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_doctor_says_whether_the_plans_model_fits(example: Path) -> None:
    from tunegate.doctor import run_checks
    from tunegate.plan import load_plan

    checks = {c.name: c for c in run_checks(load_plan(example))}
    assert checks["gpu memory"].status == "PASS"  # tiny-llama

    model = example.parent / "llama3"
    model.mkdir()
    config = json.loads(shipped_models()["meta-llama/Meta-Llama-3-8B"].read_text())
    (model / "config.json").write_text(json.dumps(config))
    text = example.read_text().replace("name: tiny-llama", f"name: {model}")
    text = text.replace("max_length: 256", "max_length: 4096")
    assert f"name: {model}" in text and "max_length: 4096" in text
    example.write_text(text + "\n")
    memory = {c.name: c for c in run_checks(load_plan(example))}["gpu memory"]
    assert memory.status == "WARN"  # no GPU here: judged against the original plan's 12 GiB card
    assert "of 12.0 GiB on RTX 4070 Ti" in memory.value and "batch_size" in memory.fix
