"""The docker executor: a stage's arm trained in the training container, as the original plan runs
it.

The container's entrypoint is `tunegate train`, configured by the original plan's environment
variables; the arm's directory is mounted at /work (data in, checkpoints and adapter out) and the
base model read-only at /base. Re-running the same command resumes from the checkpoints in /work.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tunegate.plan import (
    ExecutorConfig,
    LoraSettings,
    QuantizationConfig,
    TrainingConfig,
)
from tunegate.train.watch import TrainingStopped

WORK, BASE = "/work", "/base"


@dataclass
class DockerRun:
    argv: list[str]
    env: dict[str, str]  # what `-e` passes: the container's whole configuration
    mounts: dict[str, Path]  # container path → host path
    name: str

    def host_path(self, container_path: str) -> Path:
        for inside, outside in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if container_path == inside or container_path.startswith(inside + "/"):
                return outside / container_path[len(inside) :].lstrip("/")
        raise ValueError(f"{container_path} is not under a mount")


def container_name(*parts: str) -> str:
    """Docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]*."""
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", "-".join(("tunegate", *parts))).strip("-")[:120]


def arm_env(
    *,
    arm: str,
    base: str,
    train_file: str,
    val_file: str | None,
    training: TrainingConfig,
    quant: QuantizationConfig,
    lora: LoraSettings,
    max_length: int,
    seed: int,
    tracking_uri: str | None,
) -> dict[str, str]:
    """The trainer's whole configuration as the original plan's environment variables (and
    tunegate's), with the arm's directory (`arm`, data files relative to it) and the base model
    where the trainer sees them. The trainer writes into OUTPUT_DIR/MODEL_NAME: the arm's
    directory, laid out as a local arm's (adapter/, checkpoints/, result.json)."""
    output_dir, _, model_name = arm.rstrip("/").rpartition("/")
    return {
        # The original plan's variables, same names and meaning.
        "DATASET_PATH": f"{arm}/{train_file}",
        **({"VAL_DATASET_PATH": f"{arm}/{val_file}"} if val_file else {}),
        **({"MAX_STEPS": str(training.max_steps)} if training.max_steps else {}),
        "BATCH_SIZE": str(training.batch_size),
        "EPOCHS": f"{training.epochs:g}",
        "MODEL_NAME": model_name,
        # A server is reachable from the container; a local sqlite store is not (the ladder
        # logs the container's results into it afterwards).
        **(
            {"MLFLOW_TRACKING_URI": tracking_uri}
            if tracking_uri and tracking_uri.startswith(("http://", "https://", "databricks"))
            else {}
        ),
        # tunegate's: where things are, and every other setting of the plan, whole.
        "OUTPUT_DIR": output_dir or "/",
        "BASE_MODEL": base,
        "MAX_LENGTH": str(max_length),
        "SEED": str(seed),
        "TUNEGATE_SETTINGS_JSON": json.dumps(
            {
                "training": training.model_dump(mode="json"),
                "quantization": quant.model_dump(mode="json"),
                "lora": lora.model_dump(mode="json"),
            },
            separators=(",", ":"),
        ),
    }


def run_argv(
    executor: ExecutorConfig,
    *,
    name: str,
    env: dict[str, str],
    arm_dir: str,
    model_dir: str,
    detach: bool = False,
) -> list[str]:
    """`docker run` for one arm, the arm's directory at /work/NAME (NAME its base name, the
    trainer's MODEL_NAME) and the base model read-only at /base, as the engine's host sees
    them. `detach`: started in the background and kept after it exits (its status and log are
    read afterwards), as a remote arm runs."""
    argv = ["docker"]
    if executor.docker_host:
        argv += ["--host", executor.docker_host]
    argv += ["run", "--detach" if detach else "--rm", "--name", name]
    if executor.gpus:
        argv += ["--gpus", executor.gpus]
    if executor.user:
        argv += ["--user", executor.user]
    inside = f"{WORK}/{arm_dir.rstrip('/').rpartition('/')[2]}"
    argv += ["-v", f"{arm_dir}:{inside}", "-v", f"{model_dir}:{BASE}:ro"]
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    return [*argv, *executor.extra_args, executor.image]


def docker_command(
    executor: ExecutorConfig,
    *,
    name: str,
    arm_dir: Path,
    model_dir: Path,
    train_file: Path,
    val_file: Path | None,
    training: TrainingConfig,
    quant: QuantizationConfig,
    lora: LoraSettings,
    max_length: int,
    seed: int,
    tracking_uri: str | None,
) -> DockerRun:
    """The `docker run` that trains one arm on an engine that sees this machine's paths. Data
    files must lie inside `arm_dir`."""
    arm_dir, model_dir = arm_dir.resolve(), model_dir.resolve()

    def inside(path: Path) -> str:
        return path.resolve().relative_to(arm_dir).as_posix()

    env = arm_env(
        arm=f"{WORK}/{arm_dir.name}",
        base=BASE,
        train_file=inside(train_file),
        val_file=inside(val_file) if val_file else None,
        training=training,
        quant=quant,
        lora=lora,
        max_length=max_length,
        seed=seed,
        tracking_uri=tracking_uri,
    )
    argv = run_argv(executor, name=name, env=env, arm_dir=str(arm_dir), model_dir=str(model_dir))
    mounts = {f"{WORK}/{arm_dir.name}": arm_dir, BASE: model_dir}
    return DockerRun(argv=argv, env=env, mounts=mounts, name=name)


def run_docker(run: DockerRun, log: Path) -> dict:
    """Run the container, its output teed to `log`; return its result.json. A missing docker
    client, a failed container or a missing result raises TrainingStopped with the reason."""
    if shutil.which(run.argv[0]) is None:
        raise TrainingStopped(
            "docker executor: no `docker` client on PATH (install Docker, or set executor.kind: "
            "local)"
        )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.run(run.argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise TrainingStopped(
            f"docker executor: container {run.name} exited {proc.returncode}: "
            + (" | ".join(tail) or "no output")
            + f" (log: {log})"
        )
    result_file = run.host_path(f"{run.env['OUTPUT_DIR']}/{run.env['MODEL_NAME']}/result.json")
    if not result_file.is_file():
        raise TrainingStopped(f"docker executor: container finished without {result_file}")
    result = json.loads(result_file.read_text())
    # Paths inside the result are the container's; the ladder reads them on this side.
    for key in ("adapter_dir", "merged_dir"):
        if result.get(key):
            result[key] = str(run.host_path(result[key]))
    return result
