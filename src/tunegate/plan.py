"""The plan: `tunegate.yaml`, validated by pydantic. Defaults reproduce the original plan's ladder.

Every default that differs from the library's default says so next to it, with the reason.
Relative paths in a plan are resolved against the plan file's directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from tunegate.errors import UserError
from tunegate.models import TINY_LLAMA, embedded, model_fingerprint
from tunegate.registry import (
    ALL_METRICS,
    DEFAULT_METRICS,
    GATES,
    METRICS,
    PASS_AT,
    known,
    listed_metrics,
    metric_spec,
)


class _Strict(BaseModel):
    # An unknown field is almost always a typo that would silently do nothing: reject it.
    # Every number must be finite: YAML reads `.inf` and `.nan` (and 1e999) as floats, and an
    # infinite learning rate or estimate would pass a `ge=0` bound.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Bounds on numbers. A value past one cannot be meant (or would crash the run later); values
# that are merely unusual load with a warning (`_plan_warnings`). Each bound's reason:
# AdamW moves every weight by about lr per step whatever the gradient's scale; weights are
# ~0.01-0.1, so at lr > 1 the first step replaces them with noise.
MAX_LEARNING_RATE = 1.0
# Warned above: LoRA fine-tuning uses 1e-5 to 1e-3 (the QLoRA paper: 2e-4, 1e-4 from 33B;
# full fine-tuning 1e-5 to 5e-5); from 1e-2 a pretrained model's loss usually diverges.
HIGH_LEARNING_RATE = 1e-2
# Per device: 65,536 sequences of >= 16 tokens is a million tokens of activations per step,
# more than any one GPU holds for a model worth fine-tuning.
MAX_BATCH_SIZE = 65_536
# Accumulation multiplies the batch: 65,536 x 65,536 sequences per update is no fine-tune.
MAX_ACCUMULATION = 65_536
# Ten million optimizer steps: 20x Llama 2's whole pre-training (500k steps).
MAX_STEPS = 10_000_000
# Warned above: more than 100 passes over the same items memorizes them (the QLoRA paper
# trains 1 to 3 epochs; the example's random-init tiny-llama needs 30).
HIGH_EPOCHS = 100
# 10,000 passes: at the refused end of memorization, and almost surely a typo for max_steps.
MAX_EPOCHS = 10_000
# Tokens in one sequence: no open model reads or writes more than ~1M (Llama 4 Scout aside,
# whose 10M context no single GPU fine-tunes).
MAX_TOKENS = 1 << 20
# AdamW shrinks each weight by lr x weight_decay per step; common values are 0 (Trainer),
# 0.01 and 0.1 (Llama pre-training). Past 10, at any lr worth training with, decay, not the
# data, decides the weights.
MAX_WEIGHT_DECAY = 10.0
# torch's thread pool: more threads than any one machine's hardware threads (dual-socket
# servers top out near 1,000) only contend.
MAX_THREADS = 1024
# A LoRA rank is at most its layer's width; the widest open model is 16,384 (Llama 3.1 405B).
MAX_LORA_RANK = 16_384
# LoRA scales its update by alpha / r; alpha = 2r at the largest rank is 32,768.
MAX_LORA_ALPHA = 65_536
# Loss watchdog windows: a window longer than any stage's steps never fills.
MAX_DIVERGENCE_WINDOW = 10_000
# A test program that needs more than an hour is no unit test; a stage waits that per item.
MAX_PROGRAM_TIMEOUT_S = 3600.0
# pass@k: Chen et al. (2021) sample n = 200 for k up to 100; n multiplies generation time.
MAX_SAMPLES = 1000
# At T = 10 the next-token distribution is close to uniform over the vocabulary: noise.
MAX_TEMPERATURE = 10.0
# Judge calls in flight: 4x vLLM's default max_num_seqs (256); beyond, calls only queue at
# the server while their timeouts run.
MAX_JUDGE_CONCURRENCY = 1024
# Each retry waits up to 30 s (tunegate.endpoint): 20 retries hold a call ~10 minutes;
# more would hide an endpoint that is down.
MAX_JUDGE_RETRIES = 20
# A judgment repeated 100 times measures the judge's noise well; more only costs.
MAX_JUDGE_REPEATS = 100
# numpy (through transformers.set_seed) takes seeds in [0, 2**32); a stage adds up to 15 for
# its seeds. 2**31 - 1 also fits every 32-bit signed generator.
MAX_SEED = 2**31 - 1


def _no_nul(path: Path) -> Path:
    # The OS cannot name a file with a NUL byte: os.stat and mkdir raise ValueError, not OSError.
    if "\0" in str(path):
        raise ValueError("a path cannot contain a NUL byte")
    return path


class ModelConfig(_Strict):
    name: str = Field(
        TINY_LLAMA,
        description="'tiny-llama' (the embedded default, built locally) or a local model directory "
        "(config.json + weights + tokenizer). Nothing is downloaded at run time.",
    )
    max_length: int = Field(
        512,
        ge=16,
        le=MAX_TOKENS,
        description="Token limit per sample. TRL's default is 1024 and truncates silently; "
        "tunegate counts tokens first and fails the arm, naming every sample that is too long.",
    )
    prompt_format: Literal["raw", "chat"] = Field(
        "raw",
        description="raw: the prompt as written (a base model, tiny-llama). chat: through the "
        "model's chat template as one user turn, for training (loss on the assistant turn only) "
        "and generation alike, the same in both arms. An instruct model needs chat: it was "
        "trained to answer inside that template.",
    )

    @model_validator(mode="after")
    def _chat_needs_a_template(self) -> ModelConfig:
        if self.prompt_format == "chat" and self.name == TINY_LLAMA:
            raise ValueError(
                "prompt_format: chat needs a chat template; tiny-llama has none (use raw, or "
                "smollm2-135m, an instruct model)"
            )
        return self

    system_prompt: str | None = Field(
        None,
        max_length=4000,
        description="With prompt_format: chat, a system turn before the prompt. None keeps the "
        "template's own default (SmolLM2's names itself); set it to compare like with like "
        "across models.",
    )


class QuantizationConfig(_Strict):
    method: Literal["qlora", "lora", "full"] = Field(
        "qlora", description="qlora: 4-bit base + LoRA; lora: full-precision base + LoRA; full."
    )
    quant_type: Literal["nf4", "fp4"] = Field(
        "nf4", description="bitsandbytes default is fp4; nf4 is the QLoRA paper's data type."
    )
    double_quant: bool = Field(
        True,
        description="bitsandbytes default is False; the QLoRA paper quantizes the quantization "
        "constants too (~0.37 bit/param saved).",
    )
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on CUDA, float32 on CPU (CPU kernels are fp32)."
    )
    upcast_frozen: bool = Field(
        False,
        description="peft's prepare_model_for_kbit_training casts every non-4-bit weight to fp32 "
        "(True). They are frozen, so fp32 buys no update precision and costs 2 bytes per "
        "embedding and head weight (2 GiB on Llama-3-8B); tunegate keeps them in the compute "
        "dtype. RMSNorm computes in fp32 either way.",
    )


class LoraSettings(_Strict):
    r: int = Field(
        16,
        ge=1,
        le=MAX_LORA_RANK,
        description="peft default is 8; 16 is the QLoRA paper's 7B setting.",
    )
    alpha: int = Field(
        32,
        ge=1,
        le=MAX_LORA_ALPHA,
        description="peft default is 8; alpha = 2r keeps the scale at 2.",
    )
    dropout: float = Field(0.05, ge=0, lt=1, description="peft default is 0.0; QLoRA used 0.05.")
    target_modules: str | list[str] = Field(
        "all-linear", description="All linear layers, as the QLoRA paper (peft's default: q,v)."
    )


class TrainingConfig(_Strict):
    learning_rate: float = Field(
        2e-4,
        ge=0,
        le=MAX_LEARNING_RATE,
        description="SFTConfig's default is 2e-5; 2e-4 is the QLoRA paper's. Above 1 AdamW's "
        "first step replaces the weights with noise; above 1e-2 `tunegate plan` warns (LoRA "
        "fine-tuning uses 1e-5 to 1e-3), and at 0 (nothing trains: a negative control).",
    )
    batch_size: int = Field(
        4,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Per device; the original plan's BATCH_SIZE. At most 65,536: a million "
        "tokens of activations per step.",
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=MAX_ACCUMULATION, description="Effective batch multiplier."
    )
    epochs: float = Field(
        3,
        gt=0,
        le=MAX_EPOCHS,
        description="The original plan's EPOCHS. Above 100 `tunegate plan` warns: the model "
        "memorizes its items (the QLoRA paper trains 1 to 3).",
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="The original plan's MAX_STEPS; wins over epochs. At most 10 million "
        "(20x Llama 2's pre-training).",
    )
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description="Trainer's default is linear decay; constant keeps short stages comparable.",
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        le=MAX_STEPS,
        description="Linear warm-up steps (linear and cosine only: transformers' constant "
        "schedule has no warm-up, and `tunegate plan` warns that they are ignored).",
    )
    weight_decay: float = Field(
        0.0,
        ge=0,
        le=MAX_WEIGHT_DECAY,
        description="AdamW weight decay (Trainer default). Common: 0, 0.01, 0.1; past 10 "
        "decay, not the data, decides the weights.",
    )
    save_steps: int = Field(
        25, ge=1, le=MAX_STEPS, description="Checkpoint interval; resume starts from the last."
    )
    gradient_checkpointing: bool = Field(
        True, description="As SFTConfig; trades ~30% speed for much less activation memory."
    )
    packing: bool = Field(
        False,
        description="As SFTConfig: pack samples into max_length rows (best-fit decreasing, "
        "padding-free attention). Faster on short samples; the loss is still per sample.",
    )
    divergence_window: int = Field(
        5,
        ge=2,
        le=MAX_DIVERGENCE_WINDOW,
        description="Loss watchdog: steps per window compared for divergence.",
    )
    divergence_factor: float = Field(
        3.0,
        gt=1,
        description="Loss watchdog: stop (FAIL) when a window's mean loss exceeds this multiple "
        "of the best window so far (of 0.1 at least: near zero a ratio is noise). NaN/inf stops "
        "at once, and so does a loss that does not move at all over 2 × divergence_window steps.",
    )
    merge_adapter: bool = Field(
        False, description="Also save base + adapter merged (16-bit) next to the adapter."
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=MAX_THREADS,
        description="CPU threads for torch (training and local generation). None: torch's "
        "default here (the physical cores), fixed when the process starts and recorded with "
        "the run. Another thread count sums in another order, so the numbers differ slightly.",
    )
    deterministic: bool = Field(
        True,
        description="The same numbers twice on one machine: torch's deterministic algorithms "
        "(warn-only where an op has none), seeds reset right before training, and every 4-bit "
        "layer on bitsandbytes' fp32 CPU path (not its AVX-512 BF16 kernel, which some CPUs "
        "switch to after the first evaluation). False: the fastest kernels, numbers may vary.",
    )


class TrainingOverrides(_Strict):
    """A stage's changes to the plan's training settings; unset fields keep the plan's value."""

    # The same bounds as TrainingConfig's, for the same reasons.
    learning_rate: float | None = Field(None, ge=0, le=MAX_LEARNING_RATE)
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH_SIZE)
    gradient_accumulation_steps: int | None = Field(None, ge=1, le=MAX_ACCUMULATION)
    epochs: float | None = Field(None, gt=0, le=MAX_EPOCHS)
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    lr_scheduler: Literal["constant", "linear", "cosine"] | None = None
    warmup_steps: int | None = Field(None, ge=0, le=MAX_STEPS)
    weight_decay: float | None = Field(None, ge=0, le=MAX_WEIGHT_DECAY)
    save_steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    gradient_checkpointing: bool | None = None
    packing: bool | None = None
    divergence_window: int | None = Field(None, ge=2, le=MAX_DIVERGENCE_WINDOW)
    divergence_factor: float | None = Field(None, gt=1)
    merge_adapter: bool | None = None
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)
    deterministic: bool | None = None


class ArmConfig(_Strict):
    data: Path = Field(description="JSONL file of items (id, scenario, prompt, completion, ...).")
    role: Literal["control", "experiment"] = Field(description="Which side of the comparison.")
    description: str = Field("", description="Free text, recorded in tracking.")
    may_differ_in: list[Literal["completion", "tests"]] = Field(
        default_factory=list,
        description="Fields besides prompt and metadata this arm may change (e.g. completion, "
        "for an experiment that rewrites answers). Pairing by id is always required.",
    )

    no_nul_in_data = field_validator("data")(_no_nul)


class DataSelection(_Strict):
    selection: Literal["micro", "head", "split", "all"] = Field(
        "split",
        description="micro: the original plan's 5 built-in samples (val = train); head: the "
        "first n items (the original plan's `head -n 20`), val the first val_n, test the next "
        "test_n; split: stratified "
        "train/val/test of `scenarios` (default: the plan's pilot scenario, one scenario as the "
        "original plan's stage 3); all: the same split over every scenario.",
    )
    scenarios: list[str] | None = Field(None, description="Restrict to these; None = all.")
    n: int | None = Field(None, ge=1, description="head: train items; split: cap on train items.")
    val_n: int | None = Field(None, ge=1, description="head: validation items (default 5).")
    test_n: int | None = Field(
        None, ge=1, description="head: held-out test items after the head (default 5)."
    )
    split: tuple[float, float, float] = Field(
        (0.7, 0.15, 0.15), description="split/all: train/val/test fractions per scenario."
    )
    test_per_scenario: int | None = Field(
        None, ge=1, description="split/all: at most this many test items per scenario."
    )

    @model_validator(mode="after")
    def _split_sums_to_one(self) -> DataSelection:
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) < 0:
            raise ValueError(
                f"split must be three non-negative fractions summing to 1: {self.split}"
            )
        return self


def _check_metric(name: str) -> str:
    if not known(name):
        raise ValueError(f"unknown metric '{name}' (known: {', '.join(METRICS)}, pass@K)")
    return name


class EvaluationConfig(_Strict):
    mode: Literal["none", "smoke", "full"] = Field(
        "full", description="smoke: generate once per arm (stage 1); full: score the test items."
    )
    metrics: list[str] = Field(
        list(DEFAULT_METRICS),
        description=f"Scored per test item in both arms ([the metrics](#metrics): "
        f"{', '.join(m.name for m in listed_metrics())}); the primary must be among them.",
    )
    primary_metric: str = Field(
        "functional_correctness",
        description="Pre-registered: the gates' improvement and p-value are the primary metric's.",
    )
    limit: int | None = Field(
        None, ge=1, description="The original plan's --limit: at most this many items."
    )
    max_new_tokens: int = Field(
        96, ge=1, le=MAX_TOKENS, description="Generation length per test item."
    )
    stop: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Stop sequences: generation ends at the first, which is cut from the answer. "
        "Generation always stops at the model's EOS (an instruct model's end of turn). Empty "
        "by default: an instruct model's answer may put prose after its code, and code "
        "extraction handles it.",
    )
    timeout_s: float = Field(
        5.0,
        gt=0,
        le=MAX_PROGRAM_TIMEOUT_S,
        description="Per program, for functional correctness. At most an hour: a program that "
        "needs more is no unit test.",
    )
    # pass@k's sampling. Chen et al. (2021) sample at T = 0.8 for pass@10 and above; top-p 0.95
    # as in their Codex evaluation. Greedy metrics ignore these.
    tests: dict[str, Literal["t", "wilcoxon", "mcnemar", "sign", "permutation"]] = Field(
        default_factory=dict,
        description="Primary paired test per metric (default: exact McNemar for binary metrics, "
        "paired t for continuous ones); the others are reported alongside.",
    )
    samples: int = Field(
        10,
        ge=1,
        le=MAX_SAMPLES,
        description="n samples per item for pass@K metrics (Chen et al. used 200 for k up to 100).",
    )
    temperature: float = Field(
        0.8,
        gt=0,
        le=MAX_TEMPERATURE,
        description="Sampling temperature for pass@K. At most 10: near uniform, noise.",
    )
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling for pass@K.")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        for name in metrics:
            _check_metric(name)
        if len(set(metrics)) != len(metrics):
            raise ValueError("a metric is listed twice")
        return metrics

    @field_validator("primary_metric")
    @classmethod
    def _known_primary(cls, name: str) -> str:
        return _check_metric(name)

    @field_validator("stop")
    @classmethod
    def _stop_sequences(cls, stop: list[str]) -> list[str]:
        if any(not s or len(s) > 200 for s in stop):
            raise ValueError("a stop sequence must have 1 to 200 characters")
        return stop

    @model_validator(mode="after")
    def _k_within_n(self) -> EvaluationConfig:
        for name in self.metrics:
            if (m := PASS_AT.fullmatch(name)) and int(m.group(1)) > self.samples:
                raise ValueError(
                    f"{name} needs at least {m.group(1)} samples per item; samples is "
                    f"{self.samples} (pass@k is undefined for k > n)"
                )
        return self


class JudgeConfig(_Strict):
    """An OpenAI-compatible chat endpoint for judge metrics (coherence). Without one, judge
    metrics are reported as not run."""

    endpoint: str = Field(description="Base URL, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(description="The judge model's name at that endpoint.")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key (None: no key)."
    )
    price_per_call_usd: float = Field(0.0, ge=0, description="Flat price per judge call.")
    price_per_1k_prompt_usd: float = Field(0.0, ge=0, description="Price per 1k prompt tokens.")
    price_per_1k_completion_usd: float = Field(
        0.0, ge=0, description="Price per 1k completion tokens."
    )
    concurrency: int = Field(
        4, ge=1, le=MAX_JUDGE_CONCURRENCY, description="Judge calls in flight at once."
    )
    max_retries: int = Field(
        4, ge=0, le=MAX_JUDGE_RETRIES, description="Retries on 429, 5xx and timeouts."
    )
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Per call; at most an hour.")
    repeats: int = Field(
        1,
        ge=1,
        le=MAX_JUDGE_REPEATS,
        description="Judgments per input; above 1 measures the judge's noise.",
    )
    budget_usd: float | None = Field(
        None, gt=0, description="Stop paying the judge once this much is spent."
    )


class Gates(_Strict):
    """A gate left unset is not checked. Health gates FAIL a stage; effect gates INVESTIGATE it."""

    # Each gate's kind and description are its `tunegate.registry.GATES` entry's.
    environment: bool | None = Field(None, description=GATES["environment"].description)
    loaded_in_4bit: bool | None = Field(None, description=GATES["loaded_in_4bit"].description)
    loss_decreased: bool | None = Field(None, description=GATES["loss_decreased"].description)
    model_saved: bool | None = Field(None, description=GATES["model_saved"].description)
    generates: bool | None = Field(None, description=GATES["generates"].description)
    evaluation_ran: bool | None = Field(None, description=GATES["evaluation_ran"].description)
    min_improvement: float | None = Field(None, description=GATES["min_improvement"].description)
    improvement: Literal["absolute", "relative"] = Field(
        "absolute",
        description="How min_improvement reads: absolute points (the default: on a pass rate "
        "near 0 a relative gain is huge and meaningless) or relative, as the original plan's "
        "'+15%'.",
    )
    max_p_value: float | None = Field(
        None, gt=0, le=1, description=GATES["max_p_value"].description
    )
    improves: list[str] | None = Field(None, description=GATES["improves"].description)


class DataChecks(_Strict):
    """Checks run on a stage's selection before any training (`tunegate data check` runs the
    same ones without training)."""

    truncation: Literal["fail", "warn"] = Field(
        "fail",
        description="A sample longer than model.max_length: fail the stage (default), or warn "
        "and let TRL truncate it.",
    )
    leakage: Literal["fail", "warn", "off"] = Field(
        "fail",
        description="A test item that duplicates a training item after normalization fails "
        "the stage; near-duplicates (see leakage_threshold) always only warn.",
    )

    @field_validator("leakage", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    leakage_threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard similarity of token 3-grams that counts as near."
    )


class Estimate(_Strict):
    hours: float = Field(
        0, ge=0, description="Wall time the stage is expected to take, with one seed per arm."
    )
    usd: float = Field(
        0, ge=0, description="What the stage is expected to cost, with one seed per arm."
    )


class Stage(_Strict):
    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Unique; names the stage's directory."
    )
    kind: Literal["environment", "train"] = Field(
        "train", description="environment: stage-0 checks only; train: the full stage."
    )
    description: str = Field("", description="One line, shown by `tunegate plan` and `run`.")
    arms: list[str] | None = Field(None, description="Arms to train; None = all.")
    data: DataSelection = DataSelection()
    training: TrainingOverrides = TrainingOverrides()
    # 1, as the original plan: one training run per arm. Its difference then mixes the data's
    # effect with seed-to-seed noise that nothing measures; 2 or more measure it.
    seeds: int = Field(
        1,
        ge=1,
        le=16,
        description="Training runs per arm, with the plan's seed, seed + 1, …: each trains, "
        "generates and is scored on the same items. From 2, the report shows the spread "
        "between one arm's runs and the p-value accounts for the seeds' variance as well as "
        "the items'. Multiplies the stage's cost.",
    )
    evaluation: EvaluationConfig = EvaluationConfig()
    # Validated when left out too: a training stage without gates is refused, not gate-less.
    gates: Gates = Field(default_factory=Gates, validate_default=True)
    checks: DataChecks = DataChecks()
    estimate: Estimate = Estimate()
    recovery: list[str] = Field(default_factory=list, description="Printed when it does not pass.")
    executor: Literal["local", "docker", "ssh"] | None = Field(
        None, description="Override the plan's executor.kind for this stage."
    )

    @field_validator("gates")
    @classmethod
    def _has_a_health_gate(cls, gates: Gates, info: ValidationInfo) -> Gates:
        """A training stage without a health gate would pass on no evidence at all."""
        if info.data.get("kind", "train") != "train":
            return gates
        health = [n for n, g in GATES.items() if g.kind == "health" and n != "environment"]
        if not any(getattr(gates, n) for n in health):
            raise ValueError(
                "a training stage needs at least one health gate (" + ", ".join(health) + "): "
                "without one it passes on no evidence"
            )
        return gates


class ExecutorConfig(_Strict):
    """Where a stage's training runs: in this process; in the training container as the original
    plan does (`docker run --gpus all -v … -e DATASET_PATH=… llama3-training`), here or on the GPU
    tower over SSH; or in a Python environment on the tower, without Docker."""

    kind: Literal["local", "docker", "ssh"] = Field(
        "local",
        description="local: this process. docker: the training container (on `host` when "
        "given). ssh: `tunegate train` in the Python environment `python` on `host`.",
    )
    host: str | None = Field(
        None,
        description="The tower, ssh://[user@]host[:port]. Each arm's data and the base model "
        "are shipped there with rsync (nothing is assumed shared), training runs detached (a "
        "dropped connection does not stop it; `tunegate run` reattaches), and the adapter "
        "comes back checked by sha256. Needs ssh, rsync and sha256sum on both sides.",
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="More towers beside `host`, each ssh://[user@]host[:port] through the same "
        "ssh_config. The arms of a stage are spread over them and train at the same time, one "
        "arm per tower (and per `devices` entry); each tower gets its own copy of the base model.",
    )
    devices: list[str] = Field(
        default_factory=list,
        description="GPUs of each tower (or of this machine, kind docker) to give one arm each: "
        "`docker run --gpus device=N`, or CUDA_VISIBLE_DEVICES=N for kind ssh. Two or more: the "
        "arms train at the same time. Empty: every arm gets `gpus`, one arm after the other.",
    )
    ssh_config: Path | None = Field(
        None,
        description="An ssh config file for `host` (IdentityFile, UserKnownHostsFile, "
        "ProxyJump…); None: ~/.ssh/config. ssh always runs with BatchMode: a key, never a "
        "prompt.",
    )
    remote_dir: str = Field(
        "tunegate",
        description="On `host`: where runs and shipped base models are kept (relative to the "
        "remote home, or absolute).",
    )
    python: str = Field(
        "python3",
        description="kind: ssh: the interpreter on `host` with tunegate installed (a venv's "
        "bin/python).",
    )
    image: str = Field(
        "tunegate-training",
        description="Image built from docker/Dockerfile.training (the original plan's "
        "llama3-training): `tunegate image build`.",
    )
    gpus: str | None = Field("all", description="`docker run --gpus`; None on a CPU-only host.")
    docker_host: str | None = Field(
        None,
        description="An engine that sees this machine's paths (tcp://host:2376, a local "
        "socket); None: $DOCKER_HOST or the local one. For a machine of its own, use `host`.",
    )
    user: str | None = Field(
        None, description="`docker run --user` (uid:gid), so files in the run dir stay yours."
    )
    extra_args: list[str] = Field(
        default_factory=list, description="Appended to `docker run` before the image name."
    )
    reconnect_s: float = Field(
        300,
        gt=0,
        description="How long a dropped connection to `host` is retried while an arm trains "
        "there, before the climb stops (the arm goes on; `tunegate run` reattaches).",
    )

    @model_validator(mode="after")
    def _host_is_ssh(self) -> ExecutorConfig:
        if self.host is not None and not self.host.startswith("ssh://"):
            raise ValueError(f"host: '{self.host}' is not ssh://[user@]host[:port]")
        if self.kind == "ssh" and self.host is None:
            raise ValueError("kind: ssh needs host: ssh://[user@]host")
        if self.host is not None and self.docker_host is not None:
            raise ValueError("give host (a machine reached over SSH) or docker_host, not both")
        if self.hosts and self.host is None:
            raise ValueError("hosts adds towers to host: give host too")
        for extra in self.hosts:
            if not extra.startswith("ssh://"):
                raise ValueError(f"hosts: '{extra}' is not ssh://[user@]host[:port]")
        if len(set(self.towers())) < len(self.towers()):
            raise ValueError("hosts: a tower is named twice")
        if self.devices and self.kind == "local":
            raise ValueError("devices: needs kind docker or ssh (one process trains one arm)")
        if len(set(self.devices)) < len(self.devices):
            raise ValueError("devices: a GPU is named twice")
        return self

    def towers(self) -> list[str]:
        """Every tower an arm may train on: `host`, then `hosts`; none without a host."""
        return [self.host, *self.hosts] if self.host else []

    def arms_at_once(self, kind: str) -> int:
        """How many arms can train at the same time with `kind`: one per tower and device."""
        if kind == "local":
            return 1
        return max(1, len(self.towers())) * max(1, len(self.devices))


# The tracking stores MLflow's client opens (its tracking store registry), less the Unity
# Catalog ones, which hold models, not runs. postgresql, mysql and mssql need their driver.
TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
# Kernel filesystems: no store can be created there, and MLflow fails only when it tries.
_KERNEL_FS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_tracking_uri(uri: str) -> str:
    """`uri` if MLflow can track to it, else ValueError saying why: checked when the plan loads,
    not when the first stage's tracking starts."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  # parsing the port raises ValueError on a bad one
    except ValueError as err:
        raise ValueError(f"not a valid URI ({err})") from None
    scheme = parts.scheme.lower().split("+")[0]  # postgresql+psycopg2: the driver is extra
    local: str | None = None
    if not parts.scheme:
        local = uri  # a bare path: MLflow's file store
    elif scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"an {scheme} tracking URI needs a host ({scheme}://host:port)")
    elif scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("a file: tracking URI names a local path (file:///path)")
        local = parts.path
    elif scheme == "sqlite":
        local = parts.path[1:]  # sqlite:///relative.db, sqlite:////absolute.db
        if local in ("", ":memory:"):
            raise ValueError(
                "an in-memory sqlite store is gone when each process ends: name a file "
                "(sqlite:///path/mlflow.db)"
            )
    elif scheme not in TRACKING_SCHEMES:
        raise ValueError(
            f"unsupported tracking store '{_clip(parts.scheme, 40)}:' (MLflow tracks to "
            + ", ".join(f"{s}:" for s in TRACKING_SCHEMES)
            + " or a local path)"
        )
    if local:
        where = Path(local)
        if any(where == fs or fs in where.parents for fs in _KERNEL_FS):
            raise ValueError(f"{_clip(local)} is on a kernel filesystem: no store can live there")
    return uri


class TrackingConfig(_Strict):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI. None: $MLFLOW_TRACKING_URI, else a sqlite store in the "
        "output directory (mlflow's own default is ./mlflow.db in the working directory). "
        "http(s)://host, file:///path (or a bare path), sqlite:///path, postgresql://, "
        "mysql://, mssql:// or databricks; anything else is refused when the plan loads.",
    )
    experiment: str = Field("tunegate", description="MLflow experiment the runs go into.")

    @field_validator("uri")
    @classmethod
    def _trackable(cls, uri: str | None) -> str | None:
        return None if uri is None else check_tracking_uri(uri)


class HostConfig(_Strict):
    """A machine of the original plan's three-machine setup the doctor checks over SSH."""

    name: str = Field(description="What the host is, e.g. gpu-tower, mlflow-server.")
    address: str = Field(description="user@host (or an ~/.ssh/config alias) for `ssh`.")
    port: int = Field(22, ge=1, le=65535, description="SSH port.")


class CostConfig(_Strict):
    """What time costs, for `tunegate plan`'s cost table and the forecasts."""

    gpu_usd_per_hour: float = Field(
        0.0, ge=0, description="GPU price per hour ($0 for your own tower; a cloud H100 ~ $2–4)."
    )
    gpu_watts: float | None = Field(
        None, gt=0, description="Your own GPU's draw, for electricity (None: not counted)."
    )
    usd_per_kwh: float | None = Field(None, ge=0, description="Electricity price, with gpu_watts.")


class BudgetConfig(_Strict):
    """Limits the ladder enforces: a stage whose forecast crosses one does not start, and the
    judge stops being paid once the money is spent."""

    usd: float | None = Field(None, gt=0, description="Total money the climb may spend.")
    hours: float | None = Field(None, gt=0, description="Total wall time the climb may take.")
    approved: bool = Field(
        False, description="The production budget is approved (the original plan's pre-flight box)."
    )


class Plan(_Strict):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Names the run directory (<output_dir>/<name>) and the MLflow parent run.",
    )
    seed: int = Field(
        42,
        ge=0,
        le=MAX_SEED,
        description="Data selection, both arms' data order and LoRA init (a stage with "
        "`seeds: N` trains runs with seed, seed + 1, …; its data selection stays this seed's).",
    )
    output_dir: Path = Field(
        Path("runs"), description="Run directories and the default MLflow store go here."
    )
    model: ModelConfig = ModelConfig()
    quantization: QuantizationConfig = QuantizationConfig()
    lora: LoraSettings = LoraSettings()
    training: TrainingConfig = TrainingConfig()
    arms: dict[str, ArmConfig] = Field(
        description="Exactly two arms, one per role; each names its JSONL file."
    )
    scenarios: list[str] | None = Field(None, description="Scenarios in play; None = all in data.")
    pilot_scenario: str | None = Field(
        None,
        description="The one scenario of the pilot stage (the original plan used React); "
        "None = first.",
    )
    tracking: TrackingConfig = TrackingConfig()
    executor: ExecutorConfig = ExecutorConfig()
    judge: JudgeConfig | None = Field(
        None, description="The LLM judge for judge metrics; None: they are reported as not run."
    )
    hosts: list[HostConfig] = Field(
        default_factory=list, description="Machines the doctor checks over SSH (BatchMode)."
    )
    cost: CostConfig = CostConfig()
    budget: BudgetConfig = BudgetConfig()
    stages: list[Stage] = Field(default_factory=list)
    _source: Path | None = PrivateAttr(None)
    _lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """What loads but is probably not meant (`file:line: field: why`), for `tunegate plan`."""
        return self._warnings

    @property
    def source(self) -> str:
        """The plan file, for error messages."""
        return str(self._source) if self._source else "plan"

    def where(self, loc: tuple[str, ...]) -> str:
        """`file:line` of a field (or its nearest enclosing key), for checks made after loading."""
        line = _line_of(self._lines, loc)
        return f"{self.source}:{line}" if line else self.source

    no_nul_in_output_dir = field_validator("output_dir")(_no_nul)

    # A field validator, not a model validator: the error then names `arms` and its line.
    @field_validator("arms")
    @classmethod
    def _check_arms(cls, arms: dict[str, ArmConfig]) -> dict[str, ArmConfig]:
        roles = sorted(a.role for a in arms.values())
        if roles != ["control", "experiment"]:
            raise ValueError("needs exactly one arm with role 'control' and one with 'experiment'")
        return arms

    # --- derived views ------------------------------------------------------------------
    def arm_name(self, role: str) -> str:
        return next(name for name, arm in self.arms.items() if arm.role == role)

    def training_seeds(self, stage: Stage) -> list[int]:
        """The seeds a stage trains each arm with: the plan's first, then the next ones."""
        return [self.seed + k for k in range(stage.seeds)]

    def arms_at_once(self, stage: Stage) -> int:
        """How many of `stage`'s training runs train at the same time (its executor's towers
        and devices, at most its runs)."""
        runs = len(stage.arms or self.arms) * stage.seeds
        return min(runs, self.executor.arms_at_once(stage.executor or self.executor.kind))

    def stage_training(self, stage: Stage) -> TrainingConfig:
        overrides = stage.training.model_dump(exclude_none=True)
        return self.training.model_copy(update=overrides)

    def stage_hash(self, index: int) -> str:
        """What a stage's result depends on — its settings, the plan's shared settings, the
        arms' data *contents* and the model's bytes — so that changing any of them re-runs it.

        No path is part of it: a run directory copied or moved (with its plan and data, or to
        a larger disk) keeps every stage it passed. The arms' files count by their digests and
        a local model by its fingerprint, not by where they lie."""
        body = self.model_dump(mode="json", exclude={"stages", "tracking", "output_dir"})
        if body.get("judge"):  # as plan.json records it: a password is not a setting
            body["judge"]["endpoint"] = redact(body["judge"]["endpoint"])
        for arm in body["arms"].values():
            del arm["data"]  # its contents are body["data"] below
        if embedded(self.model.name) is None:
            body["model"]["name"] = "local"  # a directory: its bytes are body["model_bytes"]
        body["stage"] = self.stages[index].model_dump(mode="json")
        body["data"] = {name: _file_digest(arm.data) for name, arm in sorted(self.arms.items())}
        body["model_bytes"] = model_fingerprint(self.model.name)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


SEED_RECOVERY: dict[str, list[str]] = {
    "environment": ["Fix environment issues BEFORE proceeding (see the failed checks above)."],
    "micro": [
        "Debug training script locally",
        "Fix imports, config issues",
        "Re-run Stage 1",
        "Repeat until passes",
    ],
    "small": [
        "Check training logs for issues",
        "Adjust hyperparameters (learning rate, batch size)",
        "Verify dataset quality (no corrupted samples)",
        "Re-run Stage 2",
        "If still fails, consult research papers on QLoRA tuning",
    ],
    "pilot": [
        "STOP! Do NOT proceed to Stage 4",
        "Analyze why experiment model didn't improve: is metadata actually helpful? "
        "Are we training long enough? Is dataset quality good?",
        "Options: add more metadata fields; increase training epochs; try different scenarios",
        "Re-run Stage 3 with adjustments",
        "Only proceed to Stage 4 if >10% improvement confirmed",
    ],
    "production": [
        "Compare per-scenario results: which scenarios carry or erase the effect?",
        "Check the pilot's assumptions (scenario mix, data sizes) against production data",
    ],
}


def default_stages() -> list[Stage]:
    """The original plan's ladder: 0 environment, 1 micro, 2 small, 3 pilot, 4 production."""
    return [
        Stage(
            name="environment",
            kind="environment",
            description="GPU/CPU, packages, free disk, tracking store reachable",
            evaluation=EvaluationConfig(mode="none"),
            gates=Gates(environment=True),
            estimate=Estimate(hours=5 / 60, usd=0),
            recovery=SEED_RECOVERY["environment"],
        ),
        Stage(
            name="micro",
            description="code runs end to end: the original plan's 5 samples, 10 steps, batch 1",
            data=DataSelection(selection="micro"),
            training=TrainingOverrides(max_steps=10, batch_size=1, save_steps=5),
            evaluation=EvaluationConfig(mode="smoke"),
            gates=Gates(loaded_in_4bit=True, loss_decreased=True, model_saved=True, generates=True),
            estimate=Estimate(hours=0.5, usd=0),
            recovery=SEED_RECOVERY["micro"],
        ),
        Stage(
            name="small",
            description="performance signal: first 20 per arm, 3 epochs, 5 held-out items",
            data=DataSelection(selection="head", n=20, val_n=5, test_n=5),
            evaluation=EvaluationConfig(mode="full", metrics=ALL_METRICS),
            # n = 5 cannot reach p < 0.05 with any exact paired test: the gate is descriptive.
            gates=Gates(
                model_saved=True, evaluation_ran=True, min_improvement=0.05, loss_decreased=True
            ),
            estimate=Estimate(hours=2, usd=3),
            recovery=SEED_RECOVERY["small"],
        ),
        Stage(
            name="pilot",
            description="full pipeline on one scenario: 70/15/15, 3 epochs, 15 test items",
            data=DataSelection(selection="split", test_per_scenario=15),
            evaluation=EvaluationConfig(mode="full", metrics=ALL_METRICS),
            gates=Gates(
                model_saved=True,
                evaluation_ran=True,
                min_improvement=0.10,
                max_p_value=0.05,
                # The original plan's stage 3: "Code Vulnerability shows improvement".
                improves=["code_accuracy", "vulnerability"],
                loss_decreased=True,
            ),
            estimate=Estimate(hours=5, usd=12),
            recovery=SEED_RECOVERY["pilot"],
        ),
        Stage(
            name="production",
            description="the real thing: every scenario, 3 epochs, 15 test items per scenario",
            data=DataSelection(selection="all", test_per_scenario=15),
            evaluation=EvaluationConfig(mode="full", metrics=ALL_METRICS),
            gates=Gates(
                model_saved=True,
                evaluation_ran=True,
                min_improvement=0.10,
                max_p_value=0.05,
                loss_decreased=True,
            ),
            estimate=Estimate(hours=42, usd=242),
            recovery=SEED_RECOVERY["production"],
        ),
    ]


# --- loading -------------------------------------------------------------------------------

# Limits on a plan file: each far above any real plan (the example is 5 KB, ~250 values, 5
# levels deep) and far below what would hurt.
# 1 MiB, 200x the example: read in well under a second, and a 50 MB value is never read whole.
MAX_PLAN_BYTES = 1 << 20
# Values (scalars, lists, mappings) with every alias expanded: a 1 KB "billion laughs" file
# expands to 10^9, and validating or walking that takes gigabytes.
MAX_PLAN_VALUES = 50_000
# Nesting: a plan's deepest field is 5 levels down (stages, 0, evaluation, tests, <metric>);
# past 32 the file is no plan, and parsing on would end in a RecursionError.
MAX_PLAN_DEPTH = 32
# A value quoted back in an error is cut here, so that the message stays one short line.
ECHO_CHARS = 200

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _clip(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` cut to `limit` characters, saying how long it was: messages quote user values."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def _echo(value: object) -> str:
    """A value as an error message quotes it: its repr, cut."""
    return _clip(repr(value))


class _Refused(Exception):
    """A plan refused while it is read (too deep, too many values, a key twice), at a line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


try:  # libyaml's parser: ~10x faster than PyYAML's own on a large file, with the same events
    from yaml.cyaml import CParser as _Parser

    _LIBYAML = True
except ImportError:  # a PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)

    _LIBYAML = False


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _PlanLoader(Composer, SafeConstructor, Resolver, _Parser):  # type: ignore[misc]
    """YAML's safe loader (no tags beyond YAML's own, so `!!python/...` runs nothing), with
    PyYAML's composer over libyaml's parser. The composer here also bounds nesting and counts
    values with aliases expanded; an alias's size is looked up, never walked again."""

    def __init__(self, text: str) -> None:
        _Parser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.depth = 0  # of the node being composed
        self.values = 0  # composed so far, aliases expanded
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node): (values, levels), expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self.sizes:
                raise _Refused(
                    line,
                    f"alias *{_clip(event.anchor, 40)} is inside the value it names: "
                    "it would expand forever",
                )
            node = super().compose_node(parent, index)  # an unknown anchor: ComposerError
            values, levels = self.sizes[id(node)]
            self._grow(line, values, alias=True)
            if self.depth + levels > MAX_PLAN_DEPTH:
                raise _Refused(
                    line, f"aliases nest the plan more than {MAX_PLAN_DEPTH} levels deep"
                )
            return node
        self.depth += 1
        if self.depth > MAX_PLAN_DEPTH:
            raise _Refused(
                line,
                f"nested more than {MAX_PLAN_DEPTH} levels deep (a plan's deepest field is 5 "
                "levels down)",
            )
        start = self.values
        self._grow(line, 1, alias=False)
        node = super().compose_node(parent, index)
        self.depth -= 1
        levels = 1 + max((self.sizes[id(c)][1] for c in _children(node)), default=0)
        self.sizes[id(node)] = (self.values - start, levels)
        return node

    def _grow(self, line: int, values: int, *, alias: bool) -> None:
        self.values += values
        if self.values > MAX_PLAN_VALUES:
            if alias:
                why = "aliases expand the plan past"
                size = "; a 'billion laughs' file of aliases of aliases has 10^9"
            else:
                why, size = "the plan has more than", ""
            raise _Refused(
                line, f"{why} {MAX_PLAN_VALUES:,} values (a plan has a few hundred{size})"
            )

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as err:  # month 13, an int of 5,000 digits
            raise ConstructorError(
                None, None, f"cannot read this value ({_clip(str(err), 120)})", node.start_mark
            ) from None


def _read_yaml(text: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """The document's data and the line of each key path. Raises _Refused or YAMLError."""
    loader = _PlanLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        lines = _yaml_lines(root)
        return loader.construct_document(root), lines
    finally:
        loader.dispose()


def _yaml_lines(root: yaml.Node) -> dict[tuple[str, ...], int]:
    """Map each key path in a YAML document to its 1-based line, for error messages. A key
    given twice in one mapping is refused: YAML would keep the last one silently. An alias is
    walked where it is used (its lines are its anchor's), within MAX_PLAN_VALUES."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                line = key.start_mark.line + 1
                scalar = isinstance(key, yaml.ScalarNode)
                sub = (*path, str(key.value) if scalar else "?")  # the constructor refuses "?"
                if scalar and key.tag != _MERGE_TAG:  # `<<` merges; its keys may be overridden
                    ident = (key.tag, key.value)
                    if ident in first:
                        both = f"lines {first[ident]} and {line}" if first[ident] != line else ""
                        raise _Refused(
                            line,
                            f"{_clip('.'.join(sub))}: given twice{f' ({both})' if both else ''}"
                            " in one mapping; YAML would silently keep the last",
                        )
                    first[ident] = line
                lines[sub] = line
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                walk(value, (*path, str(i)))

    walk(root, ())
    return lines


def _line_of(lines: dict[tuple[str, ...], int], loc: tuple[str, ...]) -> int | None:
    """The line of the deepest key of `loc` that exists in the file (a missing field has none).

    The document root is left out: its line is merely the first key's, which would blame
    `name:` for a missing top-level `arms:`.
    """
    return next((lines[loc[:k]] for k in range(len(loc), 0, -1) if loc[:k] in lines), None)


def _shown(field: str, value: object) -> str:
    """A rejected input as the error quotes it: cut, and a URI without its password."""
    if field in ("tracking.uri", "judge.endpoint") and isinstance(value, str):
        with contextlib.suppress(ValueError):  # not even a URI: no password to find in it
            value = redact(value)
    return _echo(value)


def _first_error(err: ValidationError, path: Path, lines: dict[tuple[str, ...], int]) -> UserError:
    e = err.errors()[0]
    loc = tuple(str(p) for p in e["loc"])
    line = _line_of(lines, loc)
    field = _clip(".".join(loc)) or "(top level)"
    if e["type"] == "extra_forbidden":
        msg = "unknown field"
    elif e["type"] == "missing":
        msg = "missing required field"
    else:
        msg = _clip(e["msg"].removeprefix("Value error, "), 2 * ECHO_CHARS)
        if "input" in e and not isinstance(e["input"], dict | list | BaseModel):
            msg += f" (got {_shown('.'.join(loc), e['input'])})"
    where = f"{path}:{line}" if line else str(path)
    return UserError(f"{field}: {msg}", where=where)


def _not_a_file(path: Path) -> str | None:
    """None for a regular file, else what `path` is instead, found without opening it (a FIFO
    would block the read until something writes to it): 'missing', 'a directory', ..."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as err:
        return f"unreadable ({err.strerror})"
    except ValueError:  # a NUL byte in the path
        return "missing"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    kinds = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket"}
    kinds |= {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _yaml_error(err: yaml.YAMLError, path: Path, data: bytes) -> UserError:
    """A parser's error as one line at its line."""
    if isinstance(err, yaml.reader.ReaderError):  # a control character: a position, no mark
        # libyaml counts bytes of the UTF-8 text; PyYAML's own reader counts characters.
        before = data[: err.position] if _LIBYAML else data.decode("utf-8")[: err.position]
        line = before.count(b"\n" if _LIBYAML else "\n") + 1  # type: ignore[arg-type]
        return UserError(f"invalid YAML: {_clip(err.reason, 100)}", where=f"{path}:{line}")
    mark = getattr(err, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark and problem == "found character that cannot start any token":
        # libyaml leaves out which character; a tab, YAML's most common error, is worth naming.
        text = data.decode("utf-8").splitlines()
        found = text[mark.line] if mark.line < len(text) else ""
        if mark.column < len(found):
            problem = f"found character {found[mark.column]!r} that cannot start any token"
    return UserError(f"invalid YAML: {_clip(problem)}", where=where)


def load_plan(path: Path) -> Plan:
    """Parse and validate a plan file. Raises UserError naming the file, line and field."""
    kind = _not_a_file(path)
    if kind == "missing":
        raise UserError("plan file not found (create one with `tunegate init`)", where=str(path))
    if kind is not None:
        raise UserError(f"the plan is {kind}, not a file", where=str(path))
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PLAN_BYTES + 1)  # no more: a 50 MB file is refused unread
    except OSError as err:
        raise UserError(f"cannot read the plan ({err.strerror})", where=str(path)) from None
    if len(data) > MAX_PLAN_BYTES:
        line = data[:MAX_PLAN_BYTES].count(b"\n") + 1
        raise UserError(
            f"the plan is {path.stat().st_size:,} bytes, past the limit of {MAX_PLAN_BYTES:,} on "
            "this line (a plan is a few KB)",
            where=f"{path}:{line}",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", where=str(path)) from None
    try:
        raw, lines = _read_yaml(text)
    except _Refused as err:
        raise UserError(err.message, where=f"{path}:{err.line}") from None
    except yaml.YAMLError as err:
        raise _yaml_error(err, path, data) from None
    except RecursionError:  # a last resort: MAX_PLAN_DEPTH stops nesting long before
        raise UserError("invalid YAML: nested too deeply", where=str(path)) from None
    if not isinstance(raw, dict):
        raise UserError("a plan is a YAML mapping (name:, arms:, ...)", where=str(path))
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as err:
        raise _first_error(err, path, lines) from None
    base = path.parent.resolve()
    plan = _resolve_paths(plan, base)
    if not plan.stages:
        plan.stages = default_stages()
    plan._source = path
    plan._lines = lines
    _check_references(plan, path, lines)
    plan._warnings = _plan_warnings(plan, path, lines)
    return plan


def _resolve_paths(plan: Plan, base: Path) -> Plan:
    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    arms = {
        name: arm.model_copy(update={"data": absolute(arm.data)}) for name, arm in plan.arms.items()
    }
    model = plan.model
    if embedded(model.name) is None and (base / model.name).exists():
        model = model.model_copy(update={"name": str(base / model.name)})
    return plan.model_copy(
        update={"arms": arms, "output_dir": absolute(plan.output_dir), "model": model}
    )


def _check_references(plan: Plan, path: Path, lines: dict[tuple[str, ...], int]) -> None:
    """Cross-field checks: arms, scenarios, stage names and data files exist."""

    def fail(loc: tuple[str, ...], msg: str) -> UserError:
        line = _line_of(lines, loc)
        where = f"{path}:{line}" if line else str(path)
        return UserError(f"{_clip('.'.join(loc))}: {msg}", where=where)

    for name, arm in plan.arms.items():
        kind = _not_a_file(arm.data)
        if kind == "missing":
            problem = "dataset file does not exist"
        elif kind is not None and kind.startswith("unreadable"):
            problem = f"dataset file is {kind}"
        elif kind is not None:
            problem = f"dataset path is {kind}, not a regular file"
        else:
            continue
        raise fail(("arms", name, "data"), f"{problem}: {_clip(str(arm.data))}")
    seen: set[str] = set()
    trained: Stage | None = None  # the first training stage
    for i, stage in enumerate(plan.stages):
        if stage.name in seen:
            raise fail(("stages", str(i), "name"), f"duplicate stage name {_echo(stage.name)}")
        seen.add(stage.name)
        if stage.kind == "environment" and trained is not None:
            raise fail(
                ("stages", str(i), "kind"),
                f"an environment stage checks the machine before anything trains; stage {i} "
                f"comes after training stage {_echo(trained.name)}: move it first",
            )
        trained = trained or (stage if stage.kind == "train" else None)
        for j, arm_name in enumerate(stage.arms or []):
            if arm_name not in plan.arms:
                raise fail(
                    ("stages", str(i), "arms", str(j)),
                    f"unknown arm {_echo(arm_name)} (the plan's arms: "
                    f"{_clip(', '.join(plan.arms))})",
                )
        if plan.scenarios is not None:
            for j, scenario in enumerate(stage.data.scenarios or []):
                if scenario not in plan.scenarios:
                    raise fail(
                        ("stages", str(i), "data", "scenarios", str(j)),
                        f"unknown scenario {_echo(scenario)} (the plan's: "
                        f"{_clip(', '.join(plan.scenarios))})",
                    )
        ev = stage.evaluation
        if ev.mode == "full" and ev.primary_metric not in ev.metrics:
            raise fail(
                ("stages", str(i), "evaluation", "primary_metric"),
                f"'{ev.primary_metric}' is not among the stage's metrics",
            )
        for name, test in ev.tests.items():
            if name not in ev.metrics:
                raise fail(
                    ("stages", str(i), "evaluation", "tests", name),
                    f"'{name}' is not among the stage's metrics",
                )
            if test == "mcnemar" and metric_spec(name).kind != "binary":
                raise fail(
                    ("stages", str(i), "evaluation", "tests", name),
                    f"McNemar's test needs a binary metric; '{name}' is continuous",
                )
        for j, name in enumerate(stage.gates.improves or []):
            if name not in ev.metrics:
                raise fail(
                    ("stages", str(i), "gates", "improves", str(j)),
                    f"'{name}' is not among the stage's metrics ({', '.join(ev.metrics)})",
                )
    if plan.pilot_scenario and plan.scenarios and plan.pilot_scenario not in plan.scenarios:
        raise fail(("pilot_scenario",), f"unknown scenario {_echo(plan.pilot_scenario)}")


def _plan_warnings(plan: Plan, path: Path, lines: dict[tuple[str, ...], int]) -> list[str]:
    """What loads but is probably not meant, each as `file:line: field: value and why`."""
    found: dict[str, None] = {}  # in order, once: stages that inherit a value share its line

    def warn(loc: tuple[str, ...], message: str) -> None:
        line = _line_of(lines, loc)
        where = f"{path}:{line}" if line else str(path)
        found[f"{where}: {'.'.join(loc)}: {message}"] = None

    for i, stage in enumerate(plan.stages):
        if stage.kind != "train":
            continue
        own = stage.training.model_dump(exclude_none=True)

        def loc(name: str, i: int = i, own: dict[str, Any] = own) -> tuple[str, ...]:
            """Where a stage's setting comes from: the stage's override or the plan's value."""
            return ("stages", str(i), "training", name) if name in own else ("training", name)

        t = plan.stage_training(stage)
        if t.learning_rate > HIGH_LEARNING_RATE:
            warn(
                loc("learning_rate"),
                f"{t.learning_rate:g} is high for AdamW: LoRA fine-tuning uses 1e-5 to 1e-3 (the "
                f"QLoRA paper 2e-4), and above {HIGH_LEARNING_RATE:g} a pretrained model's loss "
                "usually diverges",
            )
        elif t.learning_rate == 0:
            warn(loc("learning_rate"), "0: nothing trains, so loss_decreased fails")
        if t.max_steps is None and t.epochs > HIGH_EPOCHS:
            warn(
                loc("epochs"),
                f"{t.epochs:g} passes over the same items: the model memorizes them (the QLoRA "
                "paper trains 1 to 3 epochs)",
            )
        if t.warmup_steps and t.lr_scheduler == "constant":
            warn(
                loc("warmup_steps"),
                f"{t.warmup_steps} is ignored: transformers' constant schedule has no warm-up "
                "(lr_scheduler linear or cosine has)",
            )
        elif t.warmup_steps and t.max_steps is not None and t.warmup_steps >= t.max_steps:
            warn(
                loc("warmup_steps"),
                f"{t.warmup_steps} ≥ max_steps ({t.max_steps}): training stops before the "
                "learning rate reaches its value",
            )
    control, experiment = (plan.arm_name(role) for role in ("control", "experiment"))
    if _same_file(plan.arms[control].data, plan.arms[experiment].data):
        warn(
            ("arms", experiment, "data"),
            f"the same file as the control arm {_echo(control)}: an A/A control, so any "
            "difference between the arms is noise",
        )
    return list(found)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # a link or another spelling of the path is the same file
    except OSError:
        return a.resolve() == b.resolve()


def plan_hash(plan: Plan) -> str:
    return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()[:16]


def redact(uri: str) -> str:
    """A URI without its password: for messages, and for files that are read and shared (the
    state, plan.json, the report). The plan file or the environment keeps the real one."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def dump_plan(plan: Plan) -> dict[str, Any]:
    """The plan as JSON for the run directory, with passwords in its URIs replaced by ***."""
    data = plan.model_dump(mode="json")
    if data["tracking"].get("uri"):
        data["tracking"]["uri"] = redact(data["tracking"]["uri"])
    if data.get("judge"):
        data["judge"]["endpoint"] = redact(data["judge"]["endpoint"])
    return data
