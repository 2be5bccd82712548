"""Similarity metrics (real all-MiniLM-L6-v2, real codebleu) and the per-language syntax check."""

from __future__ import annotations

import importlib.util
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from codebleu import calc_codebleu

from tunegate.evaluate.similarity import (
    CODEBLEU_LANGUAGES,
    Unsupported,
    codebleu,
    semantic_similarity,
)
from tunegate.evaluate.syntax import syntax_valid
from tunegate.sandbox.sql import fixture_sql

ADD = "def add(a, b):\n    total = a + b\n    return total\n"
ADD_RENAMED = "def add(x, y):\n    s = x + y\n    return s\n"
UNRELATED = "import os\n\nfor name in os.listdir('.'):\n    print(name.upper())\n"
JS_ADD = "function add(a, b) {\n  const total = a + b;\n  return total;\n}\n"
SHOP = fixture_sql("shop")


# --- semantic similarity ---------------------------------------------------------------------


def test_identical_code_has_similarity_one() -> None:
    assert semantic_similarity([(ADD, ADD)]) == [pytest.approx(1.0, abs=1e-5)]


def test_renamed_variables_are_closer_than_unrelated_code() -> None:
    renamed, unrelated = semantic_similarity([(ADD_RENAMED, ADD), (UNRELATED, ADD)])
    assert -1.0 <= unrelated < renamed <= 1.0
    assert renamed > unrelated + 0.3  # measured: 0.78 against 0.09


def test_batched_equals_one_by_one() -> None:
    # Shared references and a repeated pair: each distinct text is embedded once.
    pairs = [
        (ADD, ADD),
        (ADD_RENAMED, ADD),
        (UNRELATED, ADD),
        (JS_ADD, ADD_RENAMED),
        ("SELECT name FROM customers;", "SELECT name FROM products;"),
        ("", "x = 1"),
        (ADD_RENAMED, ADD),
    ]
    one_by_one = [semantic_similarity([pair])[0] for pair in pairs]
    for batch_size in (2, 64):
        assert semantic_similarity(pairs, batch_size=batch_size) == pytest.approx(
            one_by_one, abs=1e-5
        )


def test_concurrent_calls_share_one_model() -> None:
    pairs = [[(ADD_RENAMED, ADD)], [(UNRELATED, ADD)], [(JS_ADD, ADD)]] * 2
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(semantic_similarity, pairs))
    assert together == [pytest.approx(semantic_similarity(p), abs=1e-5) for p in pairs]


def test_no_pairs_and_bad_batch_size() -> None:
    assert semantic_similarity([]) == []
    with pytest.raises(ValueError, match="batch_size"):
        semantic_similarity([(ADD, ADD)], batch_size=0)


# --- CodeBLEU --------------------------------------------------------------------------------


def test_codebleu_languages_are_the_installed_grammars() -> None:
    assert frozenset({"python", "javascript"}) == CODEBLEU_LANGUAGES


@pytest.mark.parametrize(("code", "language"), [(ADD, "python"), (JS_ADD, "javascript")])
def test_codebleu_of_identical_code_is_one(code: str, language: str) -> None:
    assert codebleu(code, code, language) == pytest.approx(1.0)


def test_codebleu_orders_identical_renamed_unrelated() -> None:
    identical = codebleu(ADD, ADD, "python")
    renamed = codebleu(ADD_RENAMED, ADD, "python")
    unrelated = codebleu(UNRELATED, ADD, "python")
    assert identical > renamed > unrelated >= 0.0


@pytest.mark.parametrize(
    ("generation", "reference", "language"),
    [
        (ADD_RENAMED, ADD, "python"),
        (UNRELATED, ADD, "python"),
        ("def add(a, b):\n    return a - b\n", ADD, "python"),
        ("function add(x, y) {\n  let t = x + y;\n  return t;\n}\n", JS_ADD, "javascript"),
    ],
)
def test_codebleu_equals_calc_codebleu_where_data_flows_match(
    generation: str, reference: str, language: str
) -> None:
    package = calc_codebleu([reference], [generation], lang=language)
    assert package["dataflow_match_score"] > 0  # the case where the two definitions agree
    assert codebleu(generation, reference, language) == pytest.approx(package["codebleu"])


def test_codebleu_zero_data_flow_match_scores_zero(caplog: pytest.LogCaptureFixture) -> None:
    # calc_codebleu counts "no reference data flow matched" as a full data-flow term (0.25).
    reference, generation = "x = 1\ny = x + 2\n", "print(2)"
    assert calc_codebleu([reference], [generation], lang="python")["codebleu"] == 0.25
    assert codebleu(generation, reference, "python") == 0.0
    # No data flow in the reference: the term is left out, not logged and not counted as 1.
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        short = codebleu("return 1", "return 1", "python")
    assert not caplog.records  # calc_codebleu warns through the root logger here
    parts = calc_codebleu(["return 1"], ["return 1"], lang="python")
    expected = (parts["ngram_match_score"] + parts["weighted_ngram_match_score"] + 1.0) / 3
    assert short == pytest.approx(expected)
    assert 0.5 < short < 1.0  # BLEU's smoothing: 2-token code is below 1 even when identical


@pytest.mark.parametrize(
    ("generation", "reference", "language", "reason"),
    [
        ("SELECT 1", "SELECT 1", "sql", "does not support 'sql'"),
        ("fn main() {}", "fn main() {}", "rust", "does not support 'rust'"),
        ("", ADD, "python", "generation is empty"),
        (ADD, " \n\t", "python", "reference is empty"),
    ],
)
def test_codebleu_unsupported(generation: str, reference: str, language: str, reason: str) -> None:
    with pytest.raises(Unsupported, match=reason):
        codebleu(generation, reference, language)


# --- syntax ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "language", "valid", "detail"),
    [
        (ADD, "python", True, "ok"),
        ("def f(:\n    pass\n", "python", False, "line 1: "),
        ("def f():\nreturn 1\n", "python", False, "line 2: expected an indented block"),
        ("x = 1\x00", "python", False, "null"),
        ("while True:\n    pass\n", "python", True, "ok"),  # compiled, never run
        ("", "python", False, "empty"),
        (JS_ADD, "javascript", True, "ok"),
        ("const a = 1;\nfunction f(x) {\n  return x + ;\n}\n", "javascript", False, "line 3: "),
        ("if (x) {\n  y(\n}\n", "javascript", False, "line 2: syntax error"),
        ("let x = ", "javascript", False, "line 1: "),
        ("   \n", "javascript", False, "empty"),
        ("SELECT 1 + 1;", "sql", True, "ok"),
        ("SELECT * FROM customers", "sql", False, "no such table: customers"),  # no fixture
        ("SELEC 1", "sql", False, "syntax error"),
        ("", "sql", False, "empty"),
        ("-- just a comment", "sql", False, "incomplete input"),
    ],
)
def test_syntax_valid_table(code: str, language: str, valid: bool, detail: str) -> None:
    ok, why = syntax_valid(code, language)
    assert ok is valid
    assert detail in why


@pytest.mark.parametrize(
    ("query", "valid", "detail"),
    [
        ("SELECT name FROM customers WHERE city = 'Lyon' ORDER BY name;", True, "ok"),
        ("SELECT name, nmae FROM customers", False, "no such column: nmae"),
        ("SELECT name FROM customer", False, "no such table: customer"),
        ("SELECT 1; SELECT 2;", False, "more than one statement"),
        ("SELECT name FROM customers; -- trailing comment", True, "ok"),
        ("DELETE FROM orders WHERE status = 'cancelled'", True, "ok"),
        # Overflows only when run: compiling alone succeeds.
        ("SELECT abs(-9223372036854775807 - 1) FROM customers", True, "ok"),
        ("EXPLAIN QUERY PLAN SELECT * FROM orders", True, "ok"),
        ("PRAGMA table_info(customers)", False, "PRAGMA"),
        ("ATTACH DATABASE 'other.db' AS other", False, "ATTACH"),
    ],
)
def test_sql_against_the_shop_fixture(query: str, valid: bool, detail: str) -> None:
    ok, why = syntax_valid(query, "sql", fixture_sql=SHOP)
    assert ok is valid
    assert detail in why


class _KeptOpen(sqlite3.Connection):
    """A connection that outlives syntax_valid's close(), to look at the data afterwards."""

    def close(self) -> None:
        pass

    def release(self) -> None:
        super().close()


def test_drop_table_compiles_but_does_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    kept: list[_KeptOpen] = []
    connect = sqlite3.connect

    def keep(*args: Any, **kwargs: Any) -> _KeptOpen:
        conn = connect(*args, factory=_KeptOpen, **kwargs)
        kept.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", keep)
    assert syntax_valid("DROP TABLE customers", "sql", fixture_sql=SHOP) == (True, "ok")
    assert syntax_valid("DELETE FROM customers", "sql", fixture_sql=SHOP) == (True, "ok")
    monkeypatch.undo()
    assert len(kept) == 2
    for conn in kept:
        conn.set_authorizer(None)
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (28,)
        conn.release()


def test_sql_pragma_does_not_act_while_compiling() -> None:
    # SQLite applies this pragma (process-wide) during compilation: it must be refused first.
    probe = sqlite3.connect(":memory:")
    before = probe.execute("PRAGMA soft_heap_limit").fetchone()
    ok, why = syntax_valid("PRAGMA soft_heap_limit = 12345", "sql", fixture_sql=SHOP)
    assert not ok and "PRAGMA" in why
    assert probe.execute("PRAGMA soft_heap_limit").fetchone() == before
    probe.close()


def test_bad_fixture_is_the_items_fault() -> None:
    with pytest.raises(ValueError, match="fixture SQL"):
        syntax_valid("SELECT 1", "sql", fixture_sql="CREATE TABLE (")


def test_javascript_parsers_per_thread() -> None:
    codes = [(JS_ADD, True), ("let x = ", False)] * 50
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: syntax_valid(c[0], "javascript")[0], codes))
    assert results == [valid for _, valid in codes]


def test_unsupported_languages() -> None:
    from tunegate.score import CannotRun

    # No check for the language: not applicable. A grammar that could be installed but is not:
    # the metric cannot run (an evaluation that asked for it is incomplete).
    with pytest.raises(Unsupported, match="no syntax check for 'rust'"):
        syntax_valid("fn main() {}", "rust")
    if importlib.util.find_spec("tree_sitter_typescript") is None:
        with pytest.raises(CannotRun, match="TypeScript"):
            syntax_valid("const x: number = 1;", "typescript")
