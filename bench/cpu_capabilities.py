"""The example's climb under each CPU capability torch dispatches to, figures side by side.

The same seeded run gives different numbers on different CPUs (another BLAS kernel, another
vector width, another order of a sum). `ATEN_CPU_CAPABILITY` (and `ONEDNN_MAX_CPU_ISA`) make one
machine run the kernels another would, so this bench climbs the example (`tunegate init`, then
`tunegate run`) once per capability, in the same run, and reports each stage's verdict and
figures. The example is built so that every gate holds with a margin on all of them; this bench
is how that is checked and recorded (docs/benchmarks.md).

Usage: python bench/cpu_capabilities.py [--capabilities default,avx2,avx512] [--out FILE]
Prints a Markdown table on stderr and the JSON record on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

TUNEGATE = str(Path(sys.executable).with_name("tunegate"))
# oneDNN follows ATen's cap where it has one (the reproduction used both together).
ONEDNN = {"default": "SSE41", "avx2": "AVX2"}


def capabilities_here() -> list[str]:
    flags = (
        Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    )
    caps = ["default", "avx2"]
    if re.search(r"\bavx512f\b", flags):
        caps.append("avx512")
    return caps


def climb(capability: str, workdir: Path) -> dict:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "HF_HUB_OFFLINE": "1"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if capability in ONEDNN:
        env["ONEDNN_MAX_CPU_ISA"] = ONEDNN[capability]
    target = workdir / capability
    subprocess.run([TUNEGATE, "init", str(target), "--force"], check=True, capture_output=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [TUNEGATE, "run", "--json"], cwd=target, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    answer = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return record(
        capability, target, env.get("ONEDNN_MAX_CPU_ISA"), proc.returncode, answer, seconds
    )


def record(
    capability: str, target: Path, onednn: str | None, code: int, answer: dict, seconds: float
) -> dict:
    """One climb's figures, from its run directory (`target` holds the plan)."""
    state = json.loads((target / "runs" / "metadata-experiment" / "state.json").read_text())
    stages = []
    for name, record in state["stages"].items():
        row = {"stage": name, "verdict": record.get("verdict"), "seconds": record.get("seconds")}
        for arm, arm_record in (record.get("arms") or {}).items():
            train = arm_record.get("train") or {}
            if train:
                row[f"{arm}_loss"] = [train["losses"][0][1], train["losses"][-1][1]]
                row[f"{arm}_val_loss"] = [train["eval_loss_before"], train["eval_loss_after"]]
        primary = (record.get("comparison") or {}).get("primary")
        if primary:
            row["primary"] = {
                k: primary.get(k)
                for k in ("metric", "n", "control_mean", "experiment_mean", "p_value")
            }
        row["gates"] = [g["evidence"] for g in record.get("gates", [])]
        stages.append(row)
    return {
        "capability": capability,
        "onednn_max_cpu_isa": onednn,
        "machine": state.get("machine"),
        "exit_code": code,
        "answer": answer.get("answer"),
        "seconds": round(seconds, 1),
        "stages": stages,
    }


def climbed(spec: str) -> dict:
    """`CAPABILITY=DIR`: a directory already climbed under that capability (`make demo`'s
    `demo/`, copied), read instead of climbing again."""
    capability, _, directory = spec.partition("=")
    target = Path(directory)
    state = json.loads((target / "runs" / "metadata-experiment" / "state.json").read_text())
    verdicts = [r.get("verdict") for r in state["stages"].values()]
    answer = "GO" if verdicts and all(v == "PASS" for v in verdicts) else "not GO"
    seconds = sum(r.get("seconds") or 0 for r in state["stages"].values())
    env = (state.get("machine") or {}).get("env", {})
    return record(capability, target, env.get("ONEDNN_MAX_CPU_ISA"), 0, {"answer": answer}, seconds)


def table(runs: list[dict]) -> str:
    names = [s["stage"] for s in runs[0]["stages"]]
    head = "| stage | " + " | ".join(r["capability"] for r in runs) + " |"
    lines = [head, "|---|" + "---|" * len(runs)]
    for name in names:
        cells = []
        for r in runs:
            s = next((x for x in r["stages"] if x["stage"] == name), None)
            if s is None:
                cells.append("not run")
                continue
            p = s.get("primary")
            figure = ""
            if p and p.get("control_mean") is not None:
                figure = f" {p['control_mean']:.0%} → {p['experiment_mean']:.0%}"
                if p.get("p_value") is not None:
                    figure += f", p = {p['p_value']:.2g}"
            elif "experiment_loss" in s:
                figure = f" loss {s['experiment_loss'][0]:.2f} → {s['experiment_loss'][1]:.2f}"
            cells.append(f"{s['verdict']}{figure}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| **answer** | " + " | ".join(f"{r['answer']} ({r['seconds']:.0f} s)" for r in runs) + " |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capabilities", default=",".join(capabilities_here()))
    parser.add_argument("--out", type=Path, default=Path("bench/results/cpu_capabilities.json"))
    parser.add_argument(
        "--climbed",
        action="append",
        default=[],
        metavar="CAPABILITY=DIR",
        help="read a directory already climbed under CAPABILITY instead of climbing (repeat)",
    )
    args = parser.parse_args()
    if args.climbed:
        runs = [climbed(spec) for spec in args.climbed]
    else:
        with tempfile.TemporaryDirectory(prefix="tunegate-cpu-") as tmp:
            runs = [climb(cap, Path(tmp)) for cap in args.capabilities.split(",")]
    record = {
        "date": datetime.now(UTC).date().isoformat(),
        "cpu": runs[0]["machine"]["cpu"]
        if runs and runs[0].get("machine")
        else platform.processor(),
        "cores": os.cpu_count(),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(table(runs), file=sys.stderr)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
