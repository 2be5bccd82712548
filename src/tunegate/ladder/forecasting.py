"""After each training stage: what it took, and the forecast of every stage still ahead."""

from __future__ import annotations

from tunegate.events import StageMeasured
from tunegate.ladder.context import Climb
from tunegate.state import Forecast, StageRecord


def measured(climb: Climb) -> list[tuple[StageRecord, int, int]]:
    """(stage record, samples per arm, effective batch) of every training stage measured."""
    from tunegate.forecast import effective_batch, samples_per_arm

    out = []
    for i, stage in enumerate(climb.plan.stages):
        record = climb.state.stage(stage.name)
        if record is None or record.actual is None or stage.kind != "train":
            continue
        samples = samples_per_arm(climb.plan, stage, len(climb.selection(i).train))
        out.append((record, samples, effective_batch(climb.plan, stage)))
    return out


def forecast_stage(climb: Climb, index: int) -> Forecast | None:
    """Stage `index`'s time and cost from the stages measured so far (None: nothing to go on,
    or not a training stage)."""
    from tunegate.forecast import forecast

    stage = climb.plan.stages[index]
    if stage.kind != "train":
        return None
    return forecast(climb.plan, stage, len(climb.selection(index).train), measured(climb))


def measure(climb: Climb, index: int) -> None:
    """Record what training stage `index` took; forecast the training stages after it."""
    from tunegate.forecast import actual

    stage = climb.plan.stages[index]
    record = climb.state.stages[stage.name]
    record.actual = actual(climb.plan, stage, record, len(climb.selection(index).train))
    ahead = {
        i: f
        for i in range(index + 1, len(climb.plan.stages))
        if (f := forecast_stage(climb, i)) is not None
    }
    # Kept per measuring stage: the forecast made after the pilot is what the last stage is
    # judged against (docs/benchmarks.md reports its error).
    climb.state.forecasts[stage.name] = {f.stage: f for f in ahead.values()}
    climb.save()
    climb.events.emit(StageMeasured(index, stage.name, record.actual.to_json(), ahead, record))
