"""`tunegate train`, the container's entrypoint: the original plan's environment variables, the
guards, kill -9 / SIGTERM and resume (MLflow included), two processes under torchrun, the docker
executor. All on the real trainer (tiny-llama, 4-bit on CPU)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TUNEGATE

from tunegate.gates import loss_trend
from tunegate.train.watch import LossWatchdog

SEED_MICRO = [
    ("Write a hello function", "def hello(): print('hi')"),
    ("Write a sum function", "def sum(a,b): return a+b"),
    ("Write a max function", "def max(a,b): return a if a>b else b"),
    ("Write a min function", "def min(a,b): return a if a<b else b"),
    ("Write a len function", "def len(x): return len(x)"),
]


@pytest.fixture
def micro(tmp_path: Path) -> Path:
    """The original plan's create_micro_dataset.py output: bare {prompt, completion} lines."""
    path = tmp_path / "data" / "train.jsonl"
    path.parent.mkdir()
    path.write_text(
        "".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in SEED_MICRO)
    )
    return path


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    return {
        **base,
        "OUTPUT_DIR": str(tmp_path / "models"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "LEARNING_RATE": "3e-3",  # tiny-llama learns in 10 steps at this rate
        **values,
    }


def _train(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TUNEGATE, "train", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _client(tmp_path: Path):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def _steps(client, run_id: str, key: str = "loss") -> list[int]:  # type: ignore[no-untyped-def]
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_seed_environment_trains_saves_reloads_and_generates(micro: Path, tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        DATASET_PATH=str(micro),
        MAX_STEPS="10",
        BATCH_SIZE="1",
        MODEL_NAME="test-micro",
        MERGE_ADAPTER="true",
    )
    proc = _train(env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    for expected in ("Loading model: tiny-llama", "Loaded in 4-bit", "Training steps: 10/10"):
        assert expected in out
    assert "Model saved to" in out and "Inference check (reloaded from disk)" in out

    model_dir = tmp_path / "models" / "test-micro"
    result = json.loads((model_dir / "result.json").read_text())
    assert result["steps"] == 10 and result["linear4bit_layers"] == 14
    fell, detail = loss_trend([tuple(x) for x in result["losses"]])
    assert fell, detail
    assert result["smoke_generation"].strip()
    meta = json.loads((model_dir / "adapter" / "tunegate.json").read_text())
    assert meta["seed"] == 42 and len(meta["train_data_hash"]) >= 12
    assert {"torch", "transformers", "peft", "trl", "bitsandbytes"} <= set(meta["versions"])
    assert (model_dir / "adapter" / "adapter_model.safetensors").is_file()

    # The merged model loads without peft and generates.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(model_dir / "merged")
    tok = AutoTokenizer.from_pretrained(model_dir / "merged")
    ids = merged.generate(**tok("Write a sum function", return_tensors="pt"), max_new_tokens=5)
    assert ids.shape[1] > 1

    client = _client(tmp_path)
    run = client.get_run(result["mlflow_run"])
    assert run.info.status == "FINISHED"
    assert run.data.params["training.batch_size"] == "1"
    assert run.data.params["training.max_steps"] == "10"
    assert _steps(client, run.info.run_id) == list(range(1, 11))
    assert _steps(client, run.info.run_id, "grad_norm") == list(range(1, 11))
    assert "tokens_per_second" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in artifacts


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"EPOCH": "3"}, "EPOCH: unknown — did you mean EPOCHS?"),
        ({"BATCH_SIZE": "two"}, "BATCH_SIZE='two'"),
        ({"MAX_STEPS": "0"}, "MAX_STEPS='0'"),
        ({"METHOD": "qlora4"}, "METHOD='qlora4'"),
        ({"TUNEGATE_PLANS": "x.yaml"}, "TUNEGATE_PLANS: unknown"),
        ({"DATASET_PATH": "/nonexistent/train.jsonl"}, "/nonexistent/train.jsonl"),
        ({"TUNEGATE_SETTINGS_JSON": '{"training": {"batch_size": 0}}'}, "TUNEGATE_SETTINGS_JSON"),
    ],
)
def test_bad_environment_is_one_clear_line_and_writes_nothing(
    micro: Path, tmp_path: Path, values: dict[str, str], message: str
) -> None:
    env = _env(tmp_path, **{"DATASET_PATH": str(micro), "MODEL_NAME": "m", **values})
    proc = _train(env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "models").exists()


def test_bad_data_line_is_named(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"\n')
    proc = _train(_env(tmp_path, DATASET_PATH=str(data)))
    assert proc.returncode == 2
    assert f"{data}:2" in proc.stderr and "Traceback" not in proc.stderr


def test_exploding_loss_stops_with_the_step_and_fails(micro: Path, tmp_path: Path) -> None:
    env = _env(
        tmp_path, DATASET_PATH=str(micro), MAX_STEPS="30", BATCH_SIZE="1", LEARNING_RATE="1.0"
    )
    proc = _train(env, "--name", "boom")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    # Whichever guard fires on this CPU (NaN gradient, divergence, or a loss stuck flat where
    # blown-up weights saturate the logits), it names the step.
    assert "FAIL:" in proc.stderr and re.search(r"\bsteps? \d+", proc.stderr)
    assert "Training steps: 30/30" not in proc.stdout  # stopped early
    assert not (tmp_path / "models" / "boom" / "adapter" / "tunegate.json").exists()
    run_id = json.loads((tmp_path / "models" / "boom" / "tracking.json").read_text())["run_id"]
    run = _client(tmp_path).get_run(run_id)
    assert run.info.status == "FAILED" and "at step" in run.data.tags["tunegate.error"]


def test_a_learning_rate_the_plan_refuses_is_one_line(micro: Path, tmp_path: Path) -> None:
    proc = _train(_env(tmp_path, DATASET_PATH=str(micro), LEARNING_RATE="100"), "--name", "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "LEARNING_RATE / --learning-rate: Input should be less than or equal to 1" in " ".join(
        proc.stderr.split()
    )


def test_loss_watchdog_judges_windows_not_steps() -> None:
    rng = random.Random(0)
    calm = LossWatchdog(window=5, factor=3.0)
    noisy = [2.0 + rng.uniform(-0.5, 0.5) for _ in range(60)]
    noisy[30] = 9.0  # one spike is noise, not divergence
    assert all(calm.check(step, v) is None for step, v in enumerate(noisy, 1))

    rising = LossWatchdog(window=5, factor=3.0)
    values = [2.0 + 0.01 * (s % 3) for s in range(10)] + [8.0 + 0.01 * (s % 3) for s in range(10)]
    reasons = [rising.check(step, v) for step, v in enumerate(values, 1)]
    first = next(i for i, r in enumerate(reasons, 1) if r)
    assert 12 <= first <= 15
    assert f"diverged at step {first}" in reasons[first - 1]

    assert LossWatchdog(5, 3.0).check(4, float("nan")) == "loss is nan at step 4"


def test_loss_watchdog_stops_a_loss_stuck_flat() -> None:
    # lr 100 on an Intel Xeon with AMX: the logits saturate, the loss sits at ln(512) = 6.2383
    # from step 3 on, below the random-init loss, so no window mean ever looks diverged.
    flat = LossWatchdog(window=5, factor=3.0)
    values = [6.69, 6.0] + [6.238324] * 30
    reasons = [flat.check(step, v) for step, v in enumerate(values, 1)]
    first = next(i for i, r in enumerate(reasons, 1) if r)
    assert first == 12  # 2 × window identical steps: 3..12
    assert "loss stuck at 6.23832 for steps 3–12" in reasons[first - 1]
    # A converged loss still moves from batch to batch: not stuck.
    calm = LossWatchdog(window=5, factor=3.0)
    rng = random.Random(1)
    assert all(calm.check(s, 0.01 + rng.uniform(0, 1e-4)) is None for s in range(1, 200))
    assert "gradient norm is inf at step 2" in (LossWatchdog(5, 3.0).check(2, 1.0, float("inf")))


def _adapter(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter" / "adapter_model.safetensors"))


# A kill at a random checkpoint of `tunegate train`: long; the ladder's resume is in make test.
@pytest.mark.slow
def test_kill_9_at_a_random_step_then_resume_matches_an_uninterrupted_run(
    micro: Path, tmp_path: Path
) -> None:
    common = {"DATASET_PATH": str(micro), "MAX_STEPS": "16", "BATCH_SIZE": "1"}
    whole = _train(_env(tmp_path, **common, MODEL_NAME="whole"), "--plan", str(_plan(tmp_path, 4)))
    assert whole.returncode == 0, whole.stderr[-2000:]

    env = _env(tmp_path, **common, MODEL_NAME="killed")
    checkpoints = tmp_path / "models" / "killed" / "checkpoints"
    kill_after = random.Random().choice([4, 8, 12])
    proc = subprocess.Popen(
        [TUNEGATE, "train", "--plan", str(_plan(tmp_path, save_steps=4))],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    target = checkpoints / f"checkpoint-{kill_after}" / "trainer_state.json"
    deadline = time.monotonic() + 300
    try:
        while not target.is_file():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run_id = json.loads((tmp_path / "models" / "killed" / "tracking.json").read_text())["run_id"]

    resumed = _train(env, "--plan", str(_plan(tmp_path, save_steps=4)))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads((tmp_path / "models" / "killed" / "result.json").read_text())
    assert result["resumed_from"].startswith("checkpoint-")
    assert result["mlflow_run"] == run_id  # the same MLflow run, re-opened
    client = _client(tmp_path)
    assert _steps(client, run_id) == list(range(1, 17))  # every step once

    # The same weights to the last bit: the checkpoint restored everything, in its precision.
    a = _adapter(tmp_path / "models" / "whole")
    b = _adapter(tmp_path / "models" / "killed")
    assert a.keys() == b.keys()
    assert [k for k in a if not a[k].equal(b[k])] == []


def _plan(tmp_path: Path, save_steps: int) -> Path:
    """A plan whose training block checkpoints every `save_steps` (the original plan's env has no
    variable for it)."""
    plan = tmp_path / f"save{save_steps}.yaml"
    plan.write_text(
        "name: p\narms:\n  control: {data: d.jsonl, role: control}\n"
        "  experiment: {data: d.jsonl, role: experiment}\n"
        f"training: {{save_steps: {save_steps}, learning_rate: 0.003}}\n"
    )
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    return plan


def test_sigterm_saves_a_checkpoint_and_the_next_run_finishes(micro: Path, tmp_path: Path) -> None:
    env = _env(tmp_path, DATASET_PATH=str(micro), MAX_STEPS="400", BATCH_SIZE="1", MODEL_NAME="t")
    proc = subprocess.Popen(
        [TUNEGATE, "train"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Training steps: 5/400" in line:
            proc.send_signal(signal.SIGTERM)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) == 143
    checkpoints = list((tmp_path / "models" / "t" / "checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1  # save_steps is 25: this one is SIGTERM's
    stopped_at = int(checkpoints[0].name.split("-")[1])
    assert 5 <= stopped_at < 400
    assert not (tmp_path / "models" / "t" / "adapter" / "tunegate.json").exists()

    finished = _train({**env, "MAX_STEPS": str(stopped_at + 3)})
    assert finished.returncode == 0, finished.stderr[-2000:]
    result = json.loads((tmp_path / "models" / "t" / "result.json").read_text())
    assert result["resumed_from"] == checkpoints[0].name and result["steps"] == stopped_at + 3


def test_two_processes_under_torchrun_only_rank_0_saves_and_logs(
    micro: Path, tmp_path: Path
) -> None:
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    env = _env(
        tmp_path,
        DATASET_PATH=str(micro),
        MAX_STEPS="6",
        BATCH_SIZE="1",
        MODEL_NAME="ddp",
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--no-python", TUNEGATE, "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]  # both ranks exited 0
    assert proc.stdout.count("Loading model: tiny-llama") == 2  # two processes trained
    assert proc.stdout.count("Training steps: 6/6") == 1  # one logs
    assert proc.stdout.count("Model saved to") == 1  # one saves
    result = json.loads((tmp_path / "models" / "ddp" / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 6
    client = _client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("tunegate-train").experiment_id])
    assert len(runs) == 1
    assert _steps(client, runs[0].info.run_id) == list(range(1, 7))


def test_docker_executor_builds_the_seed_command_and_its_environment_trains(
    micro: Path, tmp_path: Path
) -> None:
    """No Docker engine runs here: check the command, then run the container's entrypoint with
    exactly the environment that command passes, paths mapped back to this side."""
    from tunegate.models import ensure_tiny_llama
    from tunegate.plan import ExecutorConfig, LoraSettings, QuantizationConfig, TrainingConfig
    from tunegate.train.docker import docker_command

    arm_dir = tmp_path / "stage-1" / "control"
    (arm_dir / "data").mkdir(parents=True)
    train_file = arm_dir / "data" / "train.jsonl"
    train_file.write_text(micro.read_text())
    run = docker_command(
        ExecutorConfig(kind="docker", image="llama3-training", docker_host="ssh://me@tower"),
        name="tunegate-demo-tiny-control",
        arm_dir=arm_dir,
        model_dir=ensure_tiny_llama(),
        train_file=train_file,
        val_file=None,
        training=TrainingConfig(max_steps=4, batch_size=1, learning_rate=3e-3),
        quant=QuantizationConfig(),
        lora=LoraSettings(r=8, alpha=16),
        max_length=256,
        seed=7,
        tracking_uri="http://server-ip:5000",
    )
    argv = run.argv
    assert argv[:3] == ["docker", "--host", "ssh://me@tower"]
    assert argv[3:7] == ["run", "--rm", "--name", "tunegate-demo-tiny-control"]
    assert argv[argv.index("--gpus") + 1] == "all" and argv[-1] == "llama3-training"
    assert f"{arm_dir.resolve()}:/work/control" in argv
    env_args = {
        argv[i + 1].split("=", 1)[0]: argv[i + 1].split("=", 1)[1]
        for i, a in enumerate(argv)
        if a == "-e"
    }
    assert env_args == run.env
    assert env_args["DATASET_PATH"] == "/work/control/data/train.jsonl"
    assert env_args["MAX_STEPS"] == "4" and env_args["BATCH_SIZE"] == "1"
    assert env_args["MODEL_NAME"] == "control"
    assert env_args["MLFLOW_TRACKING_URI"] == "http://server-ip:5000"
    assert env_args["EPOCHS"] == "3"

    # The entrypoint, with that environment (a local store instead of the unreachable server).
    def outside(value: str) -> str:
        return str(run.host_path(value)) if value.startswith(("/work", "/base")) else value

    env = {k: outside(v) for k, v in run.env.items() if k != "OUTPUT_DIR"}
    env["OUTPUT_DIR"] = str(arm_dir.parent)  # /work, which holds the arm at /work/control
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = _train({**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(run.host_path("/work/control/result.json").read_text())
    assert result["steps"] == 4
    # Laid out as a local arm: the adapter in the arm's directory.
    meta = json.loads((arm_dir / "adapter" / "tunegate.json").read_text())
    assert meta["lora"]["r"] == 8 and meta["seed"] == 7  # every plan setting arrived


def test_ladder_with_the_docker_executor_and_no_docker_fails_the_stage_clearly(
    example: Path,
) -> None:
    text = example.read_text()
    example.write_text(text + "\nexecutor:\n  kind: docker\n")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TUNEGATE, "run", str(example), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    # Stage 0 catches it first: the doctor's docker check fails and nothing trains.
    proc = run("--until", "1")
    assert proc.returncode == 1
    assert "docker: not installed (executor: docker)" in proc.stdout
    assert "Stage 1" not in proc.stdout
    # Forced past stage 0, the training stage itself fails clearly, with the command it built.
    proc = run("--stage", "1", "--force-stage", "1")
    assert proc.returncode == 1
    assert "no `docker` client on PATH" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    run_dir = example.parent / "runs" / "metadata-experiment"
    command = json.loads(next(run_dir.glob("stage-1-*/control/docker-command.json")).read_text())
    assert (
        command[:2] == ["docker", "run"]
        and "DATASET_PATH=/work/control/data/train.jsonl" in command
    )
