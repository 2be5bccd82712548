"""Stage 0: check the environment. Each check is PASS / WARN / FAIL with its value and a fix.

Checks run in parallel, each bounded by its own timeout, so a doctor on a broken machine (hosts
down, a hung daemon, a dead DNS server) still answers in seconds. They are harmless: nothing is
written except a probe directory created and removed at once (the only honest writability test
when running as root, for whom permission bits mean nothing) and, on a host's first contact,
its key in ~/.ssh/known_hosts (`StrictHostKeyChecking=accept-new`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from tunegate.errors import UserError
from tunegate.models import TINY_LLAMA, cache_dir, embedded, is_built
from tunegate.plan import ExecutorConfig, Plan, Stage, redact
from tunegate.remote.host import Host, quote
from tunegate.state import Check
from tunegate.tracking import tracking_uri
from tunegate.train.memory import (
    DEFAULT_VRAM_GIB,
    DTYPE_BYTES,
    ModelShape,
    TrainingShape,
    advice,
    estimate,
    for_plan,
    gib,
    load_shape,
)

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

# --- timeouts: each one bounds a wait on something that may be down ------------------------
# The whole doctor's backstop. Every check's own timeouts below end within 7 s, so a check
# still running at 8 s is hung, and the doctor answers within the promised 10 s regardless.
TOTAL_TIMEOUT_S = 8.0
# Checks of this machine alone (imports, the device, the disk) wait on no host, so they cannot
# hang on one that is down; what they wait on is a cold import. On an H200 host, importing torch
# and bitsandbytes for the first time took longer than 8 s (measured: docs/benchmarks.md), and a
# doctor that calls that a FAIL is wrong. They get their own, longer bound.
LOCAL_TIMEOUT_S = 60.0
# An HTTP service on a LAN answers /health or /models in milliseconds; 3 s tolerates a busy one
# and still tells "down" from "slow" for a human waiting on the doctor.
HTTP_TIMEOUT_S = 3.0
# ssh's own connect bound (TCP connect + banner): a host that is up answers in well under 3 s.
SSH_CONNECT_TIMEOUT_S = 3
# ssh as a whole: connect (3 s) + key exchange, authentication and `true`, which take about a
# second on a healthy host; it also covers DNS resolution, which ConnectTimeout does not.
SSH_TIMEOUT_S = 6.0
# One docker command: a local socket answers in milliseconds, an ssh:// engine in 1-2 s.
DOCKER_CALL_TIMEOUT_S = 4.0
# The docker checks run in sequence (client+daemon, runtime, image); together they stop here,
# inside TOTAL_TIMEOUT_S.
DOCKER_TIMEOUT_S = 7.0

# --- what a plan writes (see disk_need) ----------------------------------------------------
MIB = 2**20
GIB = 2**30
# qlora.py's SFTConfig(save_total_limit=2): older checkpoints are deleted as new ones land.
SAVE_TOTAL_LIMIT = 2
# Tokenizer files saved with every adapter, checkpoint and merged model, when the model's own
# directory cannot be measured: Llama-3's tokenizer.json is 8.7 MiB, Qwen2.5's files 11 MiB.
TOKENIZER_ALLOWANCE = 20 * MIB
# scheduler.pt, rng_state.pth, trainer_state.json (one log entry per step) per checkpoint.
CHECKPOINT_EXTRAS = 4 * MIB
# A stage writes its selected items (at most the arm's file) and one evaluation record per test
# item (of the same order): twice the arm's data file per stage.
DATA_FACTOR = 2
# MLflow's sqlite store and its small artifacts (JSON, plots) for one climb.
TRACKING_ALLOWANCE = 64 * MIB
# One stage's share: its runs' metrics and params, its verdict, the report logged after it.
STAGE_TRACKING_ALLOWANCE = 16 * MIB
# tiny-llama's build (fp32 weights + its tokenizer: 1.8 MiB measured), rounded up.


# --- helpers -------------------------------------------------------------------------------
def _run(argv: list[str], timeout_s: float) -> tuple[int | None, str, str]:
    """(exit code, stdout, stderr); exit code None when it timed out. The command runs in its
    own session and the whole group is killed on timeout: ssh's ProxyCommand or docker's ssh
    helper would otherwise keep the pipes open and hang the wait after the kill."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it may have exited just now
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=1)  # reap; 1 s: the group was just SIGKILLed
        return None, "", ""


def _last_line(text: str) -> str:
    """The line a tool's error is in: the last non-empty one that is not a warning or the
    docker client's "Run 'docker run --help' for more information"."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [
        ln for ln in lines if not ln.lower().startswith("warning") and not ln.startswith("Run '")
    ]
    return (errors or lines or ["no output"])[-1]


def _http_reason(err: Exception) -> str:
    """One short cause for a failed request: 'connection refused', 'no answer in 3 s'."""
    import requests

    if isinstance(err, requests.Timeout):
        return f"no answer in {HTTP_TIMEOUT_S:g} s"
    found = re.search(r"\[Errno -?\d+\]\s*([^'\")]*)", str(err))
    if found:
        return found.group(1).strip().lower() or type(err).__name__
    return type(err).__name__


def _nearest_existing(path: Path) -> Path:
    return next((p for p in [path, *path.parents] if p.exists()), Path("/"))


def _writable(path: Path) -> str | None:
    """Why `path` (a directory to be created if missing) cannot be written, or None. Tries it:
    os.access says yes to root whatever the mode bits, and knows nothing of /proc or /sys."""
    probe = _nearest_existing(path)
    if not probe.is_dir():
        return f"{probe} is a file, so {path} cannot be created"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tunegate-doctor-", dir=probe))
    except OSError as err:
        return f"{probe} is not writable ({err.strerror or err})"
    return None


def _docker_needed(plan: Plan) -> bool:
    return plan.executor.kind == "docker" or any(s.executor == "docker" for s in plan.stages)


# --- environment -----------------------------------------------------------------------------
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

    version = f"torch {torch.__version__}"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Check(
            "torch device",
            "PASS",
            f"{version}, CUDA {torch.version.cuda}: {props.name}, "
            f"{props.total_memory / GIB:.1f} GiB",
        )
    if embedded(plan.model.name) is not None:  # small enough for a CPU's stages 0-2
        return Check(
            "torch device",
            "PASS",
            f"{version}, CPU ({torch.get_num_threads()} threads): enough for {plan.model.name}",
        )
    if _docker_needed(plan):
        return Check(
            "torch device", "PASS", f"{version}, no CUDA here: training runs in the container"
        )
    return Check(
        "torch device",
        "WARN",
        f"{version}, no CUDA device: training a model of this size on CPU is slow",
        "run on a GPU host (the docker executor), or climb the first stages with an embedded "
        "model (smollm2-135m or tiny-llama)",
    )


def _bitsandbytes(plan: Plan) -> Check:
    if plan.quantization.method != "qlora":
        return Check("bitsandbytes", "PASS", "not needed (no 4-bit quantization)")
    try:
        import bitsandbytes as bnb
        from bitsandbytes import cextension
    except Exception as err:  # a broken native library raises all sorts
        return Check(
            "bitsandbytes", "FAIL", f"import failed: {err}", "pip install bitsandbytes>=0.48"
        )
    backend = getattr(cextension, "BNB_BACKEND", "?")
    lib = getattr(getattr(cextension, "lib", None), "_lib", None)
    if lib is None or type(cextension.lib).__name__.startswith("ErrorHandler"):
        # bitsandbytes swaps in a stub that raises on first use when no binary loads.
        return Check(
            "bitsandbytes",
            "FAIL",
            f"{bnb.__version__}: no {backend} native library loaded",
            "python -m bitsandbytes (diagnoses it); reinstall bitsandbytes for this torch/CUDA",
        )
    library = Path(getattr(lib, "_name", "") or "?").name
    return Check("bitsandbytes", "PASS", f"{bnb.__version__}, {backend} backend ({library})")


def _model(plan: Plan) -> Check:
    if (known := embedded(plan.model.name)) is not None:
        if (reason := known.missing()) is not None:
            return Check("model", "FAIL", f"{known.name}: {reason}", reason.rsplit(": ", 1)[-1])
        where = known.directory(cache_dir())
        state = f"ready in {where}" if is_built(known) else "built into the cache on first use"
        return Check("model", "PASS", f"{known.name} (embedded, {state})")
    path = Path(plan.model.name)
    if (path / "config.json").is_file():
        return Check("model", "PASS", str(path))
    return Check(
        "model", "FAIL", f"{path}: no config.json", "point model.name at a local model directory"
    )


def _memory(plan: Plan) -> Check:
    """Will the plan's model train in this GPU's memory (or, with no GPU here, in the original
    plan's 12 GiB RTX 4070 Ti)? From `tunegate memory`'s estimate."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        vram, where = props.total_memory / GIB, props.name
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


def _languages_in_data(plan: Plan) -> dict[str, int]:
    """Items per language in the plan's arms (the larger arm; the loader's default language is
    python), among the plan's `scenarios`. A file that cannot be read is the data checks'
    business, not this one's."""
    counts: dict[str, int] = {}
    for arm in plan.arms.values():
        try:
            lines = Path(arm.data).read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        arm_counts: dict[str, int] = {}
        for line in lines:
            try:
                item = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if not isinstance(item, dict):
                continue
            if plan.scenarios is not None and item.get("scenario") not in plan.scenarios:
                continue
            language = str(item.get("language") or "python")
            arm_counts[language] = arm_counts.get(language, 0) + 1
        for language, n in arm_counts.items():
            counts[language] = max(counts.get(language, 0), n)
    return counts


def _runtimes(plan: Plan) -> list[Check]:
    """The interpreters the plan's executed metrics need, for the languages its data holds:
    node for JavaScript, SQLite for SQL. Missing, those items could not be judged: their
    functional correctness would be a failure to evaluate, found only after training."""
    from tunegate.registry import EXECUTED, metric_spec

    executed = {
        m
        for stage in plan.stages
        if stage.kind == "train" and stage.evaluation.mode == "full"
        for m in stage.evaluation.metrics
        if metric_spec(m).applies_to == EXECUTED
    }
    languages = _languages_in_data(plan)
    checks = []
    for language in sorted(set(languages) & {"javascript", "sql"}):
        name, items = f"runtime {language}", f"{languages[language]} {language} items"
        status: Literal["FAIL", "WARN"] = "FAIL" if executed else "WARN"
        if language == "javascript":
            node = shutil.which("node")
            version = _run([node, "--version"], timeout_s=10) if node else None
            if version is None or version[0] != 0:
                why = "node not found on PATH" if node is None else f"{node} does not run"
                checks.append(
                    Check(
                        name,
                        status,
                        f"{why}: {items} cannot be executed"
                        + (f" ({', '.join(sorted(executed))})" if executed else ""),
                        "install Node.js 18 or newer (e.g. apt-get install nodejs), or leave "
                        "the JavaScript scenarios out (`scenarios:`)",
                    )
                )
            else:
                checks.append(Check(name, "PASS", f"node {version[1].strip()} for {items}"))
        else:
            try:
                import sqlite3

                checks.append(Check(name, "PASS", f"SQLite {sqlite3.sqlite_version} for {items}"))
            except ImportError:
                checks.append(
                    Check(
                        name,
                        status,
                        f"Python's sqlite3 module is missing: {items} cannot be executed",
                        "use a Python built with SQLite (libsqlite3-dev before building it)",
                    )
                )
    return checks


def _sandbox() -> Check:
    """The isolation generated code runs under (bubblewrap, uid, rlimits...)."""
    from tunegate.sandbox.isolation import detect

    iso = detect()
    if iso.level == "strong":
        return Check("sandbox", "PASS", iso.describe())
    return Check("sandbox", "WARN", iso.describe(), iso.problem)


# --- disk --------------------------------------------------------------------------------------
@dataclass
class DiskNeed:
    """Bytes a plan writes under its output directory, with the sum's parts for the message."""

    total: int
    parts: dict[str, int]
    stages: int
    arms: int

    def describe(self) -> str:
        parts = ", ".join(f"{k} {gib(v) if v else 0}" for k, v in self.parts.items())
        return f"{self.stages} train stages × {self.arms} arms: {parts}"


def _save_dtype(plan: Plan) -> str:
    """The dtype full weights are saved in: compute_dtype, whose `auto` is bf16 where training
    runs on CUDA and fp32 on CPU (so an unknown device counts fp32: twice the bytes)."""
    if plan.quantization.compute_dtype != "auto":
        return plan.quantization.compute_dtype
    if _docker_needed(plan):
        return "bfloat16" if plan.executor.gpus else "float32"
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"


def _tokenizer_bytes(model_name: str) -> int:
    """The tokenizer files saved next to every adapter, checkpoint and merged model."""
    if model_name == TINY_LLAMA:
        return MIB  # a 512-token byte-level BPE: under 100 KiB
    path = Path(model_name)
    if (known := embedded(model_name)) is not None:
        path = known.directory(cache_dir())
    if not path.is_dir():
        return TOKENIZER_ALLOWANCE
    names = ("tokenizer", "special_tokens_map", "vocab", "merges", "chat_template")
    files = [p for p in path.iterdir() if p.is_file() and p.name.startswith(names)]
    return sum(p.stat().st_size for p in files) or TOKENIZER_ALLOWANCE


def _stage_need(
    plan: Plan, stage: Stage, shape: ModelShape, dtype: str, tokenizer: int
) -> tuple[dict[str, int], int, int]:
    """What one train stage writes, without the checkpoint in flight: its parts, its largest
    checkpoint and its training runs (arms × seeds)."""
    t = plan.stage_training(stage)
    est = estimate(
        shape,
        TrainingShape.from_settings(
            t, plan.quantization, plan.lora, plan.model.max_length, compute_dtype=dtype
        ),
    )
    method = plan.quantization.method
    saved = est.components["weights" if method == "full" else "lora parameters"]
    checkpoint = int(saved + est.components["optimizer states"]) + tokenizer
    checkpoint += CHECKPOINT_EXTRAS
    saves = t.max_steps // t.save_steps + 1 if t.max_steps else SAVE_TOTAL_LIMIT
    merged = (
        shape.total_params * DTYPE_BYTES[dtype] + tokenizer
        if t.merge_adapter and method != "full"
        else 0
    )
    parts = {"adapters": 0, "checkpoints": 0, "merged models": 0, "data": 0}
    arms = stage.arms or list(plan.arms)
    for arm in [a for a in arms for _ in range(stage.seeds)]:  # each seed saves its own
        parts["adapters"] += int(saved) + tokenizer
        parts["checkpoints"] += min(saves, SAVE_TOTAL_LIMIT) * checkpoint
        parts["merged models"] += merged
        data = plan.arms[arm].data if arm in plan.arms else None
        if data is not None and data.is_file():
            parts["data"] += DATA_FACTOR * data.stat().st_size
    return parts, checkpoint, len(arms) * stage.seeds


def disk_need(plan: Plan) -> DiskNeed:
    """A conservative estimate of what the plan writes under output_dir, per train stage and arm:

    - the adapter: the LoRA parameters in fp32 as peft saves them (the whole model for `full`),
      plus the tokenizer;
    - checkpoints: adapter + AdamW's two moments + scheduler/RNG/state, each; at most
      SAVE_TOTAL_LIMIT kept (fewer when max_steps allows fewer saves), and one more exists
      while the oldest is being rotated out;
    - the merged 16-bit model (fp32 on CPU) when merge_adapter;
    - the data: DATA_FACTOR × the arm's file; plus the MLflow store once.
    Parameter counts come from the memory estimate's components, so they match `tunegate memory`.
    """
    shape, dtype = load_shape(plan.model.name), _save_dtype(plan)
    tokenizer = _tokenizer_bytes(plan.model.name)
    parts = {"adapters": 0, "checkpoints": 0, "merged models": 0, "data": 0}
    largest_checkpoint = 0
    stages = [s for s in plan.stages if s.kind == "train"]
    arms_per_stage = 0
    for stage in stages:
        stage_parts, checkpoint, runs = _stage_need(plan, stage, shape, dtype, tokenizer)
        for k, v in stage_parts.items():
            parts[k] += v
        arms_per_stage = max(arms_per_stage, runs)
        largest_checkpoint = max(largest_checkpoint, checkpoint)
    parts["checkpoints"] += largest_checkpoint  # the one in flight while rotating
    parts["tracking"] = TRACKING_ALLOWANCE
    return DiskNeed(sum(parts.values()), parts, len(stages), arms_per_stage)


def stage_disk_need(plan: Plan, index: int) -> DiskNeed:
    """What train stage `index` alone writes (as `disk_need` counts it), its checkpoint in flight
    and its share of the tracking allowance included; the budget guard's disk twin reads it."""
    shape, dtype = load_shape(plan.model.name), _save_dtype(plan)
    stage = plan.stages[index]
    parts, checkpoint, runs = _stage_need(
        plan, stage, shape, dtype, _tokenizer_bytes(plan.model.name)
    )
    parts["checkpoints"] += checkpoint
    parts["tracking"] = STAGE_TRACKING_ALLOWANCE
    return DiskNeed(sum(parts.values()), parts, 1, runs)


def _local_store(plan: Plan) -> Path | None:
    """The directory a local MLflow store (sqlite, file) writes to; None for a server."""
    uri = tracking_uri(plan)
    scheme = urlsplit(uri).scheme
    if scheme == "sqlite":
        # sqlite:////abs/path or sqlite:///rel/path; the directory takes the db and its journal.
        return Path(uri.removeprefix("sqlite:///")).parent
    if scheme in ("file", ""):
        return Path(uri.removeprefix("file://"))
    return None


def stage_disk_problem(plan: Plan, index: int, stage_dir: Path) -> str | None:
    """Why train stage `index` will not fit on disk, or None when it will: its need
    (`stage_disk_need`), less what `stage_dir` already holds (a resumed stage's checkpoints are
    rotated, not added to), against the free space where each part lands: the stage directory,
    and the tracking store when it is local (on another disk, it is counted there)."""
    try:
        need = stage_disk_need(plan, index)
    except (UserError, OSError):  # the model's size cannot be read: the doctor said so
        return None
    written = sum(f.stat().st_size for f in stage_dir.rglob("*") if f.is_file())
    places: dict[int, tuple[Path, int]] = {}  # device → (where, bytes to write there)
    tracking = need.parts["tracking"]
    store = _local_store(plan)
    for where, n in ((stage_dir, max(0, need.total - tracking - written)), (store, tracking)):
        if where is None:
            continue  # a tracking server keeps its own disk
        base = _nearest_existing(where.resolve())
        device = base.stat().st_dev
        first, before = places.get(device, (base, 0))
        places[device] = (first, before + n)
    for base, n in places.values():
        free = shutil.disk_usage(base).free
        if n > free:
            parts = ", ".join(f"{k} {gib(v)}" for k, v in need.parts.items() if v)
            return (
                f"needs ~{gib(n)} at {base} ({parts}; a conservative estimate"
                + (f", {gib(written)} already written" if written else "")
                + f"), {gib(free)} free: free space there or move output_dir"
            )
    return None


def _models_cache() -> Path:
    return cache_dir() / "models"


def _disk(plan: Plan) -> Check:
    target = plan.output_dir
    problem = _writable(target)
    if problem:
        return Check(
            "free disk",
            "FAIL",
            f"output_dir {target}: {problem}",
            "point output_dir at a writable directory",
        )
    probe = _nearest_existing(target)
    free = shutil.disk_usage(probe).free
    try:
        need = disk_need(plan)
    except (UserError, OSError) as err:
        return Check(
            "free disk",
            "WARN",
            f"{free / GIB:.1f} GiB free at {probe}; need unknown ({err})",
            "fix model.name so the model's size can be read",
        )
    total = need.total
    where = target if target == probe else f"{probe} (for {target})"
    extra = ""
    known = embedded(plan.model.name)
    if known is not None and not is_built(known):
        # Built on first use into the cache: counted where it will land.
        cache, size = _nearest_existing(_models_cache()), known.bytes_on_disk
        if cache.stat().st_dev == probe.stat().st_dev:
            total += size
            extra = f", {known.name} build {gib(size)}"
        else:
            problem = _writable(_models_cache())
            if problem or shutil.disk_usage(cache).free < size:
                return Check(
                    "free disk",
                    "FAIL",
                    f"{known.name} cannot be built in {_models_cache()}: "
                    + (problem or f"{gib(shutil.disk_usage(cache).free)} free"),
                    "set TUNEGATE_CACHE to a writable directory with space",
                )
    value = (
        f"needs ~{gib(total)}, {gib(free)} free at {where} ({need.describe()}{extra}; "
        "a conservative estimate)"
    )
    largest = max(need.parts, key=lambda k: need.parts[k])
    # Headroom: logs, pip and HF caches share the disk; one filled to the last MiB breaks more
    # than this run.
    wanted = total + max(GIB, total // 10)
    fix = (
        f"free {gib((total if free < total else wanted) - free)} or more at {probe}, move "
        f"output_dir to a larger disk, or write less (the largest part: {largest}, "
        f"{gib(need.parts[largest])})"
    )
    if free < total:
        return Check("free disk", "FAIL", value, fix)
    if free < wanted:
        return Check("free disk", "WARN", value + "; little headroom", fix)
    return Check("free disk", "PASS", value)


# --- services ----------------------------------------------------------------------------------
def tracking_check(plan: Plan, timeout_s: float = TOTAL_TIMEOUT_S) -> Check:
    """The tracking check alone, within `timeout_s`: what a climb asks before it opens tracking,
    so that a store that is down costs seconds, not MLflow's retries."""
    slot: list[Check] = []

    def work() -> None:
        try:
            slot.append(_tracking(plan))
        except Exception as err:  # as run_checks reports a check that crashed
            slot.append(Check("tracking", "FAIL", f"check crashed: {err}", ""))

    thread = threading.Thread(target=work, name="doctor tracking", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if slot:
        return slot[0]
    return Check(
        "tracking",
        "FAIL",
        f"{redact(tracking_uri(plan))}: no answer in {timeout_s:g} s",
        "check the store: is the server up, is the disk it is on answering?",
    )


def _tracking(plan: Plan) -> Check:
    uri = tracking_uri(plan)
    shown = redact(uri)
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        return _tracking_server(uri.rstrip("/"), shown.rstrip("/"))
    store = _local_store(plan)
    if store is not None:
        problem = _writable(store)
        if problem:
            return Check(
                "tracking",
                "FAIL",
                f"local store {shown}: {problem}",
                "fix tracking.uri (or MLFLOW_TRACKING_URI) or the directory's permissions",
            )
        return Check("tracking", "PASS", f"local store {shown} (writable)")
    return Check(
        "tracking",
        "WARN",
        f"{shown}: not checked (only http(s), sqlite and file stores are)",
        "run `mlflow experiments search` against it once to be sure",
    )


def _tracking_server(uri: str, shown: str) -> Check:
    import requests

    fix = "start the MLflow server (`mlflow server`) or fix tracking.uri / MLFLOW_TRACKING_URI"
    try:
        health = requests.get(f"{uri}/health", timeout=HTTP_TIMEOUT_S)
    except requests.RequestException as err:
        return Check("tracking", "FAIL", f"{shown}/health: {_http_reason(err)}", fix)
    body = " ".join(health.text.split())[:60]
    if health.status_code != 200:
        return Check("tracking", "FAIL", f"{shown}/health: HTTP {health.status_code} {body}", fix)
    try:
        answer = requests.get(f"{uri}/version", timeout=HTTP_TIMEOUT_S)
        version = answer.text.strip() if answer.status_code == 200 else ""
    except requests.RequestException:
        version = ""
    if not re.fullmatch(r"\d+\.\d+[\w.+-]*", version):
        return Check(
            "tracking",
            "WARN",
            f"{shown}/health: {body}, but /version is not an MLflow version",
            "check tracking.uri points at the MLflow server itself, not a proxy page",
        )
    client = importlib.metadata.version("mlflow")
    value = f"{shown}: MLflow {version} (/health {body}; client {client})"
    if version.split(".")[0] != client.split(".")[0]:
        # The REST API changes between major versions (MLflow 3's logged models, for one).
        return Check(
            "tracking",
            "WARN",
            value + ": major versions differ",
            f"run an MLflow {client.split('.')[0]}.x server",
        )
    return Check("tracking", "PASS", value)


def _judge(plan: Plan) -> Check:
    """One cheap call: GET /models, or a 1-token chat completion where /models is not served."""
    import requests

    from tunegate.endpoint import EndpointError, post_json

    judge = plan.judge
    if judge is None:
        return Check("judge", "PASS", "no judge configured (judge metrics report not run)")
    base = judge.endpoint.rstrip("/")
    key = os.environ.get(judge.api_key_env) if judge.api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    fix = f"start the judge server or fix judge.endpoint ({redact(base)})"
    try:
        resp = requests.get(f"{base}/models", headers=headers, timeout=HTTP_TIMEOUT_S)
    except requests.RequestException as err:
        return Check("judge", "FAIL", f"GET {redact(base)}/models: {_http_reason(err)}", fix)
    if resp.status_code in (404, 405):
        try:
            post_json(
                f"{base}/chat/completions",
                {
                    "model": judge.model,
                    "messages": [{"role": "user", "content": "ping"}],
                    "max_tokens": 1,
                },
                api_key=key,
                timeout_s=HTTP_TIMEOUT_S,
                max_retries=0,  # a check, not a run: one try within the doctor's seconds
            )
        except EndpointError as err:
            return Check("judge", "FAIL", str(err), fix)
        return Check("judge", "PASS", f"{redact(base)}: {judge.model} answered a 1-token call")
    if resp.status_code in (401, 403):
        sent = f"the key in ${judge.api_key_env}" if key else "no key"
        return Check(
            "judge",
            "FAIL",
            f"GET {redact(base)}/models: HTTP {resp.status_code} ({sent} refused)",
            f"set ${judge.api_key_env or 'OPENAI_API_KEY'} to a valid key (judge.api_key_env)",
        )
    if resp.status_code != 200:
        text = " ".join(resp.text.split())[:120]
        return Check(
            "judge", "FAIL", f"GET {redact(base)}/models: HTTP {resp.status_code} {text}", fix
        )
    try:
        served = [str(m.get("id")) for m in resp.json().get("data", [])]
    except (ValueError, AttributeError):
        served = []
    if judge.model in served:
        return Check("judge", "PASS", f"{redact(base)}: serves {judge.model}")
    listed = ", ".join(served[:5]) + (" …" if len(served) > 5 else "")
    return Check(
        "judge",
        "WARN",
        f"{redact(base)} answers, but does not list {judge.model} (serves: {listed or 'none'})",
        "set judge.model to a model the endpoint serves",
    )


def _ssh(host_name: str, address: str, port: int) -> Check:
    name = f"ssh {host_name}"
    where = f"{address} port {port}"
    if shutil.which("ssh") is None:
        return Check(
            name,
            "WARN",
            f"{where}: not checked, ssh: not installed",
            "apt-get install openssh-client (or remove the host from plan.hosts)",
        )
    argv = [
        "ssh",
        "-o", "BatchMode=yes",  # keys only: a password prompt would hang the doctor
        "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}",
        "-o", "StrictHostKeyChecking=accept-new",
        "-p", str(port),
        "--",  # an address starting with "-" must not be read as an option
        address,
        "true",
    ]  # fmt: skip
    started = time.monotonic()
    code, _, err = _run(argv, SSH_TIMEOUT_S)
    if code is None:
        return Check(
            name, "FAIL", f"{where}: no answer in {SSH_TIMEOUT_S:g} s", "check the host is up"
        )
    if code == 0:
        return Check(name, "PASS", f"{where}: ok in {time.monotonic() - started:.1f} s")
    line = _last_line(err)
    if "Permission denied" in line:
        fix = f"ssh-copy-id -p {port} {address} (BatchMode allows keys only)"
    elif "Host key verification failed" in line or "HOST IDENTIFICATION" in err:
        fix = "the host key changed: check why, then ssh-keygen -R the host"
    elif "Could not resolve" in line:
        fix = "fix the address in plan.hosts (or its ~/.ssh/config alias)"
    else:
        fix = f"check the host is up and sshd listens on port {port}"
    return Check(name, "FAIL", f"{where}: {line}", fix)


def _hosts(plan: Plan) -> list[tuple[str, Callable[[], Check | list[Check]]]]:
    if not plan.hosts:
        return [("ssh hosts", lambda: Check("ssh hosts", "PASS", "none listed (plan.hosts)"))]
    return [(f"ssh {h.name}", partial(_ssh, h.name, h.address, h.port)) for h in plan.hosts]


# --- the tower (executor.host) ------------------------------------------------------------------
def _towers(plan: Plan) -> list[Check]:
    """Every tower the arms train on (`executor.host`, then `executor.hosts`), one after the
    other, and how the tracking store is reached from them."""
    ex = plan.executor
    kinds: set[str] = {ex.kind, *(s.executor for s in plan.stages if s.executor)}
    if not ex.towers() or kinds <= {"local"}:
        return []
    checks = [c for tower in ex.towers() for c in _tower(plan, tower, kinds)]
    checks.append(
        Check(
            "tower tracking",
            "PASS",
            # Why no tunnel: a tower that cannot reach the server (or a sqlite file here) still
            # tracks, and nothing is lost while the link is down; the log keeps every line.
            f"not needed from the tower: its metrics stream back in the log and this machine "
            f"records them in {redact(tracking_uri(plan))}",
        )
    )
    return checks


def _tower(plan: Plan, tower: str, kinds: set[str]) -> list[Check]:
    """One machine the arms train on: reached over ssh with keys (BatchMode), its tools (rsync,
    sha256sum), its disk where the runs go, its engine and image (`kind: docker`) or its Python
    with tunegate (`kind: ssh`). The first that fails is reported with its fix and the rest are
    not guessed at."""
    ex = plan.executor.model_copy(update={"host": tower})
    host = Host.parse(tower, ex.ssh_config)
    deadline = time.monotonic() + DOCKER_TIMEOUT_S

    def on_tower(script: str) -> tuple[int | None, str, str]:
        left = min(DOCKER_CALL_TIMEOUT_S, deadline - time.monotonic())
        return _run(host.argv(script), max(0.5, left)) if left > 0 else (None, "", "")

    started = time.monotonic()
    code, _, err = on_tower("true")
    if code is None or code == 255:
        line = _last_line(err) if code is not None else "no answer"
        fix = (
            f"ssh-copy-id {host.destination}, or IdentityFile in executor.ssh_config (BatchMode "
            "allows keys only)"
            if "Permission denied" in line
            else "check the tower is up and reachable (ssh -v), or executor.host / ssh_config"
        )
        return [Check("tower ssh", "FAIL", f"{host}: {line}", fix)]
    checks = [Check("tower ssh", "PASS", f"{host}: BatchMode, {time.monotonic() - started:.1f} s")]
    code, out, err = on_tower("command -v rsync sha256sum")
    found = {Path(p).name for p in out.split()}
    missing = [tool for tool in ("rsync", "sha256sum") if tool not in found]
    if missing:
        checks.append(
            Check(
                "tower tools",
                "FAIL",
                f"{host}: no {', '.join(missing)}",
                f"install {' and '.join(missing)} on the tower (apt-get install rsync coreutils)",
            )
        )
        return checks
    checks.append(Check("tower tools", "PASS", "rsync, sha256sum"))
    need = disk_need(plan).total
    where = quote(ex.remote_dir)
    code, out, err = on_tower(f"mkdir -p {where} && df -Pk {where} | tail -1")
    fields = out.split()
    if code != 0 or len(fields) < 4 or not fields[3].isdigit():
        line = _last_line(err) if code is not None else "no answer"
        checks.append(
            Check(
                "tower disk",
                "FAIL",
                f"{host}:{ex.remote_dir}: {line}",
                "make executor.remote_dir writable on the tower",
            )
        )
        return checks
    free = int(fields[3]) * 1024
    checks.append(
        Check(
            "tower disk",
            "PASS" if free >= need else "FAIL",
            f"{host}:{ex.remote_dir}: {gib(free)} free, the plan needs ~{gib(need)}",
            "free space on the tower or point executor.remote_dir elsewhere",
        )
    )
    if "docker" in kinds:
        docker = _docker_caller(ex)
        engine = f"{host}'s engine"
        daemon = _docker_daemon(docker, engine)[1:]  # its client is the tower's, not ours
        checks += daemon
        if daemon[-1].status != "FAIL":
            checks += _docker_image_and_gpus(docker, ex, engine)
    if "ssh" in kinds:
        code, out, err = on_tower(
            f"{quote(ex.python)} -c 'import tunegate; print(tunegate.__version__)'"
        )
        checks.append(
            Check("tower python", "PASS", f"{ex.python}: tunegate {out.strip()}")
            if code == 0
            else Check(
                "tower python",
                "FAIL",
                f"{ex.python}: {_last_line(err) or 'no answer'}",
                "install tunegate in a venv on the tower and set executor.python to its bin/python",
            )
        )
    return checks


# --- docker ------------------------------------------------------------------------------------
_DockerCall = Callable[..., tuple[int | None, str, str]]


def _docker(plan: Plan) -> list[Check]:
    """Client, daemon, GPU runtime, image: in that order, since each needs the one before; the
    first missing piece is reported with its fix and the rest are not guessed at."""
    if not _docker_needed(plan):
        return [Check("docker", "PASS", f"not needed (executor: {plan.executor.kind})")]
    ex = plan.executor
    if ex.host is not None:  # the tower's engine: checked with the tower, once it answers
        return []
    if ex.host is None and shutil.which("docker") is None:
        return [
            Check(
                "docker client",
                "FAIL",
                "docker: not installed (executor: docker)",
                "install Docker Engine (https://docs.docker.com/engine/install/) and the NVIDIA "
                "Container Toolkit, or set executor.kind: local",
            )
        ]
    docker = _docker_caller(ex)
    engine = ex.docker_host or os.environ.get("DOCKER_HOST") or "the local engine"
    checks = _docker_daemon(docker, engine)
    if checks[-1].status == "FAIL":
        return checks
    return [*checks, *_docker_image_and_gpus(docker, ex, engine)]


def _docker_caller(ex: ExecutorConfig) -> _DockerCall:
    """`docker ARGS…` against the plan's engine; all calls together stay within
    DOCKER_TIMEOUT_S, so a hung engine cannot stretch the doctor call by call."""
    deadline = time.monotonic() + DOCKER_TIMEOUT_S
    base = ["docker", *(["--host", ex.docker_host] if ex.docker_host else [])]
    # On the tower: its own docker client, over the same ssh the arms train through.
    tower = Host.parse(ex.host, ex.ssh_config) if ex.host else None

    def docker(*args: str) -> tuple[int | None, str, str]:
        left = min(DOCKER_CALL_TIMEOUT_S, deadline - time.monotonic())
        argv = tower.argv(quote("docker", *args)) if tower else [*base, *args]
        return _run(argv, max(0.5, left)) if left > 0 else (None, "", "")

    return docker


def _docker_daemon(docker: _DockerCall, engine: str) -> list[Check]:
    """The client's and the daemon's checks; the last one FAILs when the daemon is unreachable."""
    code, out, err = docker("version", "--format", "{{json .}}")
    if code is None:
        return [
            Check(
                "docker daemon",
                "FAIL",
                f"`docker version` gave no answer in {DOCKER_CALL_TIMEOUT_S:g} s ({engine})",
                "check the daemon (systemctl status docker) or executor.docker_host",
            )
        ]
    try:
        info = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except json.JSONDecodeError:
        info = {}
    client = (info.get("Client") or {}).get("Version", "?")
    client_check = Check("docker client", "PASS", f"docker {client}")
    server = info.get("Server")
    if code != 0 or not server:
        line = _last_line(err)
        fix = (
            "add yourself to the docker group (sudo usermod -aG docker $USER), then log in again"
            if "permission denied" in line.lower()
            else "start the daemon (sudo systemctl start docker) or fix executor.docker_host / "
            "$DOCKER_HOST"
        )
        return [client_check, Check("docker daemon", "FAIL", f"{engine}: {line}", fix)]
    return [
        client_check,
        Check("docker daemon", "PASS", f"Engine {server.get('Version', '?')} ({engine})"),
    ]


def _docker_image_and_gpus(docker: _DockerCall, ex: ExecutorConfig, engine: str) -> list[Check]:
    image = _docker_image(docker, ex, engine)
    return [_docker_gpu_runtime(docker, ex, image.status == "PASS"), image]


def _gpus_argument(ex: ExecutorConfig) -> str | None:
    """What `--gpus` the arms get: one of `devices` each (all of them tried together), or
    `gpus`."""
    if ex.devices:
        listed = ",".join(ex.devices)
        return f'"device={listed}"' if len(ex.devices) > 1 else f"device={listed}"
    return ex.gpus


_TOOLKIT_FIX = (
    "install nvidia-container-toolkit, then sudo nvidia-ctk runtime configure "
    "--runtime=docker && sudo systemctl restart docker"
)


def _docker_gpu_runtime(docker: _DockerCall, ex: ExecutorConfig, image_present: bool) -> Check:
    """GPU access for the arms' containers: the nvidia runtime listed, else a trial container
    started with their `--gpus` (which can work through the toolkit's hook or CDI without a
    runtime named nvidia): the daemon's own refusal is the FAIL's evidence."""
    gpus = _gpus_argument(ex)
    if not gpus:
        return Check("docker gpu runtime", "PASS", "not needed (executor.gpus: null)")
    code, out, err = docker("info", "--format", "{{json .Runtimes}}")
    try:
        runtimes = sorted(json.loads(out)) if code == 0 else []
    except (json.JSONDecodeError, TypeError):
        runtimes = []
    if "nvidia" in runtimes:
        return Check("docker gpu runtime", "PASS", "runtimes: " + ", ".join(runtimes))
    shown = (", ".join(runtimes) or _last_line(err)) if code is not None else "no answer"
    if image_present:
        code, _, err = docker("run", "--rm", "--gpus", gpus, "--entrypoint", "true", ex.image)
        if code == 0:
            return Check(
                "docker gpu runtime",
                "PASS",
                f"`--gpus {gpus}`: a container starts with it (no nvidia runtime listed: {shown})",
            )
        if code is not None:
            return Check(
                "docker gpu runtime",
                "FAIL",
                f"`--gpus {gpus}` refused: {_last_line(err) or f'exit {code}'}",
                _TOOLKIT_FIX,
            )
    # Not tried (no image yet, or no answer in time): a WARN, not a guess either way.
    return Check(
        "docker gpu runtime",
        "WARN",
        f"no nvidia runtime ({shown}): `--gpus {gpus}` may fail",
        _TOOLKIT_FIX,
    )


def _docker_image(docker: _DockerCall, ex: ExecutorConfig, engine: str) -> Check:
    code, out, err = docker("image", "inspect", "--format", "{{.Id}} {{.Created}}", ex.image)
    if code == 0 and out.strip():
        image_id, _, created = out.strip().partition(" ")
        return Check("docker image", "PASS", f"{ex.image} {image_id[:19]} (created {created[:10]})")
    line = _last_line(err) if code is not None else "no answer"
    return Check(
        "docker image",
        "FAIL",
        f"{ex.image} not on {engine}: {line}",
        f"tunegate image build --tag {ex.image}" + (f" --host {ex.host}" if ex.host else ""),
    )


# --- entry point -------------------------------------------------------------------------------
def run_checks(
    plan: Plan, timeout_s: float = TOTAL_TIMEOUT_S, local_timeout_s: float = LOCAL_TIMEOUT_S
) -> list[Check]:
    """Every check, in parallel; returns within about `timeout_s` whatever host hangs, and
    within `local_timeout_s` however slow this machine's own imports are.

    Plain daemon threads rather than a pool: a pool's shutdown (and the interpreter's exit)
    waits for its threads, so one hung check would hold the doctor past its timeout.
    """
    local: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("python", _python),
        ("packages", _packages),
        ("torch device", lambda: _torch_device(plan)),
        ("bitsandbytes", lambda: _bitsandbytes(plan)),
        ("model", lambda: _model(plan)),
        ("gpu memory", lambda: _memory(plan)),
        ("runtimes", lambda: _runtimes(plan)),
    ]
    # What waits on a host, a daemon or a mount (an NFS output dir can hang a stat).
    remote: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("free disk", lambda: _disk(plan)),
        ("tracking", lambda: _tracking(plan)),
        ("judge", lambda: _judge(plan)),
        ("docker", lambda: _docker(plan)),
        ("tower", lambda: _towers(plan)),
        *_hosts(plan),
        ("sandbox", _sandbox),
    ]
    jobs = local + remote
    bounds = [local_timeout_s] * len(local) + [timeout_s] * len(remote)
    slots: list[list[Check] | Exception | None] = [None] * len(jobs)

    def work(i: int, fn: Callable[[], Check | list[Check]]) -> None:
        started = time.monotonic()
        try:
            got = fn()
            checks = got if isinstance(got, list) else [got]
            for c in checks:
                c.seconds = round(time.monotonic() - started, 3)
            slots[i] = checks
        except Exception as err:
            slots[i] = err

    threads = [
        threading.Thread(target=work, args=(i, fn), name=f"doctor {name}", daemon=True)
        for i, (name, fn) in enumerate(jobs)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t, bound in zip(threads, bounds, strict=True):
        t.join(max(0.0, started + bound - time.monotonic()))
    results: list[Check] = []
    for (name, _), slot, bound in zip(jobs, slots, bounds, strict=True):
        if slot is None:
            results.append(
                Check(
                    name,
                    "FAIL",
                    f"no answer in {bound:g} s",
                    "run it alone to see why",
                    seconds=bound,
                )
            )
        elif isinstance(slot, Exception):
            results.append(Check(name, "FAIL", f"check crashed: {slot}", ""))
        else:
            results.extend(slot)
    return results
