"""The run's state: typed, versioned, migrated from the unnamed schema, refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from tunegate.rundir import RunDir
from tunegate.state import STATE_SCHEMA, LadderState, StateError, parse_state


def _run_dir(plan: Path) -> Path:
    return plan.parent / "runs" / "metadata-experiment"


def as_first_schema(state: dict) -> dict:
    """What tunegate wrote before the schema had a name: no `schema`, a derived
    `tokens_per_second` in each training result, and `not_run` where `no_value` is now."""
    old = json.loads(json.dumps(state))
    del old["schema"]
    for record in old["stages"].values():
        for arm in record.get("arms", {}).values():
            if arm.get("train"):
                arm["train"]["tokens_per_second"] = 123.0
        if record.get("comparison"):
            record["comparison"]["not_run"] = record["comparison"].pop("no_value")
    return old


def test_a_climb_writes_a_named_schema_that_reads_back_identically(micro_climb: Path) -> None:
    path = _run_dir(micro_climb) / "state.json"
    written = json.loads(path.read_text())
    assert written["schema"] == STATE_SCHEMA
    state = RunDir(path.parent).load_state()
    assert isinstance(state, LadderState)
    assert state.verdict("micro") == "PASS" and state.stages["micro"].trains
    assert state.machine is not None and state.machine.threads > 0
    assert state.to_json() == written  # nothing is lost or invented on the way through


def test_a_state_from_before_the_schema_resumes(micro_climb: Path) -> None:
    """An earlier tunegate's state.json: the climb reads it, and nothing passed runs again."""
    path = _run_dir(micro_climb) / "state.json"
    original = path.read_bytes()
    try:
        path.write_text(json.dumps(as_first_schema(json.loads(original))))
        migrated = RunDir(path.parent).load_state()
        assert migrated.to_json() == json.loads(original)
        again = run_cli("run", str(micro_climb), "--until", "1")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Every stage has passed" in again.stdout
        status = run_cli("status", "--plan", str(micro_climb))
        assert status.returncode == 0, status.stderr
        assert "PASS" in status.stdout and "NOT RUN" not in status.stdout
    finally:
        path.write_bytes(original)  # the shared climb is read by other tests


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(schema="tunegate.state/9"), "from a newer tunegate"),
        (
            lambda s: s["stages"]["micro"].update(verdict="MAYBE"),
            "stages.micro.verdict: Input should be 'PASS', 'INVESTIGATE' or 'FAIL'",
        ),
        (lambda s: s["stages"]["micro"].update(surprise=1), "stages.micro.surprise: Extra"),
        (lambda s: s.clear() or s.update(stages=[]), "stages: Input should be a valid dict"),
    ],
)
def test_a_state_this_version_cannot_read_is_refused_in_one_line(
    micro_climb: Path, tmp_path: Path, change: object, message: str
) -> None:
    state = json.loads((_run_dir(micro_climb) / "state.json").read_text())
    change(state)  # type: ignore[operator]
    with pytest.raises(StateError, match=message.replace("(", r"\(")):
        parse_state(state)
    # Through the CLI: one line naming the file, exit 2, no traceback, nothing rewritten.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "plan.json").write_text((_run_dir(micro_climb) / "plan.json").read_text())
    text = json.dumps(state)
    (run_dir / "state.json").write_text(text)
    result = run_cli("status", str(run_dir))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(run_dir / "state.json") in lines[0], result.stderr
    assert message in lines[0]
    assert (run_dir / "state.json").read_text() == text


def test_a_fresh_state_is_empty_and_valid() -> None:
    state = parse_state({})
    assert state.stages == {} and state.to_json()["schema"] == STATE_SCHEMA
    with pytest.raises(StateError, match="not a JSON object"):
        parse_state([])
