"""The real-model example climbs stages 0-2 on SmolLM2-135M-Instruct, as `make demo-real` does.

Slow (about 12 minutes on 2 idle cores, most of it stage 2): `make test-real` runs it, and CI
does not. It asserts what must hold on any
machine: every stage ran on real parts and left real evidence. It does not assert the effect:
a 135M model on 20 training problems may show none, and INVESTIGATE is then the honest answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.real_model]


def test_real_model_climbs_stages_0_to_2(tmp_path: Path) -> None:
    assert run_cli("init", str(tmp_path), "--example", "real-model").returncode == 0
    result = run_cli("run", str(tmp_path / "tunegate.yaml"), "--until", "2", timeout=1800)
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    state = json.loads((tmp_path / "runs" / "real-model" / "state.json").read_text())
    stages = state["stages"]
    # Stages 0 and 1 validate the machinery on the real model: they must pass.
    assert stages["environment"]["verdict"] == "PASS"
    assert stages["micro"]["verdict"] == "PASS", stages["micro"]["gates"]
    for arm in stages["micro"]["arms"].values():
        train = arm["train"]
        assert train["linear4bit_layers"] == 210  # 30 layers x 7 linear, all in 4-bit
        assert train["losses"][-1][1] < train["losses"][0][1]
    # Stage 2 trained both arms on 20 problems and scored 20 held-out ones in each, through the
    # chat template, with code extracted from the answers: a verdict either way, with evidence.
    small = stages["small"]
    assert small["verdict"] in ("PASS", "INVESTIGATE", "FAIL")
    assert {g["name"] for g in small["gates"]} >= {"loss_decreased", "evaluation_ran"}
    assert next(g for g in small["gates"] if g["name"] == "evaluation_ran")["passed"]
    rows = [
        json.loads(line)
        for line in (tmp_path / "runs" / "real-model" / "stage-2-small" / "results.jsonl").open()
    ]
    assert len(rows) == 40 and {r["arm"] for r in rows} == {"control", "experiment"}
    for row in rows:
        assert row["generation"] and "code" in row
        assert row["metrics"]["functional_correctness"]["status"] == "scored", row["errors"]
    assert small["comparison"]["primary"]["n"] == 20
    # What generation took is on record per arm, and stage 1 forecast stage 2 from it.
    for arm in small["arms"].values():
        generation = arm["generation"]
        assert generation["seconds"] > 0
        assert generation["row_steps"] == 384 + 20 * 384  # the smoke answer + 20 test answers
    # Stage 1 (batch 1) forecast stage 2 (batch 4) from its steps' fixed and per-token cost.
    # Within a factor of 2 here, whatever shares the machine; docs/real-model.md has the error
    # on an idle one.
    forecast = state["forecasts"]["micro"]["small"]
    assert forecast["low_hours"] <= forecast["hours"] <= forecast["high_hours"]
    assert "per step and token" in forecast["basis"]
    assert 0.5 < small["seconds"] / (forecast["hours"] * 3600) < 2.0
