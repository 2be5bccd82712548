"""Training-seed noise: a stage that trains each arm with several seeds, a comparison that holds
the seeds' variance as well as the items', the spread between one arm's runs in the report, and
a plan priced for it. The statistics against statsmodels' mixed model; the ladder through the
CLI on the real trainer."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from scipy import stats as sps

from tunegate.analysis import Row, analyze, load_rows
from tunegate.costs import stage_cost
from tunegate.errors import UserError
from tunegate.gates import ArmEvidence, StageEvidence, evaluate_gates
from tunegate.plan import Gates, load_plan
from tunegate.state import ArmRecord, StageRecord
from tunegate.stats import seeded_difference
from tunegate.train.qlora import TrainResult

METRIC = "functional_correctness"


def _crossed(seed: int, seeds: int = 3, n: int = 25) -> dict[str, dict[int, list[float]]]:
    """Scores from the crossed model the test assumes: item, arm × item, run and residual."""
    rng = np.random.default_rng(seed)
    item = rng.normal(0, 1.0, n)
    out: dict[str, dict[int, list[float]]] = {}
    for role, mean in (("control", 0.0), ("experiment", 0.4)):
        arm_item = rng.normal(0, 0.5, n)
        out[role] = {
            40 + s: list(mean + item + arm_item + rng.normal(0, 0.6) + rng.normal(0, 0.7, n))
            for s in range(seeds)
        }
    return out


@pytest.mark.parametrize("draw", [3, 8])
def test_seeded_difference_is_the_mixed_models_estimate(draw: int) -> None:
    """Balanced, with positive variance components, the method-of-moments estimates are the
    REML ones: the same standard error and seed variance as statsmodels' MixedLM with crossed
    random effects for items, arm × item and runs."""
    import pandas as pd
    import statsmodels.formula.api as smf

    runs = _crossed(draw)
    rows = [
        {
            "y": v,
            "arm": int(role == "experiment"),
            "item": i,
            "run": f"{role}{s}",
            "ai": f"{role}{i}",
        }
        for role, by_seed in runs.items()
        for s, values in by_seed.items()
        for i, v in enumerate(values)
    ]
    frame = pd.DataFrame(rows).assign(group=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm(
            "y ~ arm",
            frame,
            groups="group",
            re_formula="0",
            vc_formula={"item": "0 + C(item)", "ai": "0 + C(ai)", "run": "0 + C(run)"},
        ).fit(reml=True)
    got = seeded_difference(METRIC, runs["control"], runs["experiment"])
    assert got is not None and got.seed_variance > 0
    assert got.difference == pytest.approx(fit.params["arm"], rel=1e-9)
    assert got.se == pytest.approx(fit.bse["arm"], rel=1e-3)
    run_variance = dict(zip(fit.model.exog_vc.names, fit.vcomp, strict=True))["run"]
    assert got.seed_variance == pytest.approx(run_variance, rel=1e-3)
    assert 2 <= got.df <= 24  # between the runs' 2 × (3 − 1) − … and the items' n − 1


def test_without_seed_variance_it_is_the_paired_t_on_seed_means() -> None:
    """When one arm's runs agree beyond item noise (here: identical runs), σ²_seed is 0 and the
    test is the paired t over the items' seed means, n − 1 df (scipy's ttest_rel)."""
    rng = np.random.default_rng(5)
    base = list(rng.normal(0, 1, 20))
    control = {42: base, 43: base}
    experiment = {42: list(np.add(base, rng.normal(0.3, 1, 20))), 43: list(np.add(base, 0.1))}
    experiment[43] = list(np.add(experiment[42], 0.0))  # identical runs: nothing between seeds
    got = seeded_difference(METRIC, control, experiment)
    assert got is not None and got.seed_variance == 0 and got.df == 19
    oracle = sps.ttest_rel(
        np.mean(list(experiment.values()), 0), np.mean(list(control.values()), 0)
    )
    assert got.p_value == pytest.approx(oracle.pvalue, rel=1e-9)
    assert got.spread == {"control": 0.0, "experiment": 0.0}


def test_seeded_difference_needs_two_seeds_per_arm_and_says_when_nothing_varies() -> None:
    assert seeded_difference(METRIC, {42: [1.0, 0.0]}, {42: [1.0, 1.0], 43: [0.0, 1.0]}) is None
    same = seeded_difference(METRIC, {1: [1.0, 0.0], 2: [1.0, 0.0]}, {1: [1.0, 0.0], 2: [1.0, 0.0]})
    assert same is not None and same.p_value == 1.0 and "nothing varies" in same.notes[0]


def _rows(runs: dict[str, dict[int, list[float]]]) -> list[Row]:
    return [
        Row(f"i{i}", role, "bugfix", {METRIC: v}, f"sim:{role}:{seed}:{i}", seed=seed)
        for role, by_seed in runs.items()
        for seed, values in by_seed.items()
        for i, v in enumerate(values)
    ]


def _lucky_seed() -> dict[str, dict[int, list[float]]]:
    """40 items. Both control runs pass the first 20; one experiment run passes 16 more, the
    other 4 more: a gain carried by one lucky training run."""
    control = [1.0] * 20 + [0.0] * 20
    lucky = [1.0] * 36 + [0.0] * 4
    plain = [1.0] * 24 + [0.0] * 16
    return {"control": {42: control, 43: control}, "experiment": {42: lucky, 43: plain}}


def test_a_gain_from_one_lucky_seed_is_not_a_go() -> None:
    analysis = analyze(_rows(_lucky_seed()), primary=METRIC, binary={METRIC: True})
    primary, seeded = analysis.primary, analysis.seeds
    # Items alone would call it: 16 items better on average, none worse (sign test p = 3e-5).
    assert primary.test == "exact sign test" and primary.p_value is not None
    assert primary.p_value < 1e-4 and primary.difference == pytest.approx(0.25)
    assert "mean over 2 control and 2 experiment training runs" in " ".join(primary.notes)
    assert seeded is not None
    assert seeded.run_means == {"control": {42: 0.5, 43: 0.5}, "experiment": {42: 0.9, 43: 0.6}}
    assert seeded.spread["experiment"] == pytest.approx(0.3)
    assert seeded.p_value is not None and seeded.p_value > 0.05
    arm = ArmEvidence(trained=True, saved_and_reloaded=True, expected_items=40)
    ev = StageEvidence(arms={"control.seed42": arm, "experiment.seed42": arm})
    ev.primary, ev.seeds = primary, seeded
    verdict, gates = evaluate_gates(Gates(min_improvement=0.1, max_p_value=0.05), ev)
    assert verdict == "INVESTIGATE"
    p_gate = next(g for g in gates if g.name == "max_p_value")
    assert not p_gate.passed and "run-aware t" in p_gate.evidence


def test_a_gain_every_seed_shows_passes() -> None:
    control = [1.0] * 20 + [0.0] * 20
    runs = {
        "control": {42: control, 43: [1.0] * 19 + [0.0] * 21},
        "experiment": {42: [1.0] * 34 + [0.0] * 6, 43: [1.0] * 35 + [0.0] * 5},
    }
    analysis = analyze(_rows(runs), primary=METRIC, binary={METRIC: True})
    assert analysis.seeds is not None and analysis.seeds.p_value is not None
    assert analysis.seeds.p_value < 0.01
    arm = ArmEvidence(trained=True, saved_and_reloaded=True, expected_items=40)
    ev = StageEvidence(arms={"control": arm, "experiment": arm})
    ev.primary, ev.seeds = analysis.primary, analysis.seeds
    verdict, _ = evaluate_gates(Gates(min_improvement=0.1, max_p_value=0.05), ev)
    assert verdict == "PASS"


def _results(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(item: str, role: str, seed: object, value: float) -> dict:
    return {"id": item, "role": role, "seed": seed, "metrics": {METRIC: {"value": value}}}


def test_results_with_seeds_are_read_and_checked(tmp_path: Path) -> None:
    rows = [
        _row(f"i{i}", role, seed, float((i + seed) % 2))
        for role in ("control", "experiment")
        for seed in (1, 2)
        for i in range(4)
    ]
    ok = _results(tmp_path / "ok.jsonl", rows)
    read = load_rows([ok])
    assert {r.seed for r in read} == {1, 2}
    assert analyze(read, primary=METRIC).seeds is not None
    # `tunegate stats` on the same file: the runs' means and the run-aware test, in words.
    shown = run_cli("stats", str(ok))
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"functional_correctness by seed: control \S+ / \S+ \(spread", shown.stdout)
    bad = _results(tmp_path / "bad.jsonl", [*rows[:3], _row("i3", "control", "one", 1.0)])
    with pytest.raises(UserError, match=r"bad.jsonl:4: seed 'one' is not an integer"):
        load_rows([bad])
    missing = load_rows([_results(tmp_path / "missing.jsonl", rows[1:])])
    with pytest.raises(UserError, match=r"control seed 1 has no row for 1 item\(s\).*\(e.g. i0\)"):
        analyze(missing, primary=METRIC)
    twice = load_rows([_results(tmp_path / "twice.jsonl", [*rows, rows[0]])])
    with pytest.raises(
        UserError, match=r"twice.jsonl:17: duplicate control row for 'i0' with seed"
    ):
        analyze(twice, primary=METRIC)


def test_a_stage_with_seeds_is_priced_and_forecast_for_each(example: Path) -> None:
    from tunegate.forecast import Measured, forecast, samples_per_arm

    text = example.read_text().replace("  - name: pilot\n", "  - name: pilot\n    seeds: 3\n")
    example.write_text(text)
    plan = load_plan(example)
    pilot = plan.stages[3]
    assert plan.training_seeds(pilot) == [42, 43, 44]
    cost = stage_cost(plan, 3, pilot)
    assert cost.hours == pytest.approx(3 * pilot.estimate.hours)
    assert cost.source.endswith("× 3 seeds")

    def trained(seconds: float) -> TrainResult:
        return TrainResult("adapter", 10, [], None, None, 0, 0, 1000, seconds, None, seconds)

    # The small stage trained each arm with 2 seeds: 4 runs of 60 s, 300 s in all, so 60 s
    # outside training, 30 s of it per seed.
    small = StageRecord(
        index=2,
        hash="h",
        seconds=300,
        arms={
            f"{arm}.seed{s}": ArmRecord(arm=arm, seed=s, train=trained(60))
            for arm in ("control", "experiment")
            for s in (42, 43)
        },
    )
    per_arm = samples_per_arm(plan, plan.stages[2], 40)
    f = forecast(plan, pilot, 84, [Measured(small, per_arm, 4)])
    assert f is not None
    samples = samples_per_arm(plan, pilot, 84) * 2 * 3  # two arms, three seeds each
    assert f.samples == samples
    assert f.hours * 3600 == pytest.approx(60 / per_arm * samples + 3 * 30)
    from rich.console import Console

    from tunegate.render import cost_table, plan_table

    console = Console(width=400, record=True)
    console.print(plan_table(plan))
    console.print(cost_table(plan))
    out = console.export_text()
    assert "batch 4, lr 0.003, 3 seeds per arm" in out
    assert f"{cost.source} │" in out  # the cost table says the estimate was tripled


SEEDS_PLAN = """\
name: seeds
seed: 42
output_dir: runs
model: {name: tiny-llama, max_length: 256}
lora: {dropout: 0.0}
training: {learning_rate: 3.0e-3, batch_size: 4, epochs: 30, gradient_checkpointing: false,
           save_steps: 50, max_steps: 10}
arms:
  control: {role: control, data: data/control.jsonl}
  experiment: {role: experiment, data: data/control.jsonl}
pilot_scenario: bugfix
stages:
  - name: small
    seeds: 2
    data: {selection: head, n: 8, val_n: 5, test_n: 6}
    evaluation: {mode: full, metrics: [functional_correctness, syntax_validity]}
    gates: {loss_decreased: true, model_saved: true, evaluation_ran: true, min_improvement: 0.05,
            max_p_value: 0.05}
"""


def test_a_stage_trains_every_arm_with_each_seed(example: Path) -> None:
    """Both arms hold the same data (an A/A): each is trained with seeds 42 and 43, each run
    saved, reloaded and scored on the same items; the comparison carries the runs' means and
    the verdict is not PASS."""
    plan_file = example.parent / "seeds.yaml"
    plan_file.write_text(SEEDS_PLAN)
    result = run_cli("run", str(plan_file))
    out = " ".join(result.stdout.split())
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 1, out
    run_dir = example.parent / "runs" / "seeds"
    state = json.loads((run_dir / "state.json").read_text())["stages"]["small"]
    names = ["control.seed42", "control.seed43", "experiment.seed42", "experiment.seed43"]
    assert list(state["arms"]) == names
    for name in names:
        arm = state["arms"][name]
        assert arm["status"] == "done" and arm["seed"] == int(name[-2:])
        assert (run_dir / "stage-0-small" / name / "adapter" / "tunegate.json").is_file()
        assert f"{name}: training on 8 items" in out
    # Different seeds train differently: the same data, another order and init.
    losses = {n: state["arms"][n]["train"]["losses"] for n in names}
    assert losses["control.seed42"] != losses["control.seed43"]
    rows = [json.loads(line) for line in (run_dir / "stage-0-small" / "results.jsonl").open()]
    assert sorted({(r["arm"], r["seed"]) for r in rows}) == [(n, int(n[-2:])) for n in names]
    assert len(rows) == 4 * 6
    seeds = state["comparison"]["seeds"]
    assert set(seeds["run_means"]["control"]) == {"42", "43"}
    assert seeds["items"] == 6
    assert state["verdict"] != "PASS"
    assert re.search(r"functional_correctness by seed: control \S+ / \S+ \(spread", out)
    report = (run_dir / "report" / "report.md").read_text()
    assert "run-aware" in report.lower() or "Each arm trained with several seeds" in report
    assert "control.seed43" in report
    # Climbed again: every run is reused on its own record, and scores as before.
    again = run_cli("run", str(plan_file))
    out = " ".join(again.stdout.split())
    for name in names:
        assert f"{name}: trained adapter recorded at" in out
    assert "training on" not in out
    state = json.loads((run_dir / "state.json").read_text())["stages"]["small"]
    assert state["comparison"]["seeds"] == seeds
