"""Forecast quality: the example ladder's production stage, forecast from the stages before it
(tunegate.forecast, from measured seconds per trained sample), then run and timed.

Runs `tunegate run` on a fresh copy of the example (all five stages, tiny-llama on this
machine), then reads from state.json the forecast made after each measured stage and the
production stage's actual wall time, and reports each forecast's error.

    python bench/forecast_error.py
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main() -> None:
    tunegate = str(Path(sys.executable).with_name("tunegate"))
    with tempfile.TemporaryDirectory(prefix="tunegate-forecast-") as tmp:
        exp = Path(tmp) / "exp"
        shutil.copytree(REPO / "examples" / "metadata-experiment", exp)
        run = subprocess.run(
            [tunegate, "run", str(exp / "tunegate.yaml")], capture_output=True, text=True
        )
        state = json.loads((exp / "runs" / "metadata-experiment" / "state.json").read_text())
    stages = state["stages"]
    target = "production"
    actual_h = stages[target]["seconds"] / 3600
    rows = []
    for measured_after, ahead in state.get("forecasts", {}).items():
        if target not in ahead:
            continue
        f = ahead[target]
        rows.append(
            {
                "forecast after": measured_after,
                "forecast_min": f["hours"] * 60,
                "interval_min": [f["low_hours"] * 60, f["high_hours"] * 60],
                "actual_min": actual_h * 60,
                "error": (f["hours"] - actual_h) / actual_h,
                "inside_interval": f["low_hours"] <= actual_h <= f["high_hours"],
                "plan_estimate_min": f["estimate_hours"] * 60,
            }
        )
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "ladder_exit_code": run.returncode,
        "production_actual_min": actual_h * 60,
        "forecasts": rows,
    }
    print(json.dumps(report, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "forecast_error.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
