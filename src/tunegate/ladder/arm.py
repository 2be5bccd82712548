"""One arm of a training stage: train it (or reuse its complete adapter), reload it from disk,
smoke-generate, and generate its test answers for the evaluation."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunegate.artifacts import ADAPTER, arm_problem, manifest
from tunegate.data.items import Item, items_hash, write_items
from tunegate.diskspace import disk_full
from tunegate.evaluate.pipeline import Generations, Settings, generate_arm
from tunegate.events import (
    ArmFailed,
    ArmReused,
    ArmStarted,
    ArmTrained,
    SmokeGenerated,
    TrainingStarted,
    TrainingSteps,
)
from tunegate.gates import ArmEvidence
from tunegate.ladder.context import Climb, StageRun
from tunegate.ladder.placement import Placement
from tunegate.ladder.selection import selection_items
from tunegate.plan import ExecutorConfig, TrainingConfig, plan_hash
from tunegate.remote.host import RemoteError
from tunegate.state import ArmRecord, GenerationRecord
from tunegate.train.qlora import TrainResult
from tunegate.train.watch import MetricSink


@dataclass
class ArmJob:
    """One arm of one stage: what it trains, validates and tests on, and where it writes."""

    run: StageRun
    name: str
    role: str
    model_dir: Path
    arm_dir: Path
    train_items: list[Item]
    val_items: list[Item]
    test_items: list[Item]
    record: ArmRecord
    seed: int  # of this training run: its data order, LoRA init and sampling
    replicated: bool = False  # one of several seeds of its arm

    @classmethod
    def of(
        cls,
        climb: Climb,
        run: StageRun,
        arm: str,
        model_dir: Path,
        seed: int | None = None,
        render: Callable[[list[Item]], list[Item]] = lambda items: items,
    ) -> ArmJob:
        """The arm's training run with `seed` (default the plan's). Several seeds of one arm
        are named "<arm>.seed<seed>", in the state, the run directory and tracking. `render`
        gives the items' prompts as the model sees them (the plan's prompt format)."""
        role = climb.plan.arms[arm].role
        sel = climb.selection(run.index)
        replicated = run.stage.seeds > 1
        seed = climb.plan.seed if seed is None else seed
        name = f"{arm}.seed{seed}" if replicated else arm
        fresh = ArmRecord(arm=arm, seed=seed) if replicated else ArmRecord()
        return cls(
            run=run,
            name=name,
            role=role,
            model_dir=model_dir,
            arm_dir=run.stage_dir / name,
            train_items=render(selection_items(climb.exp, role, sel, sel.train)),
            val_items=render(selection_items(climb.exp, role, sel, sel.val)),
            test_items=render(selection_items(climb.exp, role, sel, sel.test)),
            record=run.record.arms.setdefault(name, fresh),
            seed=seed,
            replicated=replicated,
        )


def arm_jobs(climb: Climb, run: StageRun, arms: list[str], model_dir: Path) -> list[ArmJob]:
    """Every training run of the stage: each arm once per seed, arm by arm."""
    from tunegate.prompts import PromptFormat, chat_tokenizer

    seeds = climb.plan.training_seeds(run.stage)
    fmt = PromptFormat.of(climb.plan.model)
    tokenizer = chat_tokenizer(model_dir, fmt)  # loaded once for every arm and seed

    def render(items: list[Item]) -> list[Item]:
        return fmt.render_items(tokenizer, items)

    return [ArmJob.of(climb, run, arm, model_dir, seed, render) for arm in arms for seed in seeds]


def run_arm(
    climb: Climb, arm: ArmJob, placement: Placement = Placement()
) -> tuple[ArmEvidence, Generations]:
    """The whole arm, start to generations: what a stage does arm after arm."""
    start_arm(climb, arm)
    return finish_arm(climb, arm, train_or_reuse(climb, arm, placement))


def start_arm(climb: Climb, arm: ArmJob) -> None:
    run = arm.run
    climb.events.emit(
        ArmStarted(run.index, run.stage.name, arm.name, arm.role, arm.record, run.record)
    )


def train_or_reuse(climb: Climb, arm: ArmJob, placement: Placement) -> TrainResult | str:
    """The arm's training result: its complete adapter reused, or trained in `placement`; the
    error when training crashed. Safe to run for several arms at once, each in its thread."""
    recorded = arm.record.train
    problem = None
    if recorded and arm.record.status == "done":
        problem = arm_problem(arm.arm_dir, arm.record, full=True)  # every byte, as recorded
        if problem:
            climb.events.say(
                f"  {arm.name}: {problem} since it was trained: training it again", "warning"
            )
    if recorded and arm.record.status == "done" and problem is None:
        # Where this run directory holds it now, not where it was trained: a moved or copied
        # run directory reuses its own adapters.
        climb.events.emit(ArmReused(arm.name, arm.arm_dir / ADAPTER))
        return recorded
    return _train(climb, arm, placement)


def finish_arm(
    climb: Climb, arm: ArmJob, trained: TrainResult | str
) -> tuple[ArmEvidence, Generations]:
    """The arm's evidence from its training, then its adapter reloaded and its answers."""
    ev = ArmEvidence()
    if isinstance(trained, str):
        ev.error = trained
        return ev, Generations()
    ev.trained = True
    ev.steps = trained.steps
    ev.losses = [(step, loss) for step, loss in trained.losses]
    ev.eval_loss_before = trained.eval_loss_before
    ev.eval_loss_after = trained.eval_loss_after
    ev.linear4bit_layers = trained.linear4bit_layers
    return ev, _reload_and_generate(climb, arm, arm.arm_dir / ADAPTER, ev)


def _train(climb: Climb, arm: ArmJob, placement: Placement) -> TrainResult | str:
    """Train the arm, recording it in the state; the error when it crashed."""
    plan, stage = climb.plan, arm.run.stage
    training = plan.stage_training(stage)
    kind = stage.executor or plan.executor.kind
    executor = placement.executor(plan.executor, kind)
    arm.record.status = "training"
    arm.record.trained_on = placement.describe(executor, kind)
    climb.save()
    params = {
        **{f"training.{k}": v for k, v in training.model_dump().items()},
        "train_items": len(arm.train_items),
        "val_items": len(arm.val_items),
        "train_data_hash": items_hash(arm.train_items),
        "seed": arm.seed,
        "method": plan.quantization.method,
        "model": plan.model.name,
        # Where it trained: MLflow and the report say it beside the arm's numbers.
        "executor": kind,
        "host": placement.host or "this machine",
        "trained_on": arm.record.trained_on,
    }
    resuming = any((arm.arm_dir / "checkpoints").glob("checkpoint-*"))
    climb.events.emit(TrainingStarted(arm.name, len(arm.train_items), resuming, params, arm.record))
    try:
        if executor.host is not None:
            result = _train_on_host(climb, arm, training, executor, placement.device)
        elif kind == "docker":
            result = _train_in_docker(climb, arm, training, executor)
        else:
            result = _train_here(climb, arm, training)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # a crash is a FAIL verdict with its reason, not a traceback
        # A tower's failure is the tower's: a full disk in its log is not this machine's.
        full = None if isinstance(err, RemoteError) else disk_full(err, arm.arm_dir)
        if full is not None:  # nothing more can be written: the CLI says it in one line
            raise full from err
        error = f"{type(err).__name__}: {err}"
        arm.record.status, arm.record.error = "failed", error
        arm.arm_dir.mkdir(parents=True, exist_ok=True)
        (arm.arm_dir / "error.txt").write_text(traceback.format_exc())
        climb.save()
        climb.events.emit(ArmFailed(arm.name, error))
        return error
    arm.record.status, arm.record.train, arm.record.error = "done", result, None
    arm.record.manifest = manifest(arm.arm_dir)  # what reuse and "passed" will check
    climb.save()
    climb.events.emit(ArmTrained(arm.name, result, arm.record))
    return result


def _steps_to_events(climb: Climb, arm: ArmJob) -> MetricSink:
    """The trainer's per-step metrics, as events (tracking logs them)."""

    def sink(entries: list[tuple[dict[str, float], int]]) -> None:
        climb.events.emit(TrainingSteps(arm.name, entries, arm.record))

    return sink


def _train_here(climb: Climb, arm: ArmJob, training: TrainingConfig) -> TrainResult:
    from tunegate.train.qlora import train_arm

    plan, stage = climb.plan, arm.run.stage
    return train_arm(
        model_dir=arm.model_dir,
        train_items=arm.train_items,
        val_items=arm.val_items,
        out_dir=arm.arm_dir,
        training=training,
        quant=plan.quantization,
        lora=plan.lora,
        max_length=plan.model.max_length,
        seed=arm.seed,
        metric_sink=_steps_to_events(climb, arm),
        on_step=climb.bars.training(f"{arm.name}: train"),
        allow_truncation=stage.checks.truncation == "warn",
        provenance={"plan_hash": plan_hash(plan), "stage": stage.name, "arm": arm.name},
    )


def _write_arm_data(arm: ArmJob) -> Path:
    """The arm's training (and validation) items, where a container or a tower reads them."""
    data_dir = arm.arm_dir / "data"
    write_items(data_dir / "train.jsonl", arm.train_items)
    if arm.val_items:
        write_items(data_dir / "val.jsonl", arm.val_items)
    return data_dir


def _train_in_docker(
    climb: Climb, arm: ArmJob, training: TrainingConfig, executor: ExecutorConfig
) -> TrainResult:
    """Train one arm in the training container; its results come back through /work."""
    from tunegate.events import Notice
    from tunegate.tracking import tracking_uri
    from tunegate.train.docker import container_name, docker_command, run_docker

    plan, arm_dir = climb.plan, arm.arm_dir
    data_dir = _write_arm_data(arm)
    run = docker_command(
        executor,
        name=container_name(plan.name, arm.run.stage.name, arm.name),
        arm_dir=arm_dir,
        model_dir=arm.model_dir,
        train_file=data_dir / "train.jsonl",
        val_file=data_dir / "val.jsonl" if arm.val_items else None,
        training=training,
        quant=plan.quantization,
        lora=plan.lora,
        max_length=plan.model.max_length,
        seed=arm.seed,
        tracking_uri=tracking_uri(plan),
    )
    (arm_dir / "docker-command.json").write_text(json.dumps(run.argv, indent=1))
    climb.events.emit(Notice(f"  {arm.name}: training in container {run.name} ({executor.image})"))
    result = TrainResult.from_json(run_docker(run, arm_dir / "train.log"))
    _steps_to_events(climb, arm)([({"loss": loss}, step) for step, loss in result.losses])
    return result


def _train_on_host(
    climb: Climb,
    arm: ArmJob,
    training: TrainingConfig,
    executor: ExecutorConfig,
    device: str | None,
) -> TrainResult:
    """Train one arm on its tower (`executor.host`): ship, start or reattach, follow its log
    (metrics recorded here), fetch and check its outputs."""
    from tunegate.events import Notice
    from tunegate.remote.training import RemoteArm, train_remote
    from tunegate.train.docker import arm_env
    from tunegate.train.watch import read_metrics_line

    plan, stage = climb.plan, arm.run.stage
    _write_arm_data(arm)
    job = RemoteArm.on_tower(
        executor,
        plan=plan.name,
        stage=stage.name,
        stage_hash=arm.run.record.hash,
        arm_dir=arm.arm_dir,
        model_dir=arm.model_dir,
    )
    env = arm_env(
        arm=job.work,
        base=job.base,
        train_file="data/train.jsonl",
        val_file="data/val.jsonl" if arm.val_items else None,
        training=training,
        quant=plan.quantization,
        lora=plan.lora,
        max_length=plan.model.max_length,
        seed=arm.seed,
        # The trainer's own record stays with the arm there; the plan's store is filled here,
        # from the metric lines of its log, so only this machine needs to reach it.
        tracking_uri=None,
    )
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{job.work}/mlflow.db"
    if device is not None and not job.in_docker:
        env["CUDA_VISIBLE_DEVICES"] = device  # a container gets its GPU from --gpus
    climb.events.emit(Notice(f"  {arm.name}: training on {job.host} in {job.describe()}"))
    record_steps = _steps_to_events(climb, arm)

    def on_line(line: str) -> None:
        entries = read_metrics_line(line)
        if entries is not None:
            record_steps(entries)
        log.write(line + "\n")
        log.flush()

    with (arm.arm_dir / "train.log").open("a", encoding="utf-8") as log:
        raw = train_remote(
            job,
            local_arm=arm.arm_dir,
            local_model=arm.model_dir.resolve(),
            env=env,
            on_line=on_line,
            say=lambda text: climb.events.emit(Notice(text)),
        )
    result = TrainResult.from_json(raw)
    # Steps the stream missed (a connection dropped while they were logged): the sink skips the
    # ones it has.
    record_steps([({"loss": loss}, step) for step, loss in result.losses])
    return result


def _reload_and_generate(climb: Climb, arm: ArmJob, adapter: Path, ev: ArmEvidence) -> Generations:
    """Reload the adapter from disk (proves the save, and is what every later use of it
    does), smoke-generate, and generate the test items when the stage evaluates."""
    from tunegate.generate import (
        MAX_BATCH_SEQUENCES,
        Sampling,
        TransformersBackend,
        generate,
        generation_steps,
        load_for_inference,
    )

    stage = arm.run.stage
    try:
        model, tokenizer = load_for_inference(arm.model_dir, adapter, climb.plan.quantization)
        ev.saved_and_reloaded = True
    except Exception as err:
        ev.error = f"reload failed: {type(err).__name__}: {err}"
        return Generations()
    started = time.perf_counter()
    smoke_prompt = (arm.val_items or arm.train_items)[0].prompt
    ev.smoke_generation = generate(
        model, tokenizer, [smoke_prompt], max_new_tokens=stage.evaluation.max_new_tokens
    )[0]
    climb.events.emit(SmokeGenerated(arm.name, ev.smoke_generation))
    shapes = [(1, Sampling(max_new_tokens=stage.evaluation.max_new_tokens))]
    generations = Generations()
    if stage.evaluation.mode == "full":
        settings = Settings.from_config(stage.evaluation, arm.seed)
        backend = TransformersBackend(model, tokenizer, name=arm.name)
        total = len(arm.test_items) * (1 + (settings.samples if settings.wants_samples else 0))
        generations = generate_arm(
            backend,
            arm.test_items,
            settings,
            climb.bars.counter(f"{arm.name}: generate", total),
        )
        shapes += [(len(arm.test_items), s) for s in settings.samplings()]
    steps = [generation_steps(n, s, MAX_BATCH_SEQUENCES) for n, s in shapes]
    arm.record.generation = GenerationRecord(
        seconds=time.perf_counter() - started,
        row_steps=sum(r for r, _ in steps),
        batch_steps=sum(b for _, b in steps),
    )
    return generations
