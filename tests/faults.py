"""What the fault tests share: a climb in the background, stopped at a point to break something."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from conftest import TUNEGATE

# The control arm's first checkpoint of the example's micro stage (save_steps 5), under the run
# directory: once its trainer_state.json is written, training is under way and its steps logged.
FIRST_CHECKPOINT = Path("stage-1-micro") / "control" / "checkpoints" / "checkpoint-5"


def climb_until_first_checkpoint(plan: Path, run_dir: Path) -> subprocess.Popen[str]:
    """`tunegate run PLAN --until 1` in the background, returned once the control arm has written
    its first whole checkpoint."""
    climb = subprocess.Popen(
        [TUNEGATE, "run", str(plan), "--until", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    deadline = time.monotonic() + 600
    while not (run_dir / FIRST_CHECKPOINT / "trainer_state.json").is_file():
        assert climb.poll() is None and time.monotonic() < deadline, climb.communicate()
        time.sleep(0.02)
    return climb
