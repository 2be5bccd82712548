"""The report: built from a run directory alone, self-contained, rendered by a real browser.

The whole example ladder's report is checked in `test_ladder_e2e.py` (it reuses
`render_in_chromium` from here); these tests cover what a passing run does not show: a failed
stage's recovery actions, a lower-is-better metric in the forest plot, stable output, and bad
input to `tunegate report`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

from tunegate.plan import load_plan
from tunegate.report import build, to_html, to_markdown, write

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless, and unable to reach anything: every host resolves to nothing and every connection
# goes to a closed proxy port, so the page renders only from what it holds.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
]


def render_in_chromium(html: Path, work: Path) -> tuple[str, Path]:
    """The DOM headless Chromium builds from `html`, and a full-width screenshot of it."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make test installs it where it can)")
    work.mkdir(parents=True, exist_ok=True)
    url = html.resolve().as_uri()

    def chromium(*args: str) -> subprocess.CompletedProcess[str]:
        profile = work / f"profile-{len(list(work.glob('profile-*')))}"
        return subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True,
            text=True,
            timeout=120,
        )

    dom = chromium("--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = work / "report.png"
    picture = chromium(f"--screenshot={shot}", "--window-size=1280,1600", "--hide-scrollbars")
    assert picture.returncode == 0 and shot.is_file(), picture.stderr[-2000:]
    return dom.stdout, shot


def assert_not_blank(png: Path) -> None:
    """Real content: many colours, and a good share of the page is not background."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, f"{png}: {len(colours)} colours, a blank or flat page"
    background = max(colours)[0]
    assert 1 - background / (image.width * image.height) > 0.05, f"{png}: mostly background"


def assert_self_contained(html: str) -> None:
    """Nothing to fetch: no scripts, and no src/href/url() reaching outside the page."""
    assert "<script" not in html
    outside = re.findall(
        r"""(?:src|href)\s*=\s*["'](?!#)([^"']+)|url\(\s*["']?(?!#)([^)'"]+)""", html
    )
    assert not outside, f"external references: {outside[:5]}"


def _fake_run(example: Path, state: dict, recovery: list[str] | None = None) -> Path:
    """A run directory as the ladder leaves one: its plan.json and state.json."""
    plan = load_plan(example)
    if recovery:
        plan.stages[2].recovery = recovery
    run_dir = example.parent / "runs" / plan.name
    run_dir.mkdir(parents=True)
    (run_dir / "plan.json").write_text(json.dumps(plan.model_dump(mode="json")))
    (run_dir / "state.json").write_text(json.dumps({"plan_name": plan.name, **state}))
    return run_dir


def _comparison(metric: str, control: float, experiment: float, p: float) -> dict:
    return {
        "metric": metric,
        "n": 15,
        "control_mean": control,
        "experiment_mean": experiment,
        "difference": experiment - control,
        "relative": (experiment - control) / control,
        "relative_ci95": [-0.8, -0.1],
        "ci95": [-0.4, -0.05],
        "test": "paired t",
        "p_value": p,
        "p_adjusted": p,
        "binary": False,
        "d_z": -0.9,
        "notes": [],
    }


def _failed_state() -> dict:
    """A state as tunegate wrote it before its schema was named (tunegate.state/1)."""

    def passed(index: int) -> dict:
        return {"index": index, "hash": "h", "verdict": "PASS", "status": "done", "seconds": 3.0}

    return {
        "stages": {
            "environment": passed(0),
            "micro": passed(1),
            "small": {
                "index": 2,
                "hash": "h",
                "verdict": "FAIL",
                "status": "done",
                "seconds": 40.0,
                "gates": [
                    {
                        "name": "model_saved",
                        "passed": True,
                        "kind": "health",
                        "evidence": "saved, reloaded",
                    },
                    {
                        "name": "evaluation_ran",
                        "passed": False,
                        "kind": "health",
                        "evidence": "control: 3/10 items scored",
                    },
                ],
                "arms": {
                    "control": {"status": "failed", "error": "RuntimeError: CUDA out of memory"}
                },
                "comparison": {
                    "primary": _comparison("functional_correctness", 0.2, 0.5, 0.01),
                    "secondary": {
                        "vulnerability": _comparison("vulnerability", 5.0, 2.0, 0.001),
                        "coherence": {
                            **_comparison("coherence", 1.0, 1.0, 1.0),
                            "n": 0,
                            "control_mean": float("nan"),  # as stats leaves an empty metric
                            "experiment_mean": float("nan"),
                            "notes": ["no paired items"],
                        },
                    },
                    "per_scenario": {},
                    "not_run": {"coherence": "no judge configured"},
                },
            },
        },
        "plan_hash": "abc",
        "created": "2026-11-26T00:00:00+00:00",
    }


def test_a_failed_stage_shows_its_evidence_and_the_recovery_actions(example: Path) -> None:
    recovery = ["Check the scorer's logs", "Re-run stage 2 with --from 2"]
    run_dir = _fake_run(example, _failed_state(), recovery)
    report = build(run_dir)
    assert report.answer.startswith("FIX — stage 'small' failed")
    md = to_markdown(report)
    assert "## What to do next" in md
    assert "Stage 2 (small) is FAIL: evaluation_ran: control: 3/10 items scored" in md
    assert "1. Check the scorer's logs" in md and "2. Re-run stage 2 with --from 2" in md
    assert "control: RuntimeError: CUDA out of memory" in md
    assert "| 3 | pilot | not run |" in md  # the stages never reached say so
    # A run recorded before `no_value` (its `not_run`, NaN means) still reads without NaN.
    assert "| 2 small | coherence | 0 | no value: no judge configured |" in md
    assert "nan" not in md.lower()
    html = to_html(report)
    assert 'class="answer fix"' in html and "Re-run stage 2 with --from 2" in html
    assert_self_contained(html)


def test_lower_is_better_metrics_read_as_improvements_in_the_forest(example: Path) -> None:
    run_dir = _fake_run(example, _failed_state())
    forest = next(f for f in build(run_dir).figures if f.name == "forest")
    assert "small: vulnerability (lower is better, sign flipped)" in forest.svg
    assert "small: functional_correctness" in forest.svg
    assert forest.svg.startswith("<svg") and "<text" in forest.svg  # labels stay text


def test_the_same_run_gives_the_same_report(example: Path) -> None:
    run_dir = _fake_run(example, _failed_state())
    first = write(run_dir)
    html, md = first["html"].read_bytes(), first["md"].read_bytes()
    second = write(run_dir)
    assert second["html"].read_bytes() == html and second["md"].read_bytes() == md
    assert sorted(p.name for p in (run_dir / "report" / "plots").iterdir()) == ["forest.svg"]
    # A report is for sharing: it gets the permissions open() would give, not mkstemp's 0600.
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(first["html"].stat().st_mode) == 0o666 & ~mask


def test_report_cli_formats_and_bad_input(example: Path) -> None:
    run_dir = _fake_run(example, _failed_state())
    md = run_cli("report", str(run_dir), "--format", "md")
    assert md.returncode == 0, md.stderr
    assert md.stdout.startswith("# tunegate report: metadata-experiment")
    assert (run_dir / "report" / "report.md").is_file()
    copy = example.parent / "out" / "r.html"
    html = run_cli("report", str(run_dir), "-o", str(copy))
    assert html.returncode == 0 and copy.read_text().startswith("<!DOCTYPE html>")

    for args, message in [
        (["report", str(example.parent)], "not a tunegate run directory (no plan.json)"),
        (["report", str(run_dir), "--format", "pdf"], "'pdf' is not one of 'html', 'md'"),
        (["status", "--bogus"], "No such option: --bogus"),
    ]:
        bad = run_cli(*args)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert message in bad.stderr and "Traceback" not in bad.stderr

    (run_dir / "state.json").write_text("{not json")
    corrupt = run_cli("report", str(run_dir))
    assert corrupt.returncode == 2 and "corrupt state" in corrupt.stderr
    assert "Traceback" not in corrupt.stderr


def test_chromium_renders_a_report_offline(example: Path, tmp_path: Path) -> None:
    html = write(_fake_run(example, _failed_state()))["html"]
    dom, shot = render_in_chromium(html, tmp_path / "browser")
    assert '<table id="verdicts">' in dom and "<svg" in dom
    assert_not_blank(shot)


def test_passwords_in_uris_stay_out_of_the_run_directory(example: Path) -> None:
    from tunegate.plan import JudgeConfig, Plan, dump_plan, redact

    assert redact("http://ann:pw@host:5000/x") == "http://ann:***@host:5000/x"
    assert redact("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"
    plan = load_plan(example)
    plan.tracking.uri = "https://ann:s3cretA@mlflow.lan"
    plan.judge = JudgeConfig(endpoint="http://bob:s3cretB@judge.lan/v1", model="m")
    dumped = dump_plan(plan)
    assert "s3cret" not in json.dumps(dumped)
    # What plan.json holds reads back as the same stages: no "plan changed since" in reports.
    again = Plan.model_validate(dumped)
    assert [again.stage_hash(i) for i in range(5)] == [plan.stage_hash(i) for i in range(5)]
