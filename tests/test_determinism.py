"""The same numbers twice on one machine, and a record of what made them.

Two climbs of the same plan in two directories give identical figures; the run records which CPU,
kernels, BLAS, oneDNN ISA and thread count made them (state, MLflow params, report); every 4-bit
layer stays on one bitsandbytes CPU path, whatever ran before it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLE, run_cli

from tunegate.determinism import MachineRecord, machine_record, one_cpu_path, pin


def _climb(root: Path) -> dict:
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("runs"))
    result = run_cli("run", str(root / "tunegate.yaml"), "--until", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((root / "runs" / "metadata-experiment" / "state.json").read_text())


def test_the_same_stage_twice_gives_identical_figures_and_records_the_machine(
    micro_climb: Path, tmp_path: Path
) -> None:
    first = json.loads((micro_climb.parent / "runs/metadata-experiment/state.json").read_text())
    second = _climb(tmp_path / "b")
    for arm in ("control", "experiment"):
        a = first["stages"]["micro"]["arms"][arm]["train"]
        b = second["stages"]["micro"]["arms"][arm]["train"]
        assert a["losses"] == b["losses"]  # every step, to the last digit
        assert (a["eval_loss_before"], a["eval_loss_after"]) == (
            b["eval_loss_before"],
            b["eval_loss_after"],
        )
    gates = [g["evidence"] for g in first["stages"]["micro"]["gates"]]
    assert gates == [g["evidence"] for g in second["stages"]["micro"]["gates"]]

    machine = first["machine"]
    assert machine == second["machine"]
    assert machine["threads"] >= 1 and machine["deterministic"] is True
    assert machine["blas"] and machine["onednn"] and machine["cpu"]
    trained = first["stages"]["micro"]["arms"]["control"]["train"]["machine"]
    assert trained["torch_cpu_capability"] == machine["torch_cpu_capability"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=first["tracking_uri"])
    ladder = client.get_run(first["mlflow_parent"]).data.params
    arm = client.get_run(first["stages"]["micro"]["arms"]["control"]["mlflow_run"]).data.params
    for params in (ladder, arm):
        assert params["machine.torch_cpu_capability"] == machine["torch_cpu_capability"]
        assert params["machine.threads"] == str(machine["threads"])


def test_the_record_names_the_kernels_and_their_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    record = machine_record()
    assert record.env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    params = record.params()
    assert params["machine.env.ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert set(params) >= {"machine.cpu", "machine.blas", "machine.onednn", "machine.threads"}
    assert MachineRecord.from_json(record.to_json()) == record  # what state.json holds
    older = MachineRecord.from_json({"cpu": "Some CPU", "threads": 4, "new_field": 1})
    assert older.cpu == "Some CPU" and older.blas == "unknown" and older.threads == 4
    assert record.cpu in record.summary()


def test_every_4bit_layer_keeps_one_cpu_path_through_an_evaluation() -> None:
    import torch

    from tunegate.models import ensure_tiny_llama
    from tunegate.plan import QuantizationConfig
    from tunegate.train.qlora import load_base

    pin()
    model = load_base(ensure_tiny_llama(), QuantizationConfig(method="qlora"))
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    assert len(layers) == 14 and not any(m.support_avx512bf16_for_cpu for m in layers)
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 5, 9, 12]]))
    # bitsandbytes repacks a layer for its bf16 kernel on the first eval forward where the CPU
    # has AVX-512 BF16; kept off, no layer changed its format.
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    assert one_cpu_path(model) == 0  # already done at load
