"""Bad input: one-line errors naming file, line and field, exit code 2, nothing written.

Plan-level cases go through the installed CLI, as a user meets them; the JSONL loader is tested
directly (every problem as `file:line: what`), plus once through the CLI.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_cli

from tunegate.data.items import MAX_LINE_BYTES, derived_id, load_items
from tunegate.errors import UserError

# --- plan-level errors through the CLI ------------------------------------------------------


def replace(old: str, new: str) -> Callable[[str], str]:
    """An edit of the example plan's text; the old text must be there exactly once."""

    def edit(text: str) -> str:
        assert text.count(old) == 1, f"the example plan changed: {old!r}"
        return text.replace(old, new)

    return edit


def drop_arms(text: str) -> str:
    """Remove the whole `arms:` block."""
    edited = re.sub(r"^arms:\n(?:  .*\n|\n)*", "", text, count=1, flags=re.M)
    assert edited != text
    return edited


def micro_arms(arms: str) -> Callable[[str], str]:
    """Give stage 1 (micro) an `arms:` list."""
    return replace(
        "    data: {selection: micro}\n", f"    arms: {arms}\n    data: {{selection: micro}}\n"
    )


PILOT_DATA = "data: {selection: split, test_per_scenario: 15}"

# (edit, field path, text on the line the error must name or None for no line, message part)
SMALL_EVAL = "evaluation: {mode: full}\n    # Descriptive"


def small_eval(inner: str) -> Callable[[str], str]:
    """Replace stage 2's `evaluation:` mapping with `{mode: full, <inner>}`."""
    return replace(SMALL_EVAL, f"evaluation: {{mode: full, {inner}}}\n    # Descriptive")


PLAN_CASES = [
    pytest.param(
        small_eval("metrics: [functional_correctness, bleu]"),
        "stages.2.evaluation.metrics",
        "metrics: [functional_correctness, bleu]",
        "unknown metric 'bleu'",
        id="unknown-metric",
    ),
    pytest.param(
        small_eval("samples: 5, metrics: [functional_correctness, pass@10]"),
        "stages.2.evaluation",
        "samples: 5",
        "pass@10 needs at least 10 samples",
        id="pass-at-k-above-n",
    ),
    pytest.param(
        small_eval(
            "metrics: [functional_correctness, semantic_similarity], "
            "tests: {semantic_similarity: mcnemar}"
        ),
        "stages.2.evaluation.tests.semantic_similarity",
        "tests: {semantic_similarity: mcnemar}",
        "McNemar's test needs a binary metric",
        id="mcnemar-on-a-continuous-metric",
    ),
    pytest.param(
        replace("seed: 42", "seed: 42\nbogus: 1"),
        "bogus",
        "bogus: 1",
        "unknown field",
        id="unknown-top-level-field",
    ),
    pytest.param(
        replace("  batch_size: 4\n", "  batch_size: 4\n  batchsize: 8\n"),
        "training.batchsize",
        "batchsize: 8",
        "unknown field",
        id="unknown-field-in-training",
    ),
    pytest.param(
        replace("save_steps: 5}", "save_steps: 5, steps: 3}"),
        "stages.1.training.steps",
        "steps: 3}",
        "unknown field",
        id="unknown-field-in-stage-training",
    ),
    pytest.param(
        replace("max_steps: 10", "max_steps: -5"),
        "stages.1.training.max_steps",
        "max_steps: -5",
        "greater than or equal to 1 (got -5)",
        id="negative-stage-max-steps",
    ),
    pytest.param(
        replace("  batch_size: 4\n", "  batch_size: 4\n  max_steps: -1\n"),
        "training.max_steps",
        "max_steps: -1",
        "greater than or equal to 1 (got -1)",
        id="negative-plan-max-steps",
    ),
    pytest.param(
        replace("seed: 42", "seed: forty-two"),
        "seed",
        "seed: forty-two",
        "valid integer",
        id="wrong-type",
    ),
    pytest.param(
        micro_arms("[control, nosuch]"),
        "stages.1.arms.1",
        "arms: [control, nosuch]",
        "unknown arm 'nosuch'",
        id="stage-unknown-arm",
    ),
    pytest.param(
        # No plan-level `scenarios:`: checked against the data, after the plan is loaded.
        replace(PILOT_DATA, "data: {selection: split, scenarios: [nosuch]}"),
        "stages.3.data.scenarios.0",
        "scenarios: [nosuch]",
        "unknown scenario 'nosuch'",
        id="stage-unknown-scenario-in-data",
    ),
    pytest.param(
        # With a plan-level `scenarios:` list: checked against it, while loading the plan.
        lambda text: replace(PILOT_DATA, "data: {selection: split, scenarios: [nosuch]}")(
            replace("pilot_scenario: bugfix", "scenarios: [bugfix, python]")(text)
        ),
        "stages.3.data.scenarios.0",
        "scenarios: [nosuch]",
        "unknown scenario 'nosuch'",
        id="stage-unknown-scenario-in-plan",
    ),
    pytest.param(
        replace("pilot_scenario: bugfix", "scenarios: [bugfix, nosuch]"),
        "scenarios.1",
        "scenarios: [bugfix, nosuch]",
        "'nosuch' has no items",
        id="plan-scenario-without-items",
    ),
    pytest.param(
        replace("pilot_scenario: bugfix", "pilot_scenario: nosuch"),
        "pilot_scenario",
        "pilot_scenario: nosuch",
        "unknown scenario 'nosuch'",
        id="unknown-pilot-scenario",
    ),
    pytest.param(
        replace("data: data/control.jsonl", "data: data/missing.jsonl"),
        "arms.control.data",
        "data: data/missing.jsonl",
        "dataset file does not exist",
        id="dataset-path-does-not-exist",
    ),
    pytest.param(
        drop_arms,
        "arms",
        None,
        "missing required field",
        id="missing-arms",
    ),
    pytest.param(
        replace("name: metadata-experiment\n", ""),
        "name",
        None,
        "missing required field",
        id="missing-name",
    ),
    pytest.param(
        replace("    role: experiment\n", ""),
        "arms.experiment.role",
        "  experiment:\n",
        "missing required field",
        id="missing-arm-role",
    ),
    pytest.param(
        replace("role: experiment", "role: control"),
        "arms",
        "arms:",
        "needs exactly one arm with role 'control' and one with 'experiment'",
        id="two-control-arms",
    ),
    pytest.param(
        replace("name: small", "name: micro  # again"),
        "stages.2.name",
        "name: micro  # again",
        "duplicate stage name 'micro'",
        id="duplicate-stage-name",
    ),
    pytest.param(
        replace("data: {selection: micro}", "data: {selection: micro, split: [0.5, 0.5, 0.5]}"),
        "stages.1.data",
        "split: [0.5, 0.5, 0.5]",
        "summing to 1",
        id="split-not-summing-to-one",
    ),
]


def expected_line(text: str, marker: str) -> int:
    """1-based number of the one line containing `marker` (a trailing newline matches line end)."""
    lines = [i for i, line in enumerate(text.splitlines(keepends=True), 1) if marker in line]
    assert len(lines) == 1, f"marker {marker!r} is on lines {lines}"
    return lines[0]


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def assert_one_line_error(
    result: subprocess.CompletedProcess[str],
    path: Path,
    line: int | None,
    field: str | None,
    message: str,
) -> None:
    """Exit 2; stderr is `error: <path>[:<line>]: [<field>: ]...<message>...` on one line."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    err = result.stderr.removesuffix("\n")
    assert "\n" not in err, err
    prefix = f"error: {path}:{line}: " if line is not None else f"error: {path}: "
    if field is not None:
        prefix += f"{field}: "
    assert err.startswith(prefix), err
    assert message in err, err


def assert_nothing_written(exp_dir: Path, before: set[Path]) -> None:
    assert not (exp_dir / "runs").exists()
    assert files_under(exp_dir) == before


@pytest.mark.parametrize(("edit", "field", "marker", "message"), PLAN_CASES)
def test_run_rejects_bad_plan(
    example: Path, edit: Callable[[str], str], field: str, marker: str | None, message: str
) -> None:
    text = edit(example.read_text())
    example.write_text(text)
    before = files_under(example.parent)
    result = run_cli("run", str(example), cwd=example.parent)
    line = expected_line(text, marker) if marker is not None else None
    assert_one_line_error(result, example, line, field, message)
    assert_nothing_written(example.parent, before)


# `tunegate plan` loads the plan the same way; a few cases show it reports the same.
PLAN_COMMAND_IDS = {
    "unknown-top-level-field",
    "negative-stage-max-steps",
    "stage-unknown-arm",
    "stage-unknown-scenario-in-data",
    "dataset-path-does-not-exist",
    "missing-arms",
}


@pytest.mark.parametrize(
    ("edit", "field", "marker", "message"),
    [case for case in PLAN_CASES if case.id in PLAN_COMMAND_IDS],
)
def test_plan_command_rejects_bad_plan(
    example: Path, edit: Callable[[str], str], field: str, marker: str | None, message: str
) -> None:
    text = edit(example.read_text())
    example.write_text(text)
    before = files_under(example.parent)
    result = run_cli("plan", str(example), cwd=example.parent)
    line = expected_line(text, marker) if marker is not None else None
    assert_one_line_error(result, example, line, field, message)
    assert_nothing_written(example.parent, before)


NOT_A_MAPPING = "a plan is a YAML mapping (name:, arms:, ...)"

# Plans that do not parse into a mapping: no field to name. (edit, marker of the line, message)
RAW_PLAN_CASES = [
    pytest.param(
        replace("  r: 16", "\tr: 16"),
        "\tr: 16",
        "invalid YAML: found character '\\t' that cannot start any token",
        id="yaml-tab",
    ),
    pytest.param(
        replace("  r: 16", "  r: [16"),
        "  alpha: 32",  # where the unclosed flow sequence meets `alpha:`
        "invalid YAML: did not find expected ',' or ']'",
        id="yaml-unclosed-bracket",
    ),
    pytest.param(lambda text: "- name: a\n- arms: {}\n", None, NOT_A_MAPPING, id="yaml-list"),
    pytest.param(lambda text: "", None, NOT_A_MAPPING, id="empty-file"),
    pytest.param(lambda text: "# nothing but a comment\n", None, NOT_A_MAPPING, id="only-comment"),
    pytest.param(
        lambda text: text.encode().replace(b"plain prompts", b"plain \xff prompts"),
        None,
        "not UTF-8 text",
        id="not-utf8",
    ),
]


@pytest.mark.parametrize(("edit", "marker", "message"), RAW_PLAN_CASES)
def test_run_rejects_unparsable_plan(
    example: Path, edit: Callable[[str], str | bytes], marker: str | None, message: str
) -> None:
    content = edit(example.read_text())
    if isinstance(content, bytes):
        example.write_bytes(content)
    else:
        example.write_text(content)
    before = files_under(example.parent)
    result = run_cli("run", str(example), cwd=example.parent)
    line = expected_line(content, marker) if isinstance(content, str) and marker else None
    assert_one_line_error(result, example, line, None, message)
    assert result.stderr.endswith(f": {message}\n")
    assert_nothing_written(example.parent, before)


@pytest.mark.parametrize("command", ["run", "plan"])
def test_missing_plan_file(tmp_path: Path, command: str) -> None:
    plan = tmp_path / "nowhere" / "tunegate.yaml"
    result = run_cli(command, str(plan), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert (
        result.stderr == f"error: {plan}: plan file not found (create one with `tunegate init`)\n"
    )
    assert files_under(tmp_path) == set()


def test_missing_default_plan(tmp_path: Path) -> None:
    """`tunegate run` with no argument in a directory without a plan."""
    result = run_cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: tunegate.yaml: plan file not found")
    assert files_under(tmp_path) == set()


def test_error_message_keeps_square_brackets(example: Path) -> None:
    example.write_text(replace("name: small", "name: Small Stage")(example.read_text()))
    result = run_cli("run", str(example), cwd=example.parent)
    assert result.returncode == 2
    assert "stages.2.name: String should match pattern '^[a-z0-9][a-z0-9_-]*$'" in result.stderr


# --- arms: pairing --------------------------------------------------------------------------


def rewrite_jsonl(path: Path, change: Callable[[list[dict]], list[dict]]) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(row) + "\n" for row in change(rows)))


def test_arms_not_paired_by_id(example: Path) -> None:
    experiment = example.parent / "data" / "experiment.jsonl"
    rewrite_jsonl(experiment, lambda rows: [*rows[1:], {**rows[0], "id": "extra-1"}])
    before = files_under(example.parent)
    result = run_cli("run", str(example), cwd=example.parent)
    assert_one_line_error(
        result,
        experiment,
        None,
        None,
        "arms are not paired by id (only in control: python-000; only in experiment: extra-1)",
    )
    assert_nothing_written(example.parent, before)


def test_arms_completion_differs(example: Path) -> None:
    experiment = example.parent / "data" / "experiment.jsonl"

    def change(rows: list[dict]) -> list[dict]:
        rows[2] = {**rows[2], "completion": rows[2]["completion"] + "# different\n"}
        return rows

    rewrite_jsonl(experiment, change)
    before = files_under(example.parent)
    result = run_cli("run", str(example), cwd=example.parent)
    item_id = json.loads(experiment.read_text().splitlines()[2])["id"]
    assert_one_line_error(
        result,
        experiment,
        None,
        None,
        f"item '{item_id}' differs between arms in completion; arms may differ only in prompt "
        "and metadata (list fields in the experiment arm's `may_differ_in` to allow more)",
    )
    assert_nothing_written(example.parent, before)

    # Declared in the plan, the same difference is accepted.
    plan_text = example.read_text().replace(
        "    data: data/experiment.jsonl\n",
        "    data: data/experiment.jsonl\n    may_differ_in: [completion]\n",
    )
    example.write_text(plan_text)
    assert run_cli("plan", str(example), cwd=example.parent).returncode == 0


def test_bare_seed_shape_arms_pair_by_line(example: Path) -> None:
    """The original plan's {prompt, completion} files: different prompts, same completions, line by
    line."""
    for arm in ("control", "experiment"):
        path = example.parent / "data" / f"{arm}.jsonl"
        rewrite_jsonl(
            path,
            lambda rows: [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows],
        )
    # The bare shape has one scenario, so the example's pilot scenario is not in the data.
    example.write_text(re.sub(r"^pilot_scenario:.*\n", "", example.read_text(), flags=re.M))
    result = run_cli("plan", str(example), cwd=example.parent)
    assert result.returncode == 0, result.stderr
    assert not (example.parent / "runs").exists()


# --- the JSONL loader -----------------------------------------------------------------------

GOOD = {"id": "a", "scenario": "s", "prompt": "p", "completion": "c"}


def line(**fields: object) -> str:
    return json.dumps({**GOOD, **fields})


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "items.jsonl"
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(UserError) as info:
        load_items(path)
    return str(info.value).split("\n")


# (content, [problem after `path:`]); `{p}` stands for the file's path
LOADER_CASES = [
    pytest.param(
        '{"id": "a",\n',
        [":1: invalid JSON (Expecting property name enclosed in double quotes, column 12)"],
        id="invalid-json",
    ),
    pytest.param(
        json.dumps({"id": "a", "prompt": "p", "completion": "c"}) + "\n",
        [":1: 'scenario': missing required field"],
        id="missing-field",
    ),
    pytest.param(line(extra=1) + "\n", [":1: 'extra': unknown field"], id="extra-field"),
    pytest.param(
        line(id=1, completion=["c"]) + "\n",
        [":1: 'id': input should be a valid string; 'completion': input should be a valid string"],
        id="wrong-types",
    ),
    pytest.param(
        line(metadata="x") + "\n",
        [":1: 'metadata': input should be a valid dictionary"],
        id="wrong-type-metadata",
    ),
    pytest.param(
        line(id="", prompt="  \t") + "\n",
        [":1: 'id': string should have at least 1 character; 'prompt': must not be blank"],
        id="empty-strings",
    ),
    pytest.param(
        line() + "\n" + line(id="b") + "\n" + line() + "\n",
        [":3: duplicate id 'a' (first on line 1)"],
        id="duplicate-id",
    ),
    pytest.param(
        line().encode()[:30] + b"\xff\xfe" + line().encode()[30:] + b"\n",
        [":1: not UTF-8 (byte 31)"],
        id="not-utf8",
    ),
    pytest.param(
        line(prompt="x" * MAX_LINE_BYTES) + "\n",
        [f":1: line is {len(line(prompt='x' * MAX_LINE_BYTES)):,} bytes (limit 1,000,000)"],
        id="huge-line",
    ),
    pytest.param("", [": no items (the file is empty)"], id="empty-file"),
    pytest.param("\n  \n\r\n", [": no items (the file is empty)"], id="only-blank-lines"),
    pytest.param("[1, 2]\n", [":1: expected a JSON object, got list"], id="not-an-object"),
    pytest.param(
        json.dumps({"prompt": "p"}) + "\n",
        [":1: 'completion': missing required field"],
        id="bare-shape-without-completion",
    ),
    pytest.param(
        # Every problem, in file order, each with its own line; good lines between are fine.
        "\n".join(
            [
                line(id="ok-1"),
                "{oops",
                line(id="ok-2", scenario=""),
                "",
                line(id="ok-1"),
                line(id="ok-3", bogus=True),
            ]
        )
        + "\n",
        [
            ":2: invalid JSON (Expecting property name enclosed in double quotes, column 2)",
            ":3: 'scenario': string should have at least 1 character",
            ":5: duplicate id 'ok-1' (first on line 1)",
            ":6: 'bogus': unknown field",
        ],
        id="all-problems-listed",
    ),
]


@pytest.mark.parametrize(("content", "expected"), LOADER_CASES)
def test_loader_reports_every_problem(
    tmp_path: Path, content: str | bytes, expected: list[str]
) -> None:
    path = write(tmp_path, content)
    assert problems(path) == [f"{path}{problem}" for problem in expected]


def test_loader_lists_at_most_20_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "{oops\n" * 25)
    found = problems(path)
    assert len(found) == 21
    assert found[0].startswith(f"{path}:1: invalid JSON")
    assert found[19].startswith(f"{path}:20: invalid JSON")
    assert found[20] == "... and 5 more"


def test_loader_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    assert problems(path) == [f"{path}: dataset file does not exist"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\xef\xbb\xbf" + line().encode() + b"\n", id="bom"),
        pytest.param(line().encode() + b"\r\n", id="crlf"),
        pytest.param(b"\xef\xbb\xbf" + line().encode() + b"\r\n", id="bom-and-crlf"),
        pytest.param(b"\n\n" + line().encode() + b"\n   \n\r\n", id="blank-lines"),
        pytest.param(line().encode(), id="no-final-newline"),
    ],
)
def test_loader_accepts_harmless_variants(tmp_path: Path, content: bytes) -> None:
    assert [
        item.model_dump(exclude_defaults=True) for item in load_items(write(tmp_path, content))
    ] == [GOOD]


def test_loader_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "\r\n\r\n" + line() + "\r\n\r\n{oops\r\n")
    assert problems(path) == [
        f"{path}:5: invalid JSON (Expecting property name enclosed in double quotes, column 2)"
    ]


def test_loader_bare_seed_shape(tmp_path: Path) -> None:
    """The original plan's {prompt, completion} lines: ids derived from line and completion."""
    rows = [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]
    path = write(tmp_path, "".join(json.dumps(r) + "\n" for r in rows))
    items = load_items(path)
    assert [i.id for i in items] == [derived_id("c1", 1), derived_id("c2", 2)]
    assert [i.prompt for i in items] == ["p1", "p2"]
    assert len({i.scenario for i in items}) == 1
    # The experiment arm's prompts differ, its completions do not: the ids pair.
    other = tmp_path / "experiment.jsonl"
    other.write_text(
        "".join(json.dumps({**r, "prompt": r["prompt"] + " meta"}) + "\n" for r in rows)
    )
    assert [i.id for i in load_items(other)] == [i.id for i in items]
    assert load_items(other)[0].scenario == items[0].scenario


def test_bad_dataset_through_cli(example: Path) -> None:
    """Every problem of an arm's file, each as `file:line: what`, exit 2, nothing written."""
    control = example.parent / "data" / "control.jsonl"
    lines = control.read_text().splitlines()
    lines[1] = "{not json"
    lines[4] = lines[4].replace('"scenario"', '"scenery"')
    control.write_text("\n".join(lines) + "\n")
    before = files_under(example.parent)
    result = run_cli("run", str(example), cwd=example.parent)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: {control}:2: invalid JSON (Expecting property name enclosed in double quotes, "
        "column 2)",
        f"{control}:5: 'scenario': missing required field; 'scenery': unknown field",
    ]
    assert_nothing_written(example.parent, before)


def test_example_is_still_valid(example: Path) -> None:
    """The edits above start from a valid plan; if this fails, fix the example, not the cases."""
    result = run_cli("plan", str(example), cwd=example.parent)
    assert result.returncode == 0, result.stderr


# --- malformed data files through `tunegate data check-file`: exit 2, exact line, no writes ---

MORE_MALFORMED = [
    pytest.param(line(id=None) + "\n", ":1: 'id': input should be a valid string", id="null-id"),
    pytest.param(
        line(tests=3) + "\n", ":1: 'tests': input should be a valid string", id="tests-not-string"
    ),
    pytest.param(
        line(language=["py"]) + "\n",
        ":1: 'language': input should be a valid string",
        id="language-list",
    ),
    pytest.param(
        line(prompt=True) + "\n", ":1: 'prompt': input should be a valid string", id="prompt-bool"
    ),
    pytest.param(
        line(completion=None) + "\n",
        ":1: 'completion': input should be a valid string",
        id="completion-null",
    ),
    pytest.param(
        line(scenario="   ") + "\n", ":1: 'scenario': must not be blank", id="scenario-blank"
    ),
    pytest.param(
        '{"id": "a", "scenario": "s", "prompt": "p", "completion": "c",}\n',
        ":1: invalid JSON (Expecting property name enclosed in double quotes, column 63)",
        id="trailing-comma",
    ),
    pytest.param('"just a string"\n', ":1: expected a JSON object, got str", id="string-line"),
    pytest.param("42\n", ":1: expected a JSON object, got int", id="number-line"),
    pytest.param(line() + "\n}\n", ":2: invalid JSON (Expecting value, column 1)", id="lone-brace"),
    pytest.param(
        '{"id": "a", "scenario": "s", "prompt": "\\ud8", "completion": "c"}\n',
        ":1: invalid JSON (Invalid \\uXXXX escape, column 42)",
        id="bad-unicode-escape",
    ),
    pytest.param(
        line() + "\r\n" + line(id="b") + "\r\n" + "{oops\r\n",
        ":3: invalid JSON (Expecting property name enclosed in double quotes, column 2)",
        id="crlf-error-on-line-3",
    ),
    pytest.param(
        "\ufeff" + line() + "\n" + line(id="") + "\n",
        ":2: 'id': string should have at least 1 character",
        id="bom-error-on-line-2",
    ),
]


def _first_expected(case: object) -> tuple[str, str]:
    content, expected = case.values  # type: ignore[attr-defined]
    return content, expected[0] if isinstance(expected, list) else expected


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id) for c in LOADER_CASES + MORE_MALFORMED],
)
def test_check_file_rejects_malformed_data(tmp_path: Path, case: object) -> None:
    content, expected = _first_expected(case)
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    path = write(data_dir, content)
    before = files_under(tmp_path)
    result = run_cli("data", "check-file", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    first = result.stderr.splitlines()[0]
    assert first == f"error: {path}{expected}", repr(result.stderr)
    assert files_under(tmp_path) == before  # nothing written, not even next to the file
