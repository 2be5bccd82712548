"""`tunegate stats`: the original plan's stats_analysis.py, paired and corrected, on per-item
results."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tunegate.cli.common import output_width
from tunegate.errors import UserError
from tunegate.registry import known, metric_spec


def stats(
    results: list[Path] = typer.Argument(
        None, help="results.jsonl file(s) holding both arms (from `tunegate evaluate`)."
    ),
    control_results: Path | None = typer.Option(
        None, "--control-results", help="The control arm's results (the original plan's flag)."
    ),
    experiment_results: Path | None = typer.Option(
        None, "--experiment-results", help="The experiment arm's results."
    ),
    primary: str | None = typer.Option(
        None, "--primary", help="Pre-registered primary metric (default functional_correctness)."
    ),
    metrics: str | None = typer.Option(None, "--metrics", help="Comma-separated; default all."),
    test: list[str] = typer.Option(
        None,
        "--test",
        help="METRIC=TEST, the primary test of a metric: t, wilcoxon, mcnemar, "
        "sign, permutation (repeatable).",
    ),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-6, max=0.5, help="For the power line."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap and permutation resampling seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the analysis as JSON."),
) -> None:
    """Paired tests, intervals, effect sizes and corrections, per metric, control vs experiment."""
    from tunegate.analysis import analyze, load_rows
    from tunegate.stats import TESTS

    paths = list(results or [])
    if control_results or experiment_results:
        if not (control_results and experiment_results):
            raise UserError("--control-results and --experiment-results go together")
        paths += [control_results, experiment_results]
    if not paths:
        raise UserError("give a results.jsonl, or --control-results and --experiment-results")
    rows = load_rows(paths)
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    available = sorted({m for r in rows for m in r.values})
    for name in names or []:
        if name not in available:
            raise UserError(f"--metrics: '{name}' is not in the results ({', '.join(available)})")
    chosen = primary or ("functional_correctness" if "functional_correctness" in available else
                         available[0])  # fmt: skip
    tests: dict[str, str] = {}
    for spec in test or []:
        name, _, which = spec.partition("=")
        if not which or which not in TESTS:
            raise UserError(f"--test: '{spec}' is not METRIC=TEST (TEST: {', '.join(TESTS)})")
        tests[name] = which

    # A registered metric's kind comes from the registry (a 0–10 score whose items all scored 0
    # is still not binary); an unknown one is binary if every value is 0 or 1.
    binary = {m: metric_spec(m).kind == "binary" for m in available if known(m)}
    try:
        analysis = analyze(
            rows, primary=chosen, metrics=names, binary=binary, tests=tests, seed=seed
        )
    except ValueError as err:  # a test that cannot apply to its metric
        raise UserError(str(err)) from None
    if as_json:
        print(json.dumps(analysis.to_json(), indent=2))
        return
    # Its own console: the comparison table has eleven columns, wider than the others' 140.
    console = Console(highlight=False, width=output_width(piped=160))
    console.print(render(analysis, alpha))


def render(analysis: object, alpha: float) -> Table:
    from tunegate.analysis import Analysis
    from tunegate.power import stage_power
    from tunegate.render import seeds_line

    assert isinstance(analysis, Analysis)
    table = Table(title="Paired comparison: experiment − control", title_justify="left")
    for column in (
        "metric", "n", "control", "experiment", "difference [95% CI]", "relative [95% CI]",
        "test", "p", "p (Holm)", "d_z [95% CI]", "g_av",
    ):  # fmt: skip
        table.add_column(column)
    rows = [("primary", analysis.primary), *(("", c) for c in analysis.secondary.values())]
    rows += [(f"  {s}", c) for s, c in analysis.per_scenario.items()]
    for label, c in rows:
        if c.n == 0:
            name = f"{c.metric}{' (' + label.strip() + ')' if label else ''}"
            table.add_row(name, "0", "no item has a value in both arms", *["—"] * 8)
            continue
        table.add_row(
            f"{c.metric}{' (' + label.strip() + ')' if label else ''}",
            str(c.n),
            _rate(c.control_mean, c.control_rate_ci95),
            _rate(c.experiment_mean, c.experiment_rate_ci95),
            _with_ci(c.difference, c.ci95),
            _with_ci(c.relative, c.relative_ci95, percent=True),
            c.test,
            _p(c.p_value),
            _p(c.p_adjusted) if label != "primary" else "—",
            _with_ci(c.d_z, c.d_z_ci95),
            _with_ci(c.g_av, c.g_av_ci95),
        )
    power = stage_power(analysis.primary.n, alpha=alpha)
    table.caption = (
        f"primary: pre-registered, uncorrected; secondary metrics Holm-adjusted together"
        f"{', scenarios Holm-adjusted together' if analysis.per_scenario else ''}. "
        f"d_z = mean(d)/sd(d) (paired; exact CI), g_av = Hedges-corrected mean(d)/mean(sd) "
        f"(comparable across designs). Power at n = {power.n}: {power.note}"
        + "".join(f"\nnote: {n}" for n in analysis.primary.notes)
        + "".join(
            f"\nnote: {c.metric}: {n}"
            for c in analysis.secondary.values()
            for n in c.notes
            if "left out" in n
        )
        + (f"\nseeds: {seeds_line(analysis.seeds)}" if analysis.seeds else "")
    )
    table.caption_justify = "left"
    return table


def _rate(mean: float | None, ci: tuple[float, float] | None) -> str:
    if mean is None:
        return "—"
    if ci is None:
        return f"{mean:.3g}"
    return f"{mean:.1%} [{ci[0]:.0%}, {ci[1]:.0%}]"


def _with_ci(value: float | None, ci: tuple[float, float] | None, percent: bool = False) -> str:
    if value is None:
        return "—"
    fmt = (lambda v: f"{v:+.1%}") if percent else (lambda v: f"{v:+.3g}")
    return fmt(value) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"
