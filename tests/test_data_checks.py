"""Data checks, derive and the `tunegate data` commands, with tiny-llama's real tokenizer and TRL's
real preparation. Nothing here trains."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE, run_cli

from tunegate.data.checks import (
    LEAKAGE_NGRAM,
    LEAKAGE_THRESHOLD,
    TokenWorker,
    _trl_prepare,
    duplicates,
    encode_like_trl,
    eos_check,
    find_leaks,
    label_mask_preview,
    leakage,
    normalize,
    pairing,
    prompt_boundary,
    shingles,
    similar_pairs,
    token_lengths,
)
from tunegate.data.derive import derive_experiment
from tunegate.data.example import generate
from tunegate.data.items import Item, load_items
from tunegate.errors import UserError


@pytest.fixture(autouse=True)
def _serial_tokenizers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches tokenized here would start the tokenizers' thread pool, and every later fork of
    this process (the CLI tests' subprocesses) would print a warning into their stderr."""
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer(_isolated_cache: None) -> Any:
    from transformers import AutoTokenizer

    from tunegate.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("tiny-llama"))


def item(item_id: str, prompt: str, completion: str, **fields: Any) -> Item:
    return Item(id=item_id, scenario="s", prompt=prompt, completion=completion, **fields)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b)


# --- leakage --------------------------------------------------------------------------------

DIFF = item(
    "train-diff",
    "Write a function that returns the absolute difference of x and y, rounded down.\n",
    "def diff(x, y):\n    return int(abs(x - y))\n",
)
GREET = item("train-greet", "Write a greeting function.\n", "def greet(name):\n    print(name)\n")


def test_leakage_finds_exact_and_near_duplicates_and_not_unrelated() -> None:
    exact = item(
        "test-exact",
        "WRITE a function  that returns the absolute difference of x and y, rounded down.",
        "def diff(x, y):  # the distance\n  return int(abs(x-y))",
    )
    near = item("test-near", DIFF.prompt, DIFF.completion.replace("diff", "distance"))
    unrelated = item("test-other", "Sort a list of names.\n", "def order(names):\n    ...\n")
    leaks = {x.test_id: x for x in find_leaks([GREET, DIFF], [exact, near, unrelated])}
    assert set(leaks) == {"test-exact", "test-near"}
    assert leaks["test-exact"].exact and leaks["test-exact"].train_id == "train-diff"
    assert not leaks["test-near"].exact and leaks["test-near"].train_id == "train-diff"
    expected = jaccard(
        shingles(normalize(DIFF.prompt + "\n" + DIFF.completion, "python")),
        shingles(normalize(near.prompt + "\n" + near.completion, "python")),
    )
    assert LEAKAGE_THRESHOLD <= expected < 1
    assert leaks["test-near"].similarity == pytest.approx(expected)

    result = leakage([GREET, DIFF], [exact, near, unrelated])
    assert result.verdict == "fail"  # an exact duplicate: the test item was trained on
    assert any("'test-exact'" in m and "'train-diff'" in m for m in result.messages)
    assert leakage([GREET, DIFF], [near, unrelated]).verdict == "warn"  # near only
    assert leakage([GREET, DIFF], [unrelated]).verdict == "ok"


def test_normalize_drops_comments_by_language_case_and_whitespace() -> None:
    assert normalize("def f():  # note\n    RETURN x-1", "python") == "def f ( ) : return x - 1"
    assert normalize("f(); // note\n/* block\n */ g();", "javascript") == "f ( ) ; g ( ) ;"
    assert normalize("SELECT 1 -- note\nFROM t", "sql") == "select 1 from t"
    assert normalize("Issue #42  Here", "text") == "issue # 42 here"  # unknown language: kept


def best_match(candidates: list[frozenset[str]], probe: frozenset[str]) -> tuple[float, int]:
    """The highest Jaccard and, among equals, the lowest index: by comparing every pair."""
    score, negative_index = max((jaccard(c, probe), -i) for i, c in enumerate(candidates))
    return score, -negative_index


def test_similar_pairs_is_exact() -> None:
    """The filtered index finds exactly what comparing every pair finds, joins and self-joins."""
    rng = random.Random(7)
    vocab = [f"t{k}" for k in range(40)]
    for _ in range(20):
        base = [frozenset(rng.sample(vocab, rng.randint(1, 20))) for _ in range(50)]
        # Perturbed copies (one token swapped): many pairs sit near any threshold.
        probes = [frozenset([*list(s)[1:], rng.choice(vocab)]) for s in base[:30]]
        probes += [frozenset(rng.sample(vocab, 8)) for _ in range(10)]
        for threshold in (0.3, 0.5, 0.7, LEAKAGE_THRESHOLD, 0.9, 1.0):
            expected = []
            for j, probe in enumerate(probes):
                score, i = best_match(base, probe)
                if score >= threshold:
                    expected.append((j, i, score))
            found = similar_pairs(base, probes, threshold)
            assert [(j, i) for j, i, _ in found] == [(j, i) for j, i, _ in expected]
            assert [s for *_, s in found] == pytest.approx([s for *_, s in expected])
            expected_self = []
            for j in range(1, len(base)):
                score, i = best_match(base[:j], base[j])
                if score >= threshold:
                    expected_self.append((j, i))
            assert [(j, i) for j, i, _ in similar_pairs(base, None, threshold)] == expected_self


def test_duplicates_within_a_file() -> None:
    copy = item("copy", DIFF.prompt.upper(), DIFF.completion)
    result = duplicates([DIFF, GREET, copy])
    assert result.verdict == "warn"
    assert result.data["exact"] == [{"id": "copy", "duplicate_of": "train-diff"}]
    assert duplicates([DIFF, GREET]).verdict == "ok"


# --- pairing --------------------------------------------------------------------------------


def test_pairing_reports_every_difference() -> None:
    control, experiment = generate(seed=0)
    assert pairing(control, experiment).verdict == "ok"
    changed = [
        experiment[0].model_copy(update={"completion": "x\n", "tests": None}),
        *experiment[1:-1],
        item("extra", "p", "c"),
    ]
    result = pairing(control, changed)
    assert result.verdict == "fail"
    assert result.data["differing"] == {experiment[0].id: ["completion", "tests"]}
    assert result.data["only_control"] == [control[-1].id]
    assert result.data["only_experiment"] == ["extra"]
    assert f"item '{experiment[0].id}': completion, tests differ between arms" in result.messages


# --- tokens ---------------------------------------------------------------------------------


def test_token_counts_are_trls(tokenizer: Any, tmp_path: Path) -> None:
    """What SFTTrainer itself builds, as train/qlora.py configures it: our counts, and the bare
    preparation the checks and the preview use, equal the real trainer's prepared dataset."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from tunegate.models import resolve_model

    control, experiment = generate(seed=0)
    items = control[:40] + experiment[-40:]
    items.append(item("space", "Write: ", "def f():\n    return 1\n"))  # a boundary merge
    max_length = 80
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(resolve_model("tiny-llama")),
        args=SFTConfig(
            output_dir=str(tmp_path),
            max_length=max_length,
            completion_only_loss=True,
            report_to=[],
            bf16=False,
            use_cpu=True,
        ),
        train_dataset=Dataset.from_list(
            [{"prompt": i.prompt, "completion": i.completion} for i in items]
        ),
        processing_class=tokenizer,
    )
    real = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in trainer.train_dataset]
    assert _trl_prepare(items, tokenizer, max_length) == real
    assert len(real) == len(items)  # none dropped at this max_length
    for encoded, row in zip(encode_like_trl(items, tokenizer), real, strict=True):
        masked = sum(label == -100 for label in row["labels"])
        assert min(encoded.tokens, max_length) == len(row["input_ids"]), encoded.id
        assert encoded.prompt_tokens == masked, encoded.id


def test_too_long_samples_are_named(tokenizer: Any) -> None:
    short = item("short", "Write a sum function\n", "def sum(a, b):\n    return a + b\n")
    long = item("long", "Write a sum function\n", "def sum(a, b):\n" + "    x = 1\n" * 40)
    huge_prompt = item("huge-prompt", "Explain. " * 60, "ok\n")
    result = token_lengths([short, long, huge_prompt], tokenizer, max_length=64)
    assert result.verdict == "fail"
    assert [t["id"] for t in result.data["truncated"]] == ["long", "huge-prompt"]
    assert result.messages[0].startswith("item 'long': ")
    assert "completion token(s) and the EOS are cut" in result.messages[0]
    assert "TRL drops the sample" in result.messages[1]
    counts = encode_like_trl([short], tokenizer)[0]
    assert result.data["min"] == counts.tokens
    warned = token_lengths([short, long], tokenizer, max_length=64, on_truncation="warn")
    assert warned.verdict == "warn"
    assert token_lengths([short], tokenizer, max_length=64).verdict == "ok"


def test_prompt_boundary_merge_is_named(tokenizer: Any) -> None:
    merged = item("merged", "Write: ", "def f():\n    return 1\n")
    clean = item("clean", "Write:\n", "def f():\n    return 1\n")
    result = prompt_boundary(encode_like_trl([merged, clean], tokenizer))
    assert result.verdict == "warn"
    assert result.data["items"] == ["merged"]


def test_eos_is_appended_and_trained_by_trl(tokenizer: Any) -> None:
    control, _ = generate(seed=0)
    result = eos_check(control, tokenizer)
    assert result.verdict == "ok", result.messages
    assert result.data["eos_token"] == tokenizer.eos_token == "</s>"
    assert result.data["verified"] == [control[0].id, control[1].id]
    stops_early = item("early", "p\n", "a</s>b\n")
    result = eos_check([*control[:2], stops_early], tokenizer)
    assert result.verdict == "fail"
    assert result.data["eos_inside"] == ["early"]


def test_preview_masks_the_prompt_and_trains_completion_and_eos(tokenizer: Any) -> None:
    sample = item("p1", "Write a max function\n", "def max(a, b):\n    return a if a > b else b\n")
    preview = label_mask_preview(sample, tokenizer, max_length=256)
    statuses = [t.status for t in preview.tokens]
    n_masked = statuses.count("masked")
    assert statuses == ["masked"] * n_masked + ["trained"] * (len(statuses) - n_masked)
    assert "".join(t.text for t in preview.tokens if t.status == "masked") == sample.prompt
    trained = "".join(t.text for t in preview.tokens if t.status == "trained")
    assert trained == sample.completion + tokenizer.eos_token
    assert preview.tokens[-1].id == tokenizer.eos_token_id
    assert not preview.dropped

    cut = label_mask_preview(sample, tokenizer, max_length=n_masked + 2)
    assert [t.status for t in cut.tokens].count("trained") == 2
    assert cut.tokens[-1].status == "cut"  # the EOS is past max_length
    dropped = label_mask_preview(sample, tokenizer, max_length=n_masked)
    assert dropped.dropped and dropped.count("trained") == 0


def test_token_worker_matches_in_process(tokenizer: Any, tmp_path: Path) -> None:
    """The worker processes compute what the same functions compute here."""
    from tunegate.models import resolve_model

    control, experiment = generate(seed=0)
    with TokenWorker(resolve_model("tiny-llama")) as worker:
        worker.submit([control, experiment[:3]])
        (codes, eos), (codes_e, eos_e) = worker.result()
    assert codes == encode_like_trl(control, tokenizer)
    assert codes_e == encode_like_trl(experiment[:3], tokenizer)
    assert eos == eos_check(control, tokenizer)
    assert eos_e.verdict == "ok"

    (tmp_path / "config.json").write_text("{}")  # a model directory without a tokenizer
    with TokenWorker(tmp_path) as worker, pytest.raises(UserError) as info:
        worker.submit([control[:1]])
        worker.result()
    assert str(info.value).startswith(f"model.name: cannot load a tokenizer from {tmp_path}: ")


# --- derive ---------------------------------------------------------------------------------


def test_derive_renders_the_example_experiment_arm() -> None:
    control, experiment = generate(seed=0)
    with_metadata = [
        c.model_copy(update={"metadata": e.metadata})
        for c, e in zip(control, experiment, strict=True)
    ]
    assert derive_experiment(with_metadata, "{prompt}{metadata:# }") == experiment


def test_derive_fields() -> None:
    base = item("d1", "Do it.\n", "ok\n", metadata={"intent": "adds", "n": 3, "tags": ["a", "b"]})
    [derived] = derive_experiment(
        [base],
        "{prompt}[{id}/{scenario}] {metadata[intent]} {metadata[n]:>3} {metadata[tags]} {{x}}",
    )
    assert derived.prompt == 'Do it.\n[d1/s] adds   3 ["a", "b"] {x}'
    assert derived.model_dump(exclude={"prompt"}) == base.model_dump(exclude={"prompt"})
    [block] = derive_experiment([base], "{metadata}{metadata_json}")
    assert block.prompt == 'intent: adds\nn: 3\ntags: ["a", "b"]\n' + json.dumps(base.metadata)


def test_derive_rejects_a_missing_key_naming_item_and_key() -> None:
    items = [item("has", "p", "c", metadata={"intent": "x"}), item("lacks", "p", "c")]
    with pytest.raises(UserError) as info:
        derive_experiment(items, "{prompt} {metadata[intent]}", where="control.jsonl")
    assert str(info.value) == (
        "control.jsonl: item 'lacks': metadata has no key 'intent' "
        "(template field {metadata[intent]}; its keys: none)"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{prompt.upper}", "template: unsupported field {prompt.upper}"),
        ("{}", "template: unsupported field {}"),
        ("{completion}", "template: unsupported field {completion}"),
        ("{metadata[a][b]}", "template: unsupported field {metadata[a][b]}"),
        ("{prompt", "template: expected '}' before end of string"),
    ],
)
def test_derive_rejects_bad_templates(template: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        derive_experiment([item("a", "p", "c")], template)
    assert str(info.value).startswith(message)


# --- the commands (need `app.add_typer(data_app, name="data")` in tunegate.cli) ------------


def assert_clean_error(result: Any, message: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert message in result.stderr, result.stderr


def test_cli_check_plan(example: Path) -> None:
    result = run_cli("data", "check", str(example), "--json", cwd=example.parent)
    assert result.returncode == 0, result.stderr  # the example has near duplicates: warnings
    report = json.loads(result.stdout)
    names = {(c["scope"], c["name"]): c["verdict"] for c in report["checks"]}
    assert names[("arms", "pairing")] == "ok"
    assert names[("control", "eos")] == "ok"
    assert names[("3 pilot / control", "token_lengths")] == "ok"
    assert ("3 pilot / experiment", "leakage") in names
    assert ("1 micro / control", "leakage") not in names  # micro has no test items
    assert report["verdict"] in ("ok", "warn")
    assert not (example.parent / "runs").exists()


def test_cli_check_plan_fails_on_truncation_and_pairing(example: Path) -> None:
    text = example.read_text()
    example.write_text(text.replace("max_length: 256", "max_length: 40"))
    result = run_cli("data", "check", str(example), cwd=example.parent)
    assert result.returncode == 1
    assert "token_lengths" in result.stdout and "FAIL" in result.stdout
    assert "would be truncated" in result.stdout

    experiment = example.parent / "data" / "experiment.jsonl"
    rows = [json.loads(line) for line in experiment.read_text().splitlines()]
    rows[3]["completion"] += "# changed\n"
    experiment.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli("data", "check", str(example), "--json", cwd=example.parent)
    assert result.returncode == 1
    [check] = json.loads(result.stdout)["checks"]  # unpaired arms: nothing else to check
    assert check["data"]["differing"] == {rows[3]["id"]: ["completion"]}


def test_cli_check_plan_follows_the_plan(example: Path) -> None:
    """The experiment arm's `may_differ_in` and each stage's `checks:` policy, as the ladder."""
    text = example.read_text().replace("max_length: 256", "max_length: 40")
    text = text.replace(
        "    data: data/experiment.jsonl\n",
        "    data: data/experiment.jsonl\n    may_differ_in: [completion]\n",
    )
    pilot = "    data: {selection: split, test_per_scenario: 15}\n"
    assert text.count(pilot) == 1
    text = text.replace(pilot, pilot + "    checks: {truncation: warn, leakage: 'off'}\n")
    example.write_text(text)
    experiment = example.parent / "data" / "experiment.jsonl"
    rows = [json.loads(line) for line in experiment.read_text().splitlines()]
    rows[3]["completion"] += "# changed\n"
    experiment.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli("data", "check", str(example), "--json", cwd=example.parent)
    verdicts = {(c["scope"], c["name"]): c["verdict"] for c in json.loads(result.stdout)["checks"]}
    assert verdicts[("arms", "pairing")] == "ok"
    assert verdicts[("3 pilot / control", "token_lengths")] == "warn"
    assert ("3 pilot / control", "leakage") not in verdicts
    assert verdicts[("4 production / control", "token_lengths")] == "fail"
    assert result.returncode == 1


def test_cli_check_file(tmp_path: Path) -> None:
    control = EXAMPLE / "data" / "control.jsonl"
    result = run_cli("data", "check-file", str(control), "--max-length", "40", "--json")
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    too_long = [t["id"] for t in checks["token_lengths"]["data"]["truncated"]]
    assert too_long and all(
        f"item '{i}'" in " ".join(checks["token_lengths"]["messages"]) for i in too_long
    )
    assert checks["eos"]["verdict"] == "ok"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n{oops\n')
    result = run_cli("data", "check-file", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{bad}:1: 'scenario': missing required field" in result.stderr
    assert f"{bad}:2: invalid JSON" in result.stderr


def test_cli_derive(tmp_path: Path) -> None:
    control, experiment = generate(seed=0)
    source = tmp_path / "control.jsonl"
    source.write_text(
        "".join(
            c.model_copy(update={"metadata": e.metadata}).model_dump_json() + "\n"
            for c, e in zip(control, experiment, strict=True)
        )
    )
    out = tmp_path / "experiment.jsonl"
    result = run_cli(
        "data", "derive", str(source), "--template", "{prompt}{metadata:# }", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert load_items(out) == experiment
    result = run_cli("data", "derive", str(source), "-t", "{prompt}", "-o", str(out))
    assert_clean_error(result, "already exists (use --force to overwrite)")

    bare = EXAMPLE / "data" / "control.jsonl"  # no metadata
    target = tmp_path / "never.jsonl"
    result = run_cli(
        "data", "derive", str(bare), "-t", r"{prompt}\n# {metadata[intent]}", "-o", str(target)
    )
    assert_clean_error(result, f"{bare}: item 'python-000': metadata has no key 'intent'")
    assert not target.exists()


def test_cli_micro(tmp_path: Path) -> None:
    from tunegate.data.micro import SEED_MICRO_SAMPLES

    result = run_cli("data", "micro", "--out", str(tmp_path / "micro"))
    assert result.returncode == 0, result.stderr
    for name in ("train.jsonl", "val.jsonl"):
        rows = [json.loads(line) for line in (tmp_path / "micro" / name).read_text().splitlines()]
        assert rows == [{"prompt": p, "completion": c} for p, c in SEED_MICRO_SAMPLES]


def test_cli_preview(example: Path) -> None:
    result = run_cli(
        "data",
        "preview",
        "python-000",
        str(example),
        "--arm",
        "experiment",
        "--plain",
        cwd=example.parent,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("item 'python-000', arm experiment, model tiny-llama")
    statuses = [line.split()[2] for line in lines[1:]]
    assert statuses[0] == "masked" and statuses[-1] == "trained"
    assert lines[-1].endswith("'</s>'")

    result = run_cli("data", "preview", "python-9999", str(example), cwd=example.parent)
    assert_clean_error(result, "no item with id 'python-9999'")


def test_leakage_constants_are_stated() -> None:
    """The report states the n-gram size and threshold it used."""
    result = leakage([GREET], [DIFF])
    assert result.data["ngram"] == LEAKAGE_NGRAM == 3
    assert result.data["threshold"] == LEAKAGE_THRESHOLD == 0.8
    assert f"token {LEAKAGE_NGRAM}-grams" in result.summary
