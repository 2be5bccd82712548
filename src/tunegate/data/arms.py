"""Arms: load both, check they pair by id and differ only where the experiment says."""

from __future__ import annotations

from dataclasses import dataclass

from tunegate.data.items import Item, load_items
from tunegate.data.pairing import pair_by_id
from tunegate.errors import UserError
from tunegate.plan import Plan


@dataclass
class Experiment:
    """Both arms' items, keyed by id, and the scenarios in play (in first-seen order)."""

    control: dict[str, Item]
    experiment: dict[str, Item]
    scenarios: list[str]

    def arm(self, role: str) -> dict[str, Item]:
        return self.control if role == "control" else self.experiment

    def ordered(self) -> list[Item]:
        return list(self.control.values())


def load_experiment(plan: Plan) -> Experiment:
    """Load, validate and pair the plan's arms; check every scenario a stage names exists."""
    control_arm = plan.arms[plan.arm_name("control")]
    experiment_arm = plan.arms[plan.arm_name("experiment")]
    control = {i.id: i for i in load_items(control_arm.data)}
    experiment = {i.id: i for i in load_items(experiment_arm.data)}
    pairing = pair_by_id(control.values(), experiment.values(), lambda i: i.id)
    only_control, only_experiment = sorted(pairing.only_control), sorted(pairing.only_experiment)
    if not pairing.complete:
        detail = []
        if only_control:
            detail.append(f"only in control: {', '.join(only_control[:5])}")
        if only_experiment:
            detail.append(f"only in experiment: {', '.join(only_experiment[:5])}")
        raise UserError(
            f"arms are not paired by id ({'; '.join(detail)})", where=str(experiment_arm.data)
        )
    allowed_fields = set(experiment_arm.may_differ_in)
    differing: dict[str, list[str]] = {}
    for c, e in pairing.pairs:
        item_id = c.id
        fields = [
            f
            for f in ("scenario", "language", "group", "completion", "tests")
            if f not in allowed_fields and getattr(c, f) != getattr(e, f)
        ]
        if fields:
            differing[item_id] = fields
    if differing:
        first, fields = next(iter(differing.items()))
        others = f" (and {len(differing) - 1} more items)" if len(differing) > 1 else ""
        raise UserError(
            f"item '{first}' differs between arms in {', '.join(fields)}{others}; arms may "
            "differ only in prompt and metadata (list fields in the experiment arm's "
            "`may_differ_in` to allow more)",
            where=str(experiment_arm.data),
        )
    scenarios = list(dict.fromkeys(i.scenario for i in control.values()))
    allowed = plan.scenarios or scenarios
    # Field paths as load_plan spells them (`stages.3.data.scenarios.0`), with the plan's line.
    for j, name in enumerate(plan.scenarios or []):
        if name not in scenarios:
            raise UserError(
                f"scenarios.{j}: '{name}' has no items in {control_arm.data}",
                where=plan.where(("scenarios", str(j))),
            )
    for i, stage in enumerate(plan.stages):
        for j, name in enumerate(stage.data.scenarios or []):
            if name not in allowed:
                loc = ("stages", str(i), "data", "scenarios", str(j))
                raise UserError(
                    where=plan.where(loc),
                    message=f"{'.'.join(loc)}: unknown scenario '{name}' "
                    f"(the data has: {', '.join(scenarios)})",
                )
    if plan.pilot_scenario and plan.pilot_scenario not in allowed:
        raise UserError(
            where=plan.where(("pilot_scenario",)),
            message=f"pilot_scenario: unknown scenario '{plan.pilot_scenario}' "
            f"(the data has: {', '.join(scenarios)})",
        )
    if plan.scenarios:
        keep = set(plan.scenarios)
        control = {k: v for k, v in control.items() if v.scenario in keep}
        experiment = {k: v for k, v in experiment.items() if v.scenario in keep}
        scenarios = [s for s in scenarios if s in keep]
    return Experiment(control=control, experiment=experiment, scenarios=scenarios)
