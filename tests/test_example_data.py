"""The example experiment: deterministic, paired, and every reference passes its own tests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from conftest import EXAMPLE, REPO

from tunegate.data.example import generate
from tunegate.data.items import load_items
from tunegate.data.select import select
from tunegate.plan import DataSelection


def test_checked_in_example_is_what_the_generator_writes() -> None:
    control, experiment = generate(seed=0)
    assert load_items(EXAMPLE / "data" / "control.jsonl") == control
    assert load_items(EXAMPLE / "data" / "experiment.jsonl") == experiment


def test_tiny_llama_corpus_is_the_example_and_micro_texts() -> None:
    """The embedded model's tokenizer corpus is frozen as package data (so `models` imports no
    data): it must still be what the generators give, or tiny-llama trains on stale texts."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.tiny_corpus", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_arms_differ_only_in_prompt_and_metadata() -> None:
    control, experiment = generate(seed=0)
    assert [c.id for c in control] == [e.id for e in experiment]
    for c, e in zip(control, experiment, strict=True):
        assert (c.completion, c.tests, c.scenario) == (e.completion, e.tests, e.scenario)
        assert e.prompt.startswith(c.prompt) and e.metadata and not c.metadata


def test_references_pass_and_bugs_fail() -> None:
    from tunegate.evaluate.metrics import Context

    control, _ = generate(seed=0)
    assert all(item.tests for item in control)
    # Through the evaluation's own path (the sandbox's pre-warmed workers, in parallel).
    bugfix = [i for i in control if i.scenario == "bugfix"]
    jobs = [("python", i.completion, i.tests or "") for i in control]
    jobs += [("python", i.prompt.split("\n", 1)[1], i.tests or "") for i in bugfix]
    verdicts = [r.verdict for r in Context(timeout_s=10).execute(jobs)]
    references, bugs = verdicts[: len(control)], verdicts[len(control) :]
    assert [i.id for i, v in zip(control, references, strict=True) if v != "PASS"] == []
    assert [i.id for i, v in zip(bugfix, bugs, strict=True) if v != "FAIL"] == []


def test_split_is_pinned() -> None:
    """Same seed → same split on every machine (sha256 ordering, not Python's hash)."""
    control, _ = generate(seed=0)
    sel = select(control, DataSelection(selection="all", test_per_scenario=15), seed=42)
    digest = hashlib.sha256("|".join(sel.train + sel.val + sel.test).encode()).hexdigest()
    assert (len(sel.train), len(sel.val), len(sel.test)) == (168, 36, 30)
    assert not set(sel.train) & set(sel.test)
    assert digest[:16] == PINNED_SPLIT


PINNED_SPLIT = "15d6f6b20dc91a0e"


def test_init_writes_the_example(tmp_path: Path) -> None:
    from conftest import run_cli

    result = run_cli("init", str(tmp_path / "new"))
    assert result.returncode == 0
    assert (tmp_path / "new" / "tunegate.yaml").read_text() == (
        EXAMPLE / "tunegate.yaml"
    ).read_text()
    again = run_cli("init", str(tmp_path / "new"))
    assert again.returncode == 2 and "already exists" in again.stderr
