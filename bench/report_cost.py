"""What the report costs: its size against the 2 MB limit, and the time to write it against the
climb it reports on (the ladder writes it after every stage).

    python bench/report_cost.py                       # climbs the example ladder first (~2 min)
    python bench/report_cost.py runs/metadata-experiment --rounds 7

Times `tunegate.report.write` (build, five figures, HTML and Markdown) in this process: the
first call pays matplotlib's and Jinja2's imports, the rest are warm; the median of the warm
calls is compared with the climb's wall time (the stages' `seconds` in `state.json`), which is
the baseline the report adds to.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "metadata-experiment"


def climb(work: Path) -> Path:
    target = work / "exp"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("runs"))
    tunegate = str(Path(sys.executable).with_name("tunegate"))
    # The climb's own output stays off stdout, which carries this script's JSON.
    subprocess.run([tunegate, "run", "--quiet"], cwd=target, check=True, stdout=subprocess.DEVNULL)
    return target / "runs" / "metadata-experiment"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or climb(Path(tmp))
        started = time.perf_counter()
        from tunegate.report import write

        paths = write(run_dir)
        first = time.perf_counter() - started
        warm = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            write(run_dir)
            warm.append(time.perf_counter() - started)
        state = json.loads((run_dir / "state.json").read_text())
        climb_s = sum(float(r.get("seconds") or 0) for r in state["stages"].values())
        plots = sorted((run_dir / "report" / "plots").glob("*.svg"))
        result = {
            "stages": len(state["stages"]),
            "html_bytes": paths["html"].stat().st_size,
            "md_bytes": paths["md"].stat().st_size,
            "plots": {p.name: p.stat().st_size for p in plots},
            "limit_bytes": 2 * 1024 * 1024,
            "first_write_s": first,
            "warm_write_s": warm,
            "warm_median_s": statistics.median(warm),
            "climb_s": climb_s,
            "share_of_climb": statistics.median(warm) * len(state["stages"]) / climb_s,
        }
    print(json.dumps(result, indent=2))
    (HERE / "results" / "report_cost.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
