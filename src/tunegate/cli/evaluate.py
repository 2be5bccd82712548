"""`tunegate evaluate`: the original plan's evaluate.py, on tunegate's metrics, per item and
paired."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tunegate.cli.common import output_width, quiet_libraries
from tunegate.determinism import pin
from tunegate.errors import UserError
from tunegate.plan import EvaluationConfig, JudgeConfig, QuantizationConfig, load_plan
from tunegate.progress import Bars
from tunegate.prompts import PromptFormat
from tunegate.registry import ALL_METRICS, DEFAULT_METRICS, METRICS, known

# `tunegate evaluate`'s options, one alias each, so that the command's signature reads as a list.
ControlModel = Annotated[
    str,
    typer.Option(
        "--control-model",
        help="Adapter or model directory, an embedded model (tiny-llama, smollm2-135m), or "
        "openai:NAME (with --endpoint).",
    ),
]
ExperimentModel = Annotated[str, typer.Option("--experiment-model", help="As --control-model.")]
TestSet = Annotated[
    list[str] | None,
    typer.Option(
        "--test-set",
        "--test-sets",
        help="JSONL items (both arms' prompts); repeat or comma-separate for several files.",
    ),
]
ExperimentTestSet = Annotated[
    list[str] | None,
    typer.Option(
        "--experiment-test-set",
        help="The experiment arm's own items (its prompt format), paired by id; default: "
        "--test-set.",
    ),
]
Limit = Annotated[int | None, typer.Option("--limit", min=1, help="At most this many items.")]
Scenarios = Annotated[
    str | None,
    typer.Option("--scenarios", help="Comma-separated scenarios to keep, e.g. react,python,sql."),
]
AllMetrics = Annotated[bool, typer.Option("--all-metrics", help="Every metric (pass@1/10…).")]
Metrics = Annotated[
    str | None,
    typer.Option(
        "--metrics", help="Comma-separated metrics (default: the plan's, or the fast set)."
    ),
]
Samples = Annotated[int | None, typer.Option("--samples", min=1, help="n per item for pass@k.")]
Temperature = Annotated[float | None, typer.Option("--temperature", help="For pass@k samples.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Sampling seed.")]
MaxNewTokens = Annotated[int | None, typer.Option("--max-new-tokens", min=1)]
PromptStyle = Annotated[
    str | None,
    typer.Option(
        "--prompt-format",
        help="raw (as written) or chat (the model's chat template, one user turn); default: "
        "the plan's model.prompt_format, else raw.",
    ),
]
Stop = Annotated[
    list[str] | None,
    typer.Option("--stop", help="A stop sequence (repeat for several); default: the plan's."),
]
BaseModelName = Annotated[
    str | None,
    typer.Option("--base-model", help="Base of the adapters, when they do not record it."),
]
Endpoint = Annotated[
    str | None,
    typer.Option("--endpoint", help="OpenAI-compatible base URL for openai:NAME models."),
]
JudgeEndpoint = Annotated[
    str | None,
    typer.Option("--judge-endpoint", help="OpenAI-compatible base URL of the judge."),
]
JudgeModel = Annotated[str | None, typer.Option("--judge-model", help="The judge's model name.")]
JudgePrice = Annotated[
    float | None, typer.Option("--judge-price-per-call", min=0, help="USD per judge call.")
]
PlanFile = Annotated[
    Path | None,
    typer.Option("--plan", help="Take evaluation settings and the judge from this tunegate.yaml."),
]
OutputDir = Annotated[
    Path,
    typer.Option("--output-dir", "-o", help="results.jsonl, <arm>.jsonl, summary.json."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary and cost as JSON.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _csv(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def evaluate(
    control_model: ControlModel,
    experiment_model: ExperimentModel,
    test_set: TestSet = None,
    experiment_test_set: ExperimentTestSet = None,
    limit: Limit = None,
    scenarios: Scenarios = None,
    all_metrics: AllMetrics = False,
    metrics: Metrics = None,
    samples: Samples = None,
    temperature: Temperature = None,
    seed: Seed = None,
    max_new_tokens: MaxNewTokens = None,
    prompt_format: PromptStyle = None,
    stop: Stop = None,
    base_model: BaseModelName = None,
    endpoint: Endpoint = None,
    judge_endpoint: JudgeEndpoint = None,
    judge_model: JudgeModel = None,
    judge_price_per_call: JudgePrice = None,
    plan_file: PlanFile = None,
    output_dir: OutputDir = Path("results"),
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate two models on the same items: every metric per item, a summary, the cost."""
    from tunegate.evaluate.pipeline import pair

    plan = load_plan(plan_file) if plan_file is not None else None
    stage_eval = plan.stages[-1].evaluation if plan and plan.stages else EvaluationConfig()
    files, exp_files = _csv(test_set), _csv(experiment_test_set)
    control_items, experiment_items = _test_items(files, exp_files)
    names = _metric_names(all_metrics, metrics, stage_eval.metrics if plan else None)
    settings = _settings(
        stage_eval,
        metrics=names,
        samples=samples,
        temperature=temperature,
        seed=seed if seed is not None else (plan.seed if plan else 0),
        max_new_tokens=max_new_tokens,
        stop=stop,
    )
    fmt = _prompt_format(plan, prompt_format)
    control, experiment = pair(
        control_items,
        experiment_items,
        scenarios=_csv([scenarios]) if scenarios else None,
        limit=limit if limit is not None else stage_eval.limit,
        where=(files[0], exp_files[0] if exp_files else files[0]),
    )
    judge_cfg = _judge(
        plan.judge if plan else None, judge_endpoint, judge_model, judge_price_per_call
    )
    quant = plan.quantization if plan else QuantizationConfig()
    # Generation as the ladder runs it: one thread count, one 4-bit kernel on every CPU.
    pin(
        plan.training.threads if plan else None,
        deterministic=plan.training.deterministic if plan else True,
    )
    quiet_libraries()
    # Its own console: --json keeps stdout for the JSON, --quiet silences the summary.
    console = Console(stderr=as_json, quiet=quiet, highlight=False, width=output_width())
    result = run(
        console,
        {"control": control_model, "experiment": experiment_model},
        {"control": control, "experiment": experiment},
        settings,
        judge_cfg=judge_cfg,
        quant=quant,
        base_model=base_model,
        endpoint=endpoint,
        output_dir=output_dir,
        show_progress=not quiet and not as_json,
        prompt_format=fmt,
    )
    if as_json:
        print(json.dumps(result, indent=2))


def run(
    console: Console,
    models: dict[str, str],
    items: dict[str, list[Any]],
    settings: Any,
    *,
    judge_cfg: Any,
    quant: Any,
    base_model: str | None,
    endpoint: str | None,
    output_dir: Path,
    show_progress: bool,
    prompt_format: PromptFormat | None = None,
) -> dict[str, Any]:
    from tunegate.evaluate.pipeline import ArmToScore, evaluate_arms, generate_arm, render
    from tunegate.generate import TransformersBackend, load_backend

    fmt = prompt_format or PromptFormat()

    with Bars(console, show_progress) as bars:
        arms = []
        for role, spec in models.items():
            backend = load_backend(
                spec,
                quant=quant,
                base_model=base_model,
                endpoint=endpoint,
                where=f"--{role}-model",
            )
            arm_items = items[role]
            if fmt.style == "chat":
                if not isinstance(backend, TransformersBackend):
                    raise UserError(
                        f"--prompt-format chat: --{role}-model is an endpoint, whose "
                        "/v1/completions takes the prompt as written; use --prompt-format raw"
                    )
                arm_items = fmt.render_items(backend.tokenizer, arm_items)
            total = len(arm_items) * (1 + (settings.samples if settings.wants_samples else 0))
            step = bars.counter(f"{role}: generate", total)
            generations = generate_arm(backend, arm_items, settings, step)
            del backend  # one model in memory at a time
            arms.append(ArmToScore(role, role, arm_items, generations, model=spec))
        done = evaluate_arms(arms, settings, judge_cfg, output_dir, bars.ticker)
    console.print(render(done.summary, settings.metrics, done.costs))
    console.print(f"Per-item results: {done.files['results.jsonl']}")
    return {
        "summary": done.summary,
        "cost": done.costs,
        "files": {k: str(v) for k, v in done.files.items()},
    }


def _test_items(files: list[str], exp_files: list[str]) -> tuple[list[Any], list[Any]]:
    """(control, experiment) items: the experiment's own files, or the control's."""
    from tunegate.data.items import load_items

    if not files:
        raise UserError("--test-set: give at least one JSONL file of test items")
    control = [i for f in files for i in load_items(Path(f))]
    experiment = [i for f in exp_files for i in load_items(Path(f))] if exp_files else control
    _unique(control, files)
    return control, experiment


def _metric_names(all_metrics: bool, metrics: str | None, planned: list[str] | None) -> list[str]:
    """--all-metrics, else --metrics, else the plan's last stage's, else the fast set."""
    if all_metrics:
        names = list(ALL_METRICS)
    elif metrics:
        names = _csv([metrics])
    else:
        names = list(planned if planned is not None else DEFAULT_METRICS)
    for name in names:
        if not known(name):
            raise UserError(f"--metrics: unknown metric '{name}' (known: {', '.join(METRICS)})")
    return names


def _settings(
    planned: Any,
    *,
    metrics: list[str],
    samples: int | None,
    temperature: float | None,
    seed: int,
    max_new_tokens: int | None,
    stop: list[str] | None = None,
) -> Any:
    """The flags over the plan's evaluation settings, validated as a plan's would be."""
    from tunegate.evaluate.pipeline import Settings

    settings = Settings(
        metrics=metrics,
        samples=samples or planned.samples,
        temperature=temperature if temperature is not None else planned.temperature,
        top_p=planned.top_p,
        seed=seed,
        max_new_tokens=max_new_tokens or planned.max_new_tokens,
        timeout_s=planned.timeout_s,
        stop=tuple(stop if stop is not None else planned.stop),
    )
    try:
        EvaluationConfig(
            metrics=settings.metrics,
            samples=settings.samples,
            temperature=settings.temperature,
            stop=list(settings.stop),
        )
    except ValueError as err:
        raise UserError(f"--samples/--metrics: {_first_error(err)}") from None
    return settings


def _prompt_format(plan: Any, style: str | None) -> PromptFormat:
    """--prompt-format over the plan's model.prompt_format (and its system prompt)."""
    planned = PromptFormat.of(plan.model) if plan is not None else PromptFormat()
    if style is None:
        return planned
    if style not in ("raw", "chat"):
        raise UserError(f"--prompt-format: '{style}' is neither raw nor chat")
    return PromptFormat("chat" if style == "chat" else "raw", planned.system_prompt)


def _judge(
    planned: Any, endpoint: str | None, model: str | None, price_per_call: float | None
) -> Any:
    """The judge from --judge-endpoint/--judge-model, else the plan's (None: no judge)."""
    if not (endpoint or model):
        return planned
    if not (endpoint and model):
        raise UserError("--judge-endpoint and --judge-model go together")
    return JudgeConfig(endpoint=endpoint, model=model, price_per_call_usd=price_per_call or 0.0)


def _unique(items: list[Any], files: list[str]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise UserError(f"--test-set: item id '{item.id}' appears twice across {files}")
        seen.add(item.id)


def _first_error(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        return str(errors()[0]["msg"]).removeprefix("Value error, ")
    return str(err)
