"""Real answers of an instruct model, frozen as test fixtures for `tunegate.evaluate.extract`.

SmolLM2-135M-Instruct answers HumanEval-derived prompts the way instruct models do: prose around
a fenced block, several blocks, no fence, cut off at the token limit, example calls after the
function. This asks it (greedy, its chat template, stop at EOS) and writes one JSON file per arm
under tests/fixtures/smollm2/: each answer with its prompt and the extraction a person checked.

    python -m tools.smollm2_fixtures /path/to/SmolLM2-135M-Instruct   # needs torch, transformers

An answer that did not change keeps its checked `expected`; a new one gets the extractor's
output and `"reviewed": false`, which the tests refuse until a person has looked at it and set
`expected` (and `reviewed`) by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tunegate.data.items import load_items as load_arm
from tunegate.evaluate.extract import extract
from tunegate.evaluate.metrics import Case, Context, metric

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src/tunegate/resources/seed-scenarios/data"
OUT = ROOT / "tests/fixtures/smollm2"

# HumanEval-derived items spread over the set, in both prompt styles (control: the bare
# prompt, experiment: with metadata lines); 23, as many as a slow CPU answers in a few minutes.
HUMANEVAL_IDS = {
    "control": [f"python-he{n:03d}" for n in range(0, 164, 12)],
    "experiment": [f"python-he{n:03d}" for n in range(6, 108, 12)],
}

# Prompts that provoke what the HumanEval ones may not: several blocks, prose with unfenced
# code, other languages.
HANDMADE: list[dict[str, Any]] = [
    {
        "id": "hand-two-versions",
        "language": "python",
        "entry_point": "is_palindrome",
        "prompt": "Write a Python function is_palindrome(s) that ignores case and spaces. "
        "Show two different implementations, each in its own code block, then show how to "
        "call it.",
    },
    {
        "id": "hand-no-fence",
        "language": "python",
        "entry_point": "add",
        "prompt": "Write a Python function add(a, b) returning the sum. Do not use markdown "
        "code fences; write the code as plain text, then explain it.",
    },
    {
        "id": "hand-helper",
        "language": "python",
        "entry_point": "word_count",
        "prompt": "Write a Python function word_count(text) that returns a dict mapping each "
        "word to how often it occurs. First show the imports you need in one code block, then "
        "the function in another code block, then an example with print.",
    },
    {
        "id": "hand-js",
        "language": "javascript",
        "entry_point": "sumArray",
        "prompt": "Write a JavaScript function sumArray(arr) that returns the sum of the "
        "numbers in arr. Explain it briefly.",
    },
    {
        "id": "hand-sql",
        "language": "sql",
        "entry_point": None,
        "prompt": "Write an SQL query that returns the names of all employees in the table "
        "employees(name, salary) whose salary is above 50000, highest salary first.",
    },
]


def load_items(arm: str) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (DATA / f"{arm}.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows}


def prompts() -> dict[str, list[dict[str, Any]]]:
    """Per fixture file, the prompts to answer."""
    out: dict[str, list[dict[str, Any]]] = {"control": [], "handmade": HANDMADE, "experiment": []}
    experiment = load_items("experiment")
    for arm, ids in HUMANEVAL_IDS.items():
        items = load_items(arm)
        for id_ in ids:
            entry = experiment[id_]["metadata"]["entry_point"]
            prompt = items[id_]["prompt"]
            out[arm].append(
                {"id": id_, "language": "python", "entry_point": entry, "prompt": prompt}
            )
    return out


def record_verdicts(name: str, fixtures: list[dict[str, Any]]) -> None:
    """The HumanEval answers' verdicts against their tests, as the metric scores them."""
    if name not in ("control", "experiment"):
        return
    items = {i.id: i for i in load_arm(DATA / f"{name}.jsonl")}
    cases = [Case(items[f["id"]], f["answer"]) for f in fixtures]
    scores = metric("functional_correctness").score(cases, Context())
    for f, score in zip(fixtures, scores, strict=True):
        f["verdict"] = score.detail.split(" ")[0]


def write(path: Path, fixtures: list[dict[str, Any]]) -> None:
    record_verdicts(path.stem, fixtures)
    path.write_text(json.dumps(fixtures, indent=1, ensure_ascii=False) + "\n")


def refresh() -> int:
    for path in sorted(OUT.glob("*.json")):
        fixtures = json.loads(path.read_text())
        for f in fixtures:
            if not f.get("reviewed", False):
                got = extract(f["answer"], language=f["language"], entry_point=f["entry_point"])
                f["expected"] = got.code
        write(path, fixtures)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.smollm2_fixtures", description=__doc__)
    parser.add_argument("model", type=Path, nargs="?", help="the SmolLM2-135M-Instruct directory")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--only", help="regenerate only this file (control/experiment/handmade)")
    parser.add_argument(
        "--missing", action="store_true", help="keep the answers there are, ask only for new ones"
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="no model: recompute `expected` of the answers not yet reviewed (after a change "
        "to the extractor)",
    )
    args = parser.parse_args()
    if args.refresh:
        return refresh()
    if args.model is None:
        parser.error("the model directory is required (or --refresh)")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    OUT.mkdir(parents=True, exist_ok=True)
    for name, todo in prompts().items():
        if args.only and name != args.only:
            continue
        path = OUT / f"{name}.json"
        old = {f["id"]: f for f in json.loads(path.read_text())} if path.exists() else {}
        fixtures = []
        for p in todo:
            if args.missing and p["id"] in old:
                fixtures.append(old[p["id"]])
                continue
            chat = [{"role": "user", "content": p["prompt"]}]
            ids: Any = tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            start = time.monotonic()
            with torch.no_grad():
                out = model.generate(
                    **ids,
                    do_sample=False,
                    max_new_tokens=args.max_new_tokens,
                    eos_token_id=eos,
                    pad_token_id=eos,
                )
            new = out[0, ids["input_ids"].shape[1] :]
            finish = "eos" if len(new) and int(new[-1]) == eos else "length"
            answer = str(tokenizer.decode(new, skip_special_tokens=True))
            fixture = {**p, "finish": finish, "answer": answer}
            prev = old.get(p["id"])
            if prev is not None and prev["answer"] == answer and prev.get("reviewed", False):
                fixture.update(expected=prev["expected"], reviewed=True)
            else:
                got = extract(answer, language=p["language"], entry_point=p["entry_point"])
                fixture.update(expected=got.code, reviewed=False)
            fixtures.append(fixture)
            took = time.monotonic() - start
            print(f"{name} {p['id']}: {len(new)} tokens, {finish}, {took:.1f} s", file=sys.stderr)
            # Written as it goes: a slow machine's hour of answers survives an interruption.
            path.write_text(json.dumps(fixtures, indent=1, ensure_ascii=False) + "\n")
        write(path, fixtures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
