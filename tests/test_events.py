"""Events and their sinks: what the console prints and what tools read, from the same event."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from tunegate.events import ArmTrained, Events, GateDecided, Notice, event_json
from tunegate.events.console import ConsoleSink
from tunegate.events.jsonl import JsonLinesSink
from tunegate.gates import GateResult
from tunegate.state import ArmRecord, StageRecord
from tunegate.train.qlora import TrainResult


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, color_system=None), out


def test_every_sink_gets_every_event_in_order() -> None:
    console, out = _console()
    lines = io.StringIO()
    events = Events([ConsoleSink(console), JsonLinesSink(lines)])
    events.say("stage 0 (micro) is FAIL. Fix it.", "error", "Stage 1 (again) not started:")
    events.emit(Notice("[bold]not markup[/]"))
    assert out.getvalue().splitlines() == [
        "Stage 1 (again) not started: stage 0 (micro) is FAIL. Fix it.",
        "[bold]not markup[/]",  # a value is escaped, never read as Rich markup
    ]
    parsed = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [p["event"] for p in parsed] == ["notice", "notice"]
    assert parsed[0]["level"] == "error" and parsed[0]["headline"].startswith("Stage 1")
    assert "time" in parsed[0]


def test_json_lines_leave_records_out_and_have_no_nan(tmp_path: Path) -> None:
    record = StageRecord(index=1, hash="h")
    gate = GateResult("loss_decreased", True, "health", "2.0 → 1.0")
    verdict_file = tmp_path / "verdict.json"
    decided = GateDecided(1, "micro", "PASS", [gate], False, 1.5, [], verdict_file, record)
    body = event_json(decided)
    assert body["event"] == "gate_decided" and "record" not in body
    assert body["verdict_file"] == str(verdict_file)
    assert body["gates"] == [
        {"name": "loss_decreased", "passed": True, "kind": "health", "evidence": "2.0 → 1.0"}
    ]
    # A diverged step's NaN loss is no value in JSON (which has no NaN), not a crash.
    result = TrainResult(
        adapter_dir="/x/adapter",
        steps=3,
        losses=[(1, 2.0), (2, float("nan")), (3, 1.0)],
        eval_loss_before=None,
        eval_loss_after=None,
        linear4bit_layers=14,
        trainable_params=10,
        train_tokens=30,
        seconds=1.0,
    )
    lines = io.StringIO()
    JsonLinesSink(lines).emit(ArmTrained("control", result, ArmRecord()))
    trained = json.loads(lines.getvalue())
    assert trained["result"]["losses"] == [[1, 2.0], [2, None], [3, 1.0]]
    assert "record" not in trained
