"""The five-scenario example `tunegate data example` writes: counts, references pass, bugs fail,
arms pair, the shipped data is pinned and the generator (tools/seed_scenarios) reproduces it; and
the JavaScript and SQL executors cannot be fooled."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, SCENARIO_EXAMPLE, run_cli

from tunegate.data.items import Item, load_items, write_arms
from tunegate.data.scenarios import EXAMPLE_FILES, SCENARIOS
from tunegate.data.select import select
from tunegate.plan import DataSelection
from tunegate.sandbox import run as execute
from tunegate.sandbox.javascript import run_javascript
from tunegate.sandbox.sql import run_sql

Arms = tuple[list[Item], list[Item]]

# sha256 of the shipped control.jsonl. A change here means every user's example data changes:
# update it only on purpose.
PINNED_CONTROL_SHA256 = "77bb9f1324e6ce02f508555099a128f9cf4c50166e5c4ceb811edb354129c646"


LANGUAGE = {
    "python": "python",
    "bugfix": "python",
    "sql": "sql",
    "express-api": "javascript",
    "react-components": "javascript",
}


@pytest.fixture(scope="module")
def arms() -> Arms:
    data = SCENARIO_EXAMPLE / "data"
    return load_items(data / "control.jsonl"), load_items(data / "experiment.jsonl")


def _buggy(item: Item) -> str:
    return item.prompt.split("\n", 1)[1]  # the prompt is one line of task, then the program


def test_every_scenario_has_enough_items(arms: Arms) -> None:
    counts = Counter(item.scenario for item in arms[0])
    assert tuple(counts) == SCENARIOS
    assert counts["python"] == 164  # all of HumanEval
    assert min(counts.values()) >= 100, counts


def test_the_seed_split_works_per_scenario(arms: Arms) -> None:
    sel = select(arms[0], DataSelection(selection="all"), seed=42)
    scenario = {item.id: item.scenario for item in arms[0]}
    for part in (sel.train, sel.val, sel.test):
        assert set(map(scenario.get, part)) == set(SCENARIOS)
    assert not set(sel.train) & set(sel.test)


def test_arms_pair_and_differ_only_in_prompt_and_metadata(arms: Arms) -> None:
    control, experiment = arms
    assert [c.id for c in control] == [e.id for e in experiment]
    assert len({c.id for c in control}) == len(control)
    for c, e in zip(control, experiment, strict=True):
        same = ("scenario", "completion", "language", "tests")
        assert [getattr(c, f) for f in same] == [getattr(e, f) for f in same], c.id
        assert e.prompt.startswith(c.prompt) and e.prompt != c.prompt, c.id
        assert not c.metadata and e.metadata["language"] == c.language, c.id
        assert c.tests and c.language == LANGUAGE[c.scenario], c.id


def test_every_reference_passes_and_every_bug_fails(arms: Arms) -> None:
    control, _ = arms
    jobs = [(item, "reference", item.completion, "PASS") for item in control]
    jobs += [(item, "buggy", _buggy(item), "FAIL") for item in control if item.scenario == "bugfix"]

    def run(job: tuple[Item, str, str, str]) -> str | None:
        item, role, program, wanted = job
        result = execute(item.language, program, item.tests or "", timeout_s=10.0)
        if result.verdict == wanted:
            return None
        return f"{item.id} {role}: {result.verdict} (wanted {wanted})\n{result.output_tail[-300:]}"

    with ThreadPoolExecutor(2) as pool:
        problems = [p for p in pool.map(run, jobs) if p]
    assert not problems, "\n".join(problems[:10])


def test_the_tests_are_not_vacuous(arms: Arms) -> None:
    """A program that does nothing fails: the tests check something (every 4th item: speed)."""
    nothing = {"javascript": "module.exports = {};\n", "sql": "SELECT 1", "python": "pass\n"}
    sample = arms[0][::4]

    def verdict(item: Item) -> str:
        return execute(item.language, nothing[item.language], item.tests or "").verdict

    with ThreadPoolExecutor(2) as pool:
        verdicts = dict(zip((i.id for i in sample), pool.map(verdict, sample), strict=True))
    assert set(verdicts.values()) == {"FAIL"}, verdicts


def test_a_bug_is_one_line_at_the_line_the_metadata_names(arms: Arms) -> None:
    control, experiment = arms
    for c, e in zip(control, experiment, strict=True):
        if c.scenario != "bugfix":
            continue
        buggy, fixed = _buggy(c).splitlines(), c.completion.splitlines()
        differ = [n for n, (b, f) in enumerate(zip(buggy, fixed, strict=True), 1) if b != f]
        assert differ == [int(e.metadata["bug_line"])], c.id


def test_the_shipped_data_is_pinned_and_reads_back_to_the_same_bytes(
    arms: Arms, tmp_path: Path
) -> None:
    control_path, experiment_path = write_arms(tmp_path, *arms)
    data = SCENARIO_EXAMPLE / "data"
    assert control_path.read_bytes() == (data / "control.jsonl").read_bytes()
    assert experiment_path.read_bytes() == (data / "experiment.jsonl").read_bytes()
    assert hashlib.sha256(control_path.read_bytes()).hexdigest() == PINNED_CONTROL_SHA256


def test_the_generator_reproduces_the_shipped_data(tmp_path: Path) -> None:
    """Generated afresh, in another process: the bugs are found again by running their tests."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.seed_scenarios", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("control.jsonl", "experiment.jsonl"):
        shipped = (SCENARIO_EXAMPLE / "data" / name).read_bytes()
        assert (tmp_path / name).read_bytes() == shipped, name


# --- the executors ------------------------------------------------------------------------

JS_TESTS = """\
const assert = require('assert');
const { add } = require('./program.js');
assert.strictEqual(add(2, 3), 5);
"""


def test_javascript_passes_a_correct_program_and_fails_a_wrong_one() -> None:
    ok = run_javascript("module.exports = { add: (a, b) => a + b };\n", JS_TESTS)
    assert ok.verdict == "PASS", ok.output_tail
    wrong = run_javascript("module.exports = { add: (a, b) => a - b };\n", JS_TESTS)
    assert wrong.verdict == "FAIL" and "AssertionError" in wrong.output_tail


@pytest.mark.parametrize(
    "program",
    [
        "process.exit(0);\n",
        "console.log('PASSED');\nprocess.exit(0);\n",
        "process.reallyExit = () => {};\nthrow new Error('no');\n",
        "const assert = require('assert');\n"
        "try { assert.strictEqual = () => {}; } catch {}\n"
        "module.exports = { add: () => 0 };\n",
        "const Module = module.constructor;\n"
        "try { Module.prototype.require = () => ({ strictEqual() {} }); } catch {}\n"
        "module.exports = { add: () => 0 };\n",
    ],
    ids=["process.exit", "print-passed", "neutered-exit", "stub-assert", "hook-require"],
)
def test_javascript_forged_pass_is_not_a_pass(program: str) -> None:
    assert run_javascript(program, JS_TESTS).verdict != "PASS"


def test_javascript_infinite_loop_times_out() -> None:
    assert run_javascript("while (true) {}\n", JS_TESTS, timeout_s=0.5).verdict == "TIMEOUT"


def test_javascript_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", "/etc/secret-ca.pem")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    result = run_javascript("console.log(JSON.stringify(process.env));\n", JS_TESTS)
    assert "NODE_EXTRA_CA_CERTS" not in result.output_tail
    assert "sk-secret" not in result.output_tail


SQL_TESTS = """\
-- fixture: shop
-- compare: ordered
SELECT name, price FROM products WHERE category = 'games' ORDER BY price DESC, name;
"""


def test_sql_compares_result_sets() -> None:
    same = "SELECT name AS n, price FROM products WHERE category='games' ORDER BY 2 DESC, 1"
    assert run_sql(same, SQL_TESTS).verdict == "PASS"
    reordered = "SELECT name, price FROM products WHERE category = 'games' ORDER BY name"
    assert run_sql(reordered, SQL_TESTS).verdict == "FAIL"  # ordered: the order matters
    unordered = SQL_TESTS.replace("compare: ordered", "compare: unordered")
    assert run_sql(reordered, unordered).verdict == "PASS"
    wrong = "SELECT name, price FROM products WHERE category = 'books' ORDER BY price DESC, name"
    result = run_sql(wrong, SQL_TESTS)
    assert result.verdict == "FAIL" and "differs" in result.output_tail


@pytest.mark.parametrize(
    "query",
    [
        "SELEC name FROM products",
        "SELECT nope FROM products",
        "DELETE FROM products",
        "SELECT 1; SELECT 2",
        "ATTACH DATABASE 'x.db' AS x",
        "PRAGMA query_only = OFF",
        "",
    ],
    ids=["syntax", "unknown-column", "write", "two-statements", "attach", "pragma", "empty"],
)
def test_sql_broken_or_writing_query_is_not_a_pass(query: str) -> None:
    assert run_sql(query, SQL_TESTS).verdict in ("FAIL", "ERROR")


def test_sql_runaway_query_times_out() -> None:
    forever = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"
    result = run_sql(forever, SQL_TESTS, timeout_s=0.5)
    assert result.verdict == "TIMEOUT" and result.seconds < 3


def test_sql_broken_tests_are_an_error_not_a_fail() -> None:
    query = "SELECT 1"
    assert run_sql(query, "SELECT 1").verdict == "ERROR"  # no fixture named
    assert run_sql(query, "-- fixture: ../etc\nSELECT 1").verdict == "ERROR"
    assert run_sql(query, "-- fixture: nowhere\nSELECT 1").verdict == "ERROR"
    assert run_sql(query, "-- fixture: shop\nSELECT broken(").verdict == "ERROR"


def test_execute_dispatches_by_language() -> None:
    # Seen twice as ERROR under the full suite's load, never alone: the whole result says why.
    added = execute("python", "def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n")
    assert added.verdict == "PASS", added
    assert (
        execute("javascript", "module.exports = { add: (a, b) => a + b };\n", JS_TESTS).verdict
        == "PASS"
    )
    with pytest.raises(ValueError, match="no executor"):
        execute("cobol", "", "")


def test_data_example_writes_the_shipped_example(tmp_path: Path) -> None:
    result = run_cli("data", "example", str(tmp_path / "ex"))
    assert result.returncode == 0, result.stderr
    for name in EXAMPLE_FILES:
        assert (tmp_path / "ex" / name).read_bytes() == (SCENARIO_EXAMPLE / name).read_bytes(), name
    again = run_cli("data", "example", str(tmp_path / "ex"))
    assert again.returncode != 0 and "--force" in again.stdout + again.stderr


def test_a_source_problem_never_straddles_train_and_test(arms: Arms) -> None:
    """HumanEval/N is both a `python` and a `bugfix` item: they must land on the same side."""
    from tunegate.data.select import select
    from tunegate.plan import DataSelection

    control = arms[0]
    sel = select(control, DataSelection(selection="all", test_per_scenario=15), seed=42)
    group = {i.id: i.group for i in control if i.group}
    train_groups = {group[i] for i in sel.train if i in group}
    held_out = {group[i] for i in sel.val + sel.test if i in group}
    assert train_groups and held_out and not train_groups & held_out
    per_scenario = {s: sum(1 for i in sel.test if i.startswith(s + "-")) for s in SCENARIOS}
    assert all(count == 15 for count in per_scenario.values()), per_scenario
