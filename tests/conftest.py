"""Shared fixtures: one tiny-llama build per session, example experiments in temporary dirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "metadata-experiment"
TUNEGATE = str(Path(sys.executable).with_name("tunegate"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build tiny-llama once per session, away from the user's ~/.cache; never touch a hub."""
    os.environ["TUNEGATE_CACHE"] = str(tmp_path_factory.mktemp("tunegate-cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example experiment; returns its plan file."""
    target = tmp_path / "exp"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("runs"))
    return target / "tunegate.yaml"


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the installed `tunegate` command, as a user would."""
    return subprocess.run(
        [TUNEGATE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
