"""One evaluation: both arms' models on the same items, every metric per item, one JSONL row per
item × arm, a summary per arm and scenario, and what it cost.

Data flows one way: pair the arms' items by id → generate (greedy for single-answer metrics, `n`
seeded samples when a pass@k metric asks for them) → score every metric over the whole batch →
rows (the statistics' input, schema in docs/results.md) → summary and cost. `tunegate evaluate`
and the ladder's stages both run it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunegate.data.items import Item
from tunegate.data.pairing import pair_by_id
from tunegate.errors import UserError
from tunegate.evaluate.metrics import Case, Context, code_of, metric
from tunegate.generate import Backend, Sampling
from tunegate.models import cache_dir
from tunegate.rundir import atomic_write_text
from tunegate.score import RESULTS_SCHEMA, MetricGap, Score, Status, status_of

# The original plan's evaluation pricing: ~$0.01 per API call, 7 evaluator calls per item and arm,
# plus
# one call per pass@k sample.
SEED_PRICE_PER_CALL_USD = 0.01
SEED_EVALUATORS = 7


@dataclass(frozen=True)
class Settings:
    metrics: list[str]
    samples: int = 10  # n, per item, for pass@k
    temperature: float = 0.8  # for the samples; single-answer metrics are greedy
    top_p: float = 0.95
    seed: int = 0
    max_new_tokens: int = 96
    timeout_s: float = 5.0
    stop: tuple[str, ...] = ()

    def samplings(self) -> list[Sampling]:
        """What is generated per item: one greedy answer, and `samples` seeded samples when a
        pass@k metric asks for them."""
        greedy = Sampling(max_new_tokens=self.max_new_tokens, seed=self.seed, stop=self.stop)
        if not self.wants_samples:
            return [greedy]
        sampled = Sampling(
            n=self.samples,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            max_new_tokens=self.max_new_tokens,
            stop=self.stop,
        )
        return [greedy, sampled]

    @property
    def wants_samples(self) -> bool:
        return any(metric(m).uses == "samples" for m in self.metrics)

    @classmethod
    def from_config(cls, ev: Any, seed: int) -> Settings:
        """A plan stage's `evaluation:` block."""
        return cls(
            metrics=list(ev.metrics),
            samples=ev.samples,
            temperature=ev.temperature,
            top_p=ev.top_p,
            seed=seed,
            max_new_tokens=ev.max_new_tokens,
            timeout_s=ev.timeout_s,
            stop=tuple(ev.stop),
        )


def make_judge(cfg: Any) -> tuple[Any, str]:
    """The judge a plan's `judge:` block (a JudgeConfig) configures, or None and the reason
    judge metrics then do not run."""
    if cfg is None:
        return None, "no judge configured (plan `judge:` or --judge-endpoint)"
    from tunegate.evaluate.judge import Judge, JudgeSettings

    settings = JudgeSettings(
        base_url=cfg.endpoint,
        model=cfg.model,
        api_key_env=cfg.api_key_env,
        price_per_call_usd=cfg.price_per_call_usd,
        price_per_1k_prompt_usd=cfg.price_per_1k_prompt_usd,
        price_per_1k_completion_usd=cfg.price_per_1k_completion_usd,
        concurrency=cfg.concurrency,
        max_retries=cfg.max_retries,
        timeout_s=cfg.timeout_s,
        repeats=cfg.repeats,
        budget_usd=cfg.budget_usd,
    )
    # One cache across runs and stages: a verdict already paid for is never paid again.
    cache = Path(os.environ.get("TUNEGATE_JUDGE_CACHE") or cache_dir() / "judge.sqlite")
    return Judge(settings, cache), ""


@dataclass
class Generations:
    greedy: dict[str, str] = field(default_factory=dict)  # item id → text
    samples: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def pair(
    control: list[Item],
    experiment: list[Item],
    *,
    scenarios: list[str] | None = None,
    limit: int | None = None,
    where: tuple[str, str] = ("control", "experiment"),
) -> tuple[list[Item], list[Item]]:
    """The arms' items, paired by id in the control's order, filtered and limited."""
    if scenarios:
        known = {i.scenario for i in control} | {i.scenario for i in experiment}
        unknown = [s for s in scenarios if s not in known]
        if unknown:
            raise UserError(
                f"--scenarios: no items of scenario {', '.join(unknown)} "
                f"(the test set has: {', '.join(sorted(known))})"
            )
        control = [i for i in control if i.scenario in scenarios]
        experiment = [i for i in experiment if i.scenario in scenarios]
    pairing = pair_by_id(control, experiment, lambda i: i.id)
    only_control, only_experiment = pairing.only_control, sorted(pairing.only_experiment)
    if not pairing.complete:
        parts = []
        if only_control:
            parts.append(f"{len(only_control)} only in {where[0]} (e.g. {only_control[0]})")
        if only_experiment:
            parts.append(f"{len(only_experiment)} only in {where[1]} (e.g. {only_experiment[0]})")
        raise UserError("the arms' items do not pair by id: " + "; ".join(parts))
    pairs = pairing.pairs[:limit] if limit is not None else pairing.pairs
    return [c for c, _ in pairs], [e for _, e in pairs]


def generate_arm(
    backend: Backend,
    items: list[Item],
    settings: Settings,
    progress: Callable[[int], None] | None = None,
) -> Generations:
    prompts = [i.prompt for i in items]
    out = Generations()
    greedy, *sampled = settings.samplings()
    answers = backend.generate(prompts, greedy, progress)
    out.greedy = {i.id: g[0] for i, g in zip(items, answers, strict=True)}
    for sampling in sampled:
        samples = backend.generate(prompts, sampling, progress)
        out.samples = {i.id: s for i, s in zip(items, samples, strict=True)}
    return out


def score_arm(
    name: str,
    role: str,
    items: list[Item],
    generations: Generations,
    settings: Settings,
    ctx: Context,
) -> list[dict[str, Any]]:
    """Every metric for every item of one arm: the rows of the results file."""
    cases = [
        Case(i, generations.greedy.get(i.id, ""), tuple(generations.samples.get(i.id, [])))
        for i in items
    ]
    values: dict[str, list[Score]] = {}
    for name_ in settings.metrics:
        try:
            values[name_] = metric(name_).score(cases, ctx)
        except Exception as err:  # a metric that raised failed to run; it scored nothing
            reason = f"{name_} raised {type(err).__name__}: {err}"[:300]
            values[name_] = [Score.failed(reason) for _ in cases]
    rows = []
    for k, item in enumerate(items):
        rows.append(
            {
                "schema": RESULTS_SCHEMA,
                "id": item.id,
                "arm": name,
                "role": role,
                "scenario": item.scenario,
                "language": item.language,
                "generation": cases[k].generation,
                # What the code metrics scored of it: the raw answer stays for reading.
                "code": code_of(item, cases[k].generation),
                "samples": list(cases[k].samples),
                "metrics": {
                    m: {
                        "value": values[m][k].value,
                        "status": values[m][k].status,
                        "detail": values[m][k].detail,
                    }
                    for m in settings.metrics
                },
                # What went wrong producing this row: its generation's error, and every metric
                # that failed to run on it, with the reason (a not-applicable metric is none).
                "errors": (
                    [f"generation: {generations.errors[item.id]}"]
                    if item.id in generations.errors
                    else []
                )
                + [
                    f"{m}: {values[m][k].detail}"
                    for m in settings.metrics
                    if values[m][k].status == "failed"
                ],
            }
        )
    return rows


@dataclass
class ArmToScore:
    """One arm's test items and what its model generated for them."""

    name: str
    role: str
    items: list[Item]
    generations: Generations
    model: str | None = None  # what generated them, recorded in the summary when given
    seed: int | None = None  # its training seed, when the arm has several runs (replicates)


@dataclass
class Evaluation:
    rows: list[dict[str, Any]]  # one per item × arm: the results file
    summary: dict[str, Any]
    costs: dict[str, Any]
    files: dict[str, Path]
    judge_usage: Any | None = None


def evaluate_arms(
    arms: list[ArmToScore],
    settings: Settings,
    judge_cfg: Any | None,
    out_dir: Path,
    progress: Callable[[str], Callable[[str, int], None] | None] | None = None,
) -> Evaluation:
    """Score every arm's generations on every metric, summarize, price and write the results:
    the one evaluation behind `tunegate evaluate` and every evaluating stage of the ladder."""
    judge, no_judge = make_judge(judge_cfg)
    ctx = Context(timeout_s=settings.timeout_s, judge=judge, no_judge_reason=no_judge)
    rows: list[dict[str, Any]] = []
    for arm in arms:
        ctx.progress = progress(arm.name) if progress is not None else None
        arm_rows = score_arm(arm.name, arm.role, arm.items, arm.generations, settings, ctx)
        if arm.seed is not None:
            for row in arm_rows:
                row["seed"] = arm.seed
        rows += arm_rows
    summary = summarize(rows, settings.metrics)
    for arm in arms:
        if arm.model is not None:
            summary["arms"][arm.name]["model"] = arm.model
    usage = judge.usage if judge is not None else None
    costs = cost(items=len(arms[0].items), arms=len(arms), settings=settings, judge_usage=usage)
    files = write_results(out_dir, rows, summary, costs)
    return Evaluation(rows, summary, costs, files, usage)


def metric_gaps(
    rows: list[dict[str, Any]], metrics: list[str], status: Status
) -> dict[str, MetricGap]:
    """Per metric, the rows (of one arm) whose score has this status, and why."""
    gaps = {}
    for m in metrics:
        hit = [r["metrics"][m]["detail"] for r in rows if _status(r["metrics"][m]) == status]
        if hit:
            gaps[m] = MetricGap(len(hit), "; ".join(sorted(set(hit)))[:300])
    return gaps


def _status(score: dict[str, Any]) -> str:
    return status_of(score.get("value"), score.get("status"))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(rows: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    """Means per arm (and per scenario), how many items each metric scored, and the relative
    improvement of the experiment over the control, signed so that positive is better."""

    def block(selected: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in metrics:
            got = [r["metrics"][m]["value"] for r in selected]
            scored = [v for v in got if v is not None]
            out[m] = {"mean": _mean(scored), "n": len(scored), "of": len(got)}
            for status in ("not_applicable", "failed"):
                gaps = [r["metrics"][m] for r in selected if _status(r["metrics"][m]) == status]
                if gaps:  # how many, and the first reasons (a report line, not a log)
                    reasons = "; ".join(sorted({g["detail"] for g in gaps}))
                    out[m][status] = {"items": len(gaps), "reasons": reasons[:300]}
        return out

    roles = sorted({r["role"] for r in rows})
    summary: dict[str, Any] = {"arms": {}, "scenarios": {}, "improvement": {}}
    for role in roles:
        mine = [r for r in rows if r["role"] == role]
        summary["arms"][role] = {"name": mine[0]["arm"], "items": len(mine), **block(mine)}
        for scenario in sorted({r["scenario"] for r in mine}):
            summary["scenarios"].setdefault(scenario, {})[role] = block(
                [r for r in mine if r["scenario"] == scenario]
            )
    if {"control", "experiment"} <= set(roles):
        for m in metrics:
            c = summary["arms"]["control"][m]["mean"]
            e = summary["arms"]["experiment"][m]["mean"]
            if c is None or e is None:
                continue
            better = metric(m).higher_is_better
            diff = (e - c) if better else (c - e)
            summary["improvement"][m] = {
                "absolute": diff,
                "relative": diff / abs(c) if c else None,
            }
    return summary


def cost(
    *,
    items: int,
    arms: int,
    settings: Settings,
    judge_usage: Any | None,
) -> dict[str, Any]:
    """What the evaluation paid (judge calls; local generation is $0) and what the original plan's
    per-call pricing would have charged for the same evaluation."""
    samples = settings.samples if settings.wants_samples else 0
    seed_calls = items * arms * (SEED_EVALUATORS + samples)
    out: dict[str, Any] = {
        "seed_calls": seed_calls,
        "seed_usd": round(seed_calls * SEED_PRICE_PER_CALL_USD, 2),
        "judge_calls": 0,
        "judge_cache_hits": 0,
        "judge_usd": 0.0,
    }
    if judge_usage is not None:
        out.update(
            judge_calls=judge_usage.calls,
            judge_cache_hits=judge_usage.cache_hits,
            judge_failures=judge_usage.failures,
            judge_prompt_tokens=judge_usage.prompt_tokens,
            judge_completion_tokens=judge_usage.completion_tokens,
            judge_usd=round(judge_usage.cost_usd, 6),
        )
    return out


def write_results(
    out_dir: Path, rows: list[dict[str, Any]], summary: dict[str, Any], costs: dict[str, Any]
) -> dict[str, Path]:
    """results.jsonl (every row), one <arm>.jsonl per arm (the original plan's --control-results /
    --experiment-results inputs) and summary.json; each replaced whole, never half-written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {
        "results.jsonl": "".join(json.dumps(r) + "\n" for r in rows),
        "summary.json": json.dumps({"summary": summary, "cost": costs}, indent=2) + "\n",
    }
    for arm in sorted({r["arm"] for r in rows}):
        files[f"{arm}.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows if r["arm"] == arm)
    written = {}
    for name, text in files.items():
        # Atomic, fsynced and readable as open() would make it (not mkstemp's 0600): results
        # are what a teammate reads next to the report.
        atomic_write_text(out_dir / name, text)
        written[name] = out_dir / name
    return written


def render(summary: dict[str, Any], metrics: list[str], costs: dict[str, Any]) -> str:
    """The original plan's "Evaluation Results" block: each arm's metrics, the experiment's
    change."""
    lines = []
    arms = summary["arms"]
    n = max((a["items"] for a in arms.values()), default=0)
    lines.append(f"Evaluation Results ({n} items):")
    lines.append("=" * 36)
    for role in ("control", "experiment"):
        if role not in arms:
            continue
        lines.append(f"{role.capitalize()} Model ({arms[role].get('model', arms[role]['name'])}):")
        for m in metrics:
            s = arms[role][m]
            lines.append(f"  - {_label(m)}: {_value(m, s)}" + _delta(summary, m, role))
    scenarios = summary["scenarios"]
    if len(scenarios) > 1:
        lines.append("")
        lines.append("Per scenario (control → experiment):")
        for scenario, by_role in scenarios.items():
            if not {"control", "experiment"} <= set(by_role):
                continue
            parts = []
            for m in metrics:
                c, e = by_role["control"][m]["mean"], by_role["experiment"][m]["mean"]
                if c is not None and e is not None:
                    parts.append(f"{_label(m)} {c:.2f} → {e:.2f}")
            lines.append(f"  - {scenario}: " + ("; ".join(parts) or "nothing scored"))
    lines.append("")
    lines.append(
        f"Cost: ${costs['judge_usd']:.2f} actual ({costs['judge_calls']} judge calls, "
        f"{costs['judge_cache_hits']} cached); the original plan's pricing: "
        f"${costs['seed_usd']:.2f} "
        f"({costs['seed_calls']} calls at ${SEED_PRICE_PER_CALL_USD})"
    )
    return "\n".join(lines)


def _label(m: str) -> str:
    return m.replace("_", " ").title().replace("Codebleu", "CodeBLEU").replace("Pass@", "Pass@")


def _value(m: str, s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return (
            "; ".join(
                f"{status.replace('_', ' ')} ({s[status]['reasons']})"
                for status in ("failed", "not_applicable")
                if status in s
            )
            or "no items"
        )
    scored = f"{s['n']} items" if s["n"] == s["of"] else f"{s['n']} of {s['of']} items scored"
    gaps = [
        f"{s[status]['items']} {status.replace('_', ' ')}"
        for status in ("failed", "not_applicable")
        if status in s
    ]
    if gaps:
        scored += f"; {', '.join(gaps)}"
    if m == "vulnerability":
        return f"{s['mean']:.1f}/10, lower is better ({scored})"
    if metric(m).kind == "binary" or m.startswith("pass@"):
        return f"{s['mean']:.0%} ({scored})"
    return f"{s['mean']:.2f} ({scored})"


def _delta(summary: dict[str, Any], m: str, role: str) -> str:
    imp = summary["improvement"].get(m)
    if role != "experiment" or imp is None:
        return ""
    rel = imp["relative"]
    word = "" if metric(m).higher_is_better else " safer"
    if rel is None:
        return f"  [{imp['absolute']:+.2f}]"
    return f"  [{rel:+.0%}{word}]"
