"""Stage 0: check the environment. Each check is PASS / WARN / FAIL with its value and a fix.

Checks run in parallel with timeouts, and write nothing: a doctor on a broken machine must be
fast and harmless.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tunegate.plan import TINY_LLAMA, Plan

Status = Literal["PASS", "WARN", "FAIL"]
REQUIRED = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "bitsandbytes",
    "accelerate",
    "mlflow",
    "datasets",
    "scipy",
    "statsmodels",
)


@dataclass
class Check:
    name: str
    status: Status
    value: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _python() -> Check:
    v = sys.version_info
    ok = v >= (3, 11)
    return Check(
        "python",
        "PASS" if ok else "FAIL",
        sys.version.split()[0],
        "" if ok else "use Python 3.11 or newer",
    )


def _packages() -> Check:
    found, missing = [], []
    for name in REQUIRED:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check(
            "packages",
            "FAIL",
            "missing: " + ", ".join(missing),
            "pip install -e . (or `make demo`)",
        )
    return Check("packages", "PASS", ", ".join(found))


def _torch_device(plan: Plan) -> Check:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Check(
            "torch device", "PASS", f"CUDA: {props.name}, {props.total_memory / 2**30:.1f} GiB"
        )
    if plan.model.name == TINY_LLAMA:
        return Check(
            "torch device",
            "PASS",
            f"CPU ({torch.get_num_threads()} threads): enough for tiny-llama",
        )
    return Check(
        "torch device",
        "WARN",
        "no CUDA device: training a real model on CPU is slow",
        "run on a GPU host (docker executor) or use model.name: tiny-llama",
    )


def _bitsandbytes(plan: Plan) -> Check:
    if plan.quantization.method != "qlora":
        return Check("bitsandbytes", "PASS", "not needed (no 4-bit quantization)")
    try:
        import bitsandbytes as bnb
    except Exception as err:  # a broken native library raises all sorts
        return Check(
            "bitsandbytes", "FAIL", f"import failed: {err}", "pip install bitsandbytes>=0.48"
        )
    return Check("bitsandbytes", "PASS", f"{bnb.__version__} (Linear4bit available)")


def _disk(plan: Plan) -> Check:
    target = plan.output_dir
    probe = next((p for p in [target, *target.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / 2**30
    need = 1.0 if plan.model.name == TINY_LLAMA else 50.0  # adapters+checkpoints vs 8B models
    if free < 0.1:
        return Check(
            "free disk", "FAIL", f"{free:.2f} GiB at {probe}", "free space or move output_dir"
        )
    if not os.access(probe, os.W_OK):
        return Check(
            "free disk", "FAIL", f"{probe} is not writable", "fix permissions or output_dir"
        )
    status: Status = "PASS" if free >= need else "WARN"
    return Check(
        "free disk",
        status,
        f"{free:.1f} GiB free at {probe} (want ≥ {need:.0f})",
        "" if status == "PASS" else "free space or move output_dir",
    )


def _tracking(plan: Plan) -> Check:
    from tunegate.tracking import tracking_uri

    uri = tracking_uri(plan)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as resp:
                body = resp.read(64).decode(errors="replace").strip()
            return Check("tracking", "PASS", f"{uri}/health → {body}")
        except Exception as err:
            return Check(
                "tracking",
                "FAIL",
                f"{uri} unreachable ({err})",
                "start the MLflow server or fix tracking.uri / MLFLOW_TRACKING_URI",
            )
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        parent = next((p for p in [db.parent, *db.parents] if p.exists()), Path("/"))
        if not os.access(parent, os.W_OK):
            return Check("tracking", "FAIL", f"{parent} is not writable", "fix tracking.uri")
        return Check("tracking", "PASS", f"local store {uri}")
    return Check("tracking", "WARN", f"{uri}: not checked", "")


def _model(plan: Plan) -> Check:
    if plan.model.name == TINY_LLAMA:
        return Check("model", "PASS", "tiny-llama (embedded, built locally on first use)")
    path = Path(plan.model.name)
    if (path / "config.json").is_file():
        return Check("model", "PASS", str(path))
    return Check(
        "model", "FAIL", f"{path}: no config.json", "point model.name at a local model directory"
    )


def _memory(plan: Plan) -> Check:
    """Will the plan's model train in this GPU's memory (or, with no GPU here, in the seed's
    12 GiB RTX 4070 Ti)? From `tunegate memory`'s estimate."""
    import torch

    from tunegate.train.memory import DEFAULT_VRAM_GIB, advice, for_plan, gib

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        vram, where = props.total_memory / 2**30, props.name
    else:
        vram, where = DEFAULT_VRAM_GIB, "RTX 4070 Ti (default target; no GPU here)"
    est = for_plan(plan, vram_gib=vram)
    t = est.training
    value = (
        f"{gib(est.total)} needed of {vram:.1f} GiB on {where} "
        f"({t.method}, batch {t.batch_size} × {t.max_length} tokens)"
    )
    if est.fits:
        return Check("gpu memory", "PASS", value)
    status: Status = "FAIL" if torch.cuda.is_available() else "WARN"
    return Check("gpu memory", status, value, "; or ".join(advice(est)))


def _sandbox() -> Check:
    """The isolation generated code runs under (bubblewrap, uid, rlimits...)."""
    from tunegate.evaluate.sandbox import detect

    iso = detect()
    if iso.level == "strong":
        return Check("sandbox", "PASS", iso.describe())
    return Check("sandbox", "WARN", iso.describe(), iso.problem)


def run_checks(plan: Plan, timeout_s: float = 10.0) -> list[Check]:
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("python", _python),
        ("packages", _packages),
        ("torch device", lambda: _torch_device(plan)),
        ("bitsandbytes", lambda: _bitsandbytes(plan)),
        ("free disk", lambda: _disk(plan)),
        ("tracking", lambda: _tracking(plan)),
        ("model", lambda: _model(plan)),
        ("gpu memory", lambda: _memory(plan)),
        ("sandbox", _sandbox),
    ]
    results: list[Check] = []
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        futures = [(name, pool.submit(fn)) for name, fn in checks]
        for name, future in futures:
            try:
                results.append(future.result(timeout=timeout_s))
            except FutureTimeout:
                results.append(Check(name, "FAIL", f"no answer in {timeout_s:.0f} s", ""))
            except Exception as err:
                results.append(Check(name, "FAIL", f"check crashed: {err}", ""))
    return results
