"""`tunegate evaluate`: the seed's evaluate.py, on tunegate's metrics, per item and paired."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from tunegate.cli.common import output_width, quiet_libraries
from tunegate.errors import UserError


def _csv(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def evaluate(
    control_model: str = typer.Option(
        ...,
        "--control-model",
        help="Adapter or model directory, 'tiny-llama', or openai:NAME (with --endpoint).",
    ),
    experiment_model: str = typer.Option(..., "--experiment-model", help="As --control-model."),
    test_set: list[str] = typer.Option(
        None,
        "--test-set",
        "--test-sets",
        help="JSONL items (both arms' prompts); repeat or comma-separate for several files.",
    ),
    experiment_test_set: list[str] = typer.Option(
        None,
        "--experiment-test-set",
        help="The experiment arm's own items (its prompt format), paired by id; default: "
        "--test-set.",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many items."),
    scenarios: str | None = typer.Option(
        None, "--scenarios", help="Comma-separated scenarios to keep, e.g. react,python,sql."
    ),
    all_metrics: bool = typer.Option(False, "--all-metrics", help="Every metric (pass@1/10…)."),
    metrics: str | None = typer.Option(
        None, "--metrics", help="Comma-separated metrics (default: the plan's, or the fast set)."
    ),
    samples: int | None = typer.Option(None, "--samples", min=1, help="n per item for pass@k."),
    temperature: float | None = typer.Option(None, "--temperature", help="For pass@k samples."),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1),
    base_model: str | None = typer.Option(
        None, "--base-model", help="Base of the adapters, when they do not record it."
    ),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="OpenAI-compatible base URL for openai:NAME models."
    ),
    judge_endpoint: str | None = typer.Option(
        None, "--judge-endpoint", help="OpenAI-compatible base URL of the judge."
    ),
    judge_model: str | None = typer.Option(None, "--judge-model", help="The judge's model name."),
    judge_price_per_call: float | None = typer.Option(
        None, "--judge-price-per-call", min=0, help="USD per judge call."
    ),
    plan_file: Path | None = typer.Option(
        None, "--plan", help="Take evaluation settings and the judge from this tunegate.yaml."
    ),
    output_dir: Path = typer.Option(
        Path("results"), "--output-dir", "-o", help="results.jsonl, <arm>.jsonl, summary.json."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary and cost as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Evaluate two models on the same items: every metric per item, a summary, the cost."""
    from tunegate.data.items import load_items
    from tunegate.evaluate.metrics import ALL_METRICS, DEFAULT_METRICS, METRICS, known
    from tunegate.evaluate.run import Settings, pair
    from tunegate.plan import EvaluationConfig, JudgeConfig, QuantizationConfig, load_plan

    plan = load_plan(plan_file) if plan_file is not None else None
    stage_eval = plan.stages[-1].evaluation if plan and plan.stages else EvaluationConfig()
    files = _csv(test_set)
    if not files:
        raise UserError("--test-set: give at least one JSONL file of test items")
    control_items = [i for f in files for i in load_items(Path(f))]
    exp_files = _csv(experiment_test_set)
    experiment_items = (
        [i for f in exp_files for i in load_items(Path(f))] if exp_files else control_items
    )
    _unique(control_items, files)
    names = (
        ALL_METRICS
        if all_metrics
        else _csv([metrics])
        if metrics
        else stage_eval.metrics
        if plan
        else DEFAULT_METRICS
    )
    for name in names:
        if not known(name):
            raise UserError(f"--metrics: unknown metric '{name}' (known: {', '.join(METRICS)})")
    settings = Settings(
        metrics=list(names),
        samples=samples or stage_eval.samples,
        temperature=temperature if temperature is not None else stage_eval.temperature,
        top_p=stage_eval.top_p,
        seed=seed if seed is not None else (plan.seed if plan else 0),
        max_new_tokens=max_new_tokens or stage_eval.max_new_tokens,
        timeout_s=stage_eval.timeout_s,
    )
    try:
        EvaluationConfig(
            metrics=settings.metrics, samples=settings.samples, temperature=settings.temperature
        )
    except ValueError as err:
        raise UserError(f"--samples/--metrics: {_first_error(err)}") from None
    control, experiment = pair(
        control_items,
        experiment_items,
        scenarios=_csv([scenarios]) if scenarios else None,
        limit=limit if limit is not None else stage_eval.limit,
        where=(files[0], exp_files[0] if exp_files else files[0]),
    )
    judge_cfg = plan.judge if plan else None
    if judge_endpoint or judge_model:
        if not (judge_endpoint and judge_model):
            raise UserError("--judge-endpoint and --judge-model go together")
        judge_cfg = JudgeConfig(
            endpoint=judge_endpoint,
            model=judge_model,
            price_per_call_usd=judge_price_per_call or 0.0,
        )
    quant = plan.quantization if plan else QuantizationConfig()
    from tunegate.determinism import pin

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
) -> dict[str, Any]:
    from tunegate.evaluate.metrics import Context
    from tunegate.evaluate.run import (
        cost,
        generate_arm,
        make_judge,
        render,
        score_arm,
        summarize,
        write_results,
    )
    from tunegate.generate import load_backend
    from tunegate.progress import Bars

    judge, no_judge = make_judge(judge_cfg)
    with Bars(console, show_progress) as bars:
        ctx = Context(timeout_s=settings.timeout_s, judge=judge, no_judge_reason=no_judge)
        rows = []
        for role, spec in models.items():
            backend = load_backend(
                spec,
                quant=quant,
                base_model=base_model,
                endpoint=endpoint,
                where=f"--{role}-model",
            )
            arm_items = items[role]
            total = len(arm_items) * (1 + (settings.samples if settings.wants_samples else 0))
            step = bars.counter(f"{role}: generate", total)
            generations = generate_arm(backend, arm_items, settings, step)
            del backend  # one model in memory at a time
            ctx.progress = bars.ticker(role)
            rows += score_arm(role, role, arm_items, generations, settings, ctx)
    summary = summarize(rows, settings.metrics)
    for role, spec in models.items():
        summary["arms"][role]["model"] = spec
    costs = cost(
        items=len(items["control"]),
        arms=len(models),
        settings=settings,
        judge_usage=judge.usage if judge is not None else None,
    )
    written = write_results(output_dir, rows, summary, costs)
    console.print(render(summary, settings.metrics, costs))
    console.print(f"Per-item results: {written['results.jsonl']}")
    return {"summary": summary, "cost": costs, "files": {k: str(v) for k, v in written.items()}}


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
