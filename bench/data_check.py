"""How long the data checks take on 10,000 items, against a naive baseline, on 2 cores.

Generates 10,000 synthetic items (deterministic: seeded, with planted exact and near duplicates
and a few over-long samples), writes them as JSONL, then measures, pinned to 2 CPU cores:

  1. in process, imports excluded: the work of `tunegate data check-file` on a 70/30 split —
     load + validate the JSONL, split, leakage of the 30 % into the 70 % (exact + near duplicates,
     inverted index with prefix and positional filters), token lengths with tiny-llama's tokenizer
     (`encode_like_trl`, batched) — against the baseline: the same load and split, leakage by
     comparing every test item with every training item (the same shingle sets, so only the
     join differs; timed on a 10 % sample of the test items and scaled up ×10), and token
     lengths through TRL's own `SFTTrainer` dataset preparation (`datasets.map`, per example).
     The baseline's leaks on its sample must equal ours on the same items.
  2. whole processes, imports included (and the two tokenizer worker processes they start):
     the `check-file` and `check` commands on the 10,000 items (`check` on a plan over a
     control arm and a derived experiment arm of 10,000 items each, default ladder). Through
     `tunegate data` when the sub-app is registered, else the same Typer app called directly.

Medians of --runs runs each, interleaved. No test asserts a timing.

Usage: python bench/data_check.py [--items 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SCENARIOS = ("python", "bugfix", "sql", "express-api", "react-components")
VERBS = [
    "parse",
    "load",
    "merge",
    "split",
    "count",
    "find",
    "filter",
    "sort",
    "group",
    "scale",
    "clamp",
    "format",
    "render",
    "sum",
]
NOUNS = [
    "items",
    "users",
    "rows",
    "orders",
    "names",
    "scores",
    "prices",
    "dates",
    "tokens",
    "events",
    "pairs",
    "words",
    "files",
]
ADJECTIVES = [
    "valid",
    "empty",
    "sorted",
    "unique",
    "recent",
    "active",
    "large",
    "small",
    "nested",
    "cached",
]
STATEMENTS = (
    "{v} = {a} + {b}",
    "{v} = [x for x in {a} if x > {n}]",
    "{v} = sorted({a}, key=len)",
    "if {a} is None:\n        return {n}",
    "{v} = {{k: {b} for k in {a}}}",
    "for x in {a}:\n        {v} += x * {n}",
    "{v} = max({a}, default={n})",
    "{v} = {a}[{n}:] + {b}[:{n}]",
)


def synthetic_items(n: int, seed: int = 0) -> list[dict[str, object]]:
    """`n` items: varied functions and descriptions; 1 % duplicates of earlier items with
    whitespace, case and comments changed, 1 % with one identifier renamed, 0.5 % over-long."""
    rng = random.Random(seed)
    items: list[dict[str, object]] = []
    for k in range(n):
        scenario = SCENARIOS[k % len(SCENARIOS)]
        if k > 100 and k % 100 == 7:  # exact duplicate after normalization
            src = items[rng.randrange(k - 50)]
            prompt = str(src["prompt"]).upper().replace(" ", "  ")
            completion = str(src["completion"]).replace("\n", "  # note\n", 1)
        elif k > 100 and k % 100 == 13:  # near duplicate: one name changed
            src = items[rng.randrange(k - 50)]
            prompt = str(src["prompt"])
            completion = str(src["completion"]).replace("def ", "def my_", 1)
        else:
            verb, noun, adj = rng.choice(VERBS), rng.choice(NOUNS), rng.choice(ADJECTIVES)
            a, b, v = rng.sample(["xs", "ys", "data", "acc", "out", "rest", "head", "tail"], 3)
            body_len = 60 if k % 200 == 11 else rng.randint(1, 6)
            body = "\n    ".join(
                rng.choice(STATEMENTS).format(v=v, a=a, b=b, n=rng.randint(0, 99))
                for _ in range(body_len)
            )
            prompt = (
                f"Write a function that takes {a} and {b}, {verb}s the {adj} {noun} "
                f"and returns {v}; keep it under {rng.randint(5, 40)} lines.\n"
            )
            completion = f"def {verb}_{adj}_{noun}({a}, {b}):\n    {body}\n    return {v}\n"
        items.append(
            {
                "id": f"syn-{k:05d}",
                "scenario": scenario,
                "prompt": prompt,
                "completion": completion,
                "metadata": {"intent": f"{scenario} task {k}", "entry_point": f"f{k}"},
            }
        )
    return items


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def naive_leaks(train: list, test: list, threshold: float) -> dict[str, str]:
    """Every test item against every training item: exact text, else the best Jaccard."""
    from tunegate.data.checks import LEAKAGE_NGRAM, _item_text, shingles

    train_text = [_item_text(i) for i in train]
    train_sets = [shingles(t, LEAKAGE_NGRAM) for t in train_text]
    found: dict[str, str] = {}
    for item in test:
        text = _item_text(item)
        s = shingles(text, LEAKAGE_NGRAM)
        best, best_id = -1.0, None
        for other, other_text, other_set in zip(train, train_text, train_sets, strict=True):
            if text == other_text:
                best_id = other.id
                break
            common = len(s & other_set)
            score = common / (len(s) + len(other_set) - common) if s else 0.0
            if score >= threshold and score > best:  # ties: the first training item
                best, best_id = score, other.id
        if best_id is not None:
            found[item.id] = best_id
    return found


def split(items: list) -> tuple[list, list]:
    from tunegate.data.select import select
    from tunegate.plan import DataSelection

    sel = select(items, DataSelection(selection="all", split=(0.7, 0.0, 0.3)), seed=42)
    by_id = {i.id: i for i in items}
    return [by_id[i] for i in sel.train], [by_id[i] for i in sel.test]


@contextmanager
def _clock(times: dict[str, float], key: str, scale: float = 1.0) -> Iterator[None]:
    """Time a block into times[key], after a full collection: one measurement must not pay
    for the garbage of the one before."""
    gc.collect()
    started = time.perf_counter()
    yield
    times[key] = (time.perf_counter() - started) * scale


def ours(path: Path, tokenizer: object, max_length: int) -> dict[str, float]:
    from tunegate.data.checks import encode_like_trl, leakage, token_lengths
    from tunegate.data.items import load_items

    times: dict[str, float] = {}
    with _clock(times, "load + validate + split"):
        items = load_items(path)
        train, test = split(items)
    with _clock(times, "leakage"):
        leakage(train, test)
    with _clock(times, "token lengths"):
        token_lengths(items, None, max_length, encoded=encode_like_trl(items, tokenizer))
    return times


def baseline(path: Path, tokenizer: object, sample: int) -> dict[str, float]:
    from tunegate.data.checks import LEAKAGE_THRESHOLD, _trl_prepare, find_leaks
    from tunegate.data.items import load_items

    times: dict[str, float] = {}
    with _clock(times, "load + validate + split"):
        items = load_items(path)
        train, test = split(items)
    picked = test[::sample]
    with _clock(times, "leakage", scale=len(test) / len(picked)):
        naive = naive_leaks(train, picked, LEAKAGE_THRESHOLD)
    indexed = {x.test_id: x.train_id for x in find_leaks(train, picked, LEAKAGE_THRESHOLD)}
    if naive != indexed:
        raise SystemExit(f"leakage disagrees with the naive baseline: {naive} vs {indexed}")
    with _clock(times, "token lengths"):
        prepared = _trl_prepare(items, tokenizer, None)
        sorted(len(row["input_ids"]) for row in prepared)
    return times


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if result.returncode not in (0, 1):  # 1: a check failed (the planted long items)
        raise SystemExit(f"{cmd} failed ({result.returncode}):\n{result.stderr}")
    return elapsed


def data_command(*args: str) -> list[str]:
    tunegate = str(Path(sys.executable).with_name("tunegate"))
    if subprocess.run([tunegate, "data", "--help"], capture_output=True).returncode == 0:
        return [tunegate, "data", *args]
    # Not registered yet: the sub-app on its own (tunegate.cli.common sets the environment).
    code = (
        "import sys; from tunegate.cli.data import data_app; "
        "data_app(sys.argv[1:], prog_name='tunegate data')"
    )
    return [sys.executable, "-c", code, *args]


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def show(label: str, values: list[float]) -> str:
    each = ", ".join(f"{v:.2f}" for v in values)
    return f"{label}: median {statistics.median(values):.2f} s ({each})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sample", type=int, default=10, help="baseline: every Nth test item")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cores)  # children inherit it
    from transformers import AutoTokenizer

    from tunegate.data.derive import derive_experiment
    from tunegate.data.items import load_items
    from tunegate.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-llama"))
    max_length = 512
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        control = root / "control.jsonl"
        write_jsonl(control, synthetic_items(args.items))
        experiment = derive_experiment(load_items(control), "{prompt}{metadata:# }")
        (root / "experiment.jsonl").write_text(
            "".join(i.model_dump_json() + "\n" for i in experiment), encoding="utf-8"
        )
        plan = root / "tunegate.yaml"
        plan.write_text(
            "name: bench\narms:\n"
            "  control: {role: control, data: control.jsonl}\n"
            "  experiment: {role: experiment, data: experiment.jsonl}\n"
            "pilot_scenario: python\n"
        )
        ours(control, tokenizer, max_length)  # warm-up: imports (trl for the baseline too)
        baseline(control, tokenizer, args.sample * 10)
        ours_runs, base_runs, file_runs, plan_runs = [], [], [], []
        for _ in range(args.runs):
            ours_runs.append(ours(control, tokenizer, max_length))
            base_runs.append(baseline(control, tokenizer, args.sample))
            file_runs.append(timed(data_command("check-file", str(control), "--json")))
            plan_runs.append(timed(data_command("check", str(plan), "--json")))
        found = json.loads(
            subprocess.run(
                data_command("check-file", str(control), "--json"), capture_output=True, text=True
            ).stdout
        )
    o, b = median_of(ours_runs), median_of(base_runs)
    print(
        f"{args.items} items, {len(cores)} cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, medians of {args.runs} runs"
    )
    print(f"{'in process, imports excluded':<28} {'tunegate':>9} {'baseline':>9} {'ratio':>7}")
    for key in o:
        print(f"{key:<28} {o[key]:>8.2f}s {b[key]:>8.2f}s {b[key] / o[key]:>6.1f}x")
    total_o, total_b = sum(o.values()), sum(b.values())
    print(f"{'total':<28} {total_o:>8.2f}s {total_b:>8.2f}s {total_b / total_o:>6.1f}x")
    print(
        "baseline: leakage = every test item against every training item (sampled 1 in "
        f"{args.sample}, scaled up); token lengths = TRL's SFTTrainer dataset preparation"
    )
    how = "tunegate data" if data_command()[0].endswith("tunegate") else "the data sub-app"
    print(f"whole processes, via {how}:")
    print(show("whole process: data check-file (10k items)", file_runs))
    print(show("whole process: data check PLAN (2 arms x 10k items, default ladder)", plan_runs))
    checks = {c["name"]: c for c in found["checks"]}
    print(
        "check-file found: "
        + "; ".join(f"{name}: {c['verdict']} ({c['summary']})" for name, c in checks.items())
    )


if __name__ == "__main__":
    main()
