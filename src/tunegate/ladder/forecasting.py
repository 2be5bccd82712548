"""After each training stage: what it took, and the forecast of every stage still ahead."""

from __future__ import annotations

from tunegate.events import StageMeasured
from tunegate.forecast import Measured, StageShape
from tunegate.ladder.context import Climb
from tunegate.state import Forecast


def measured(climb: Climb) -> list[Measured]:
    """Every training stage measured: its record, samples per arm, effective batch, padding."""
    from tunegate.forecast import effective_batch, samples_per_arm

    out = []
    for i, stage in enumerate(climb.plan.stages):
        record = climb.state.stage(stage.name)
        if record is None or record.actual is None or stage.kind != "train":
            continue
        samples = samples_per_arm(climb.plan, stage, len(climb.selection(i).train))
        out.append(
            Measured(record, samples, effective_batch(climb.plan, stage), _padding(climb, i))
        )
    return out


def forecast_stage(
    climb: Climb, index: int, found: list[Measured] | None = None
) -> Forecast | None:
    """Stage `index`'s time and cost from the stages measured so far (`found`, when the caller
    has them; None: nothing to go on, or not a training stage)."""
    from tunegate.forecast import forecast

    stage = climb.plan.stages[index]
    if stage.kind != "train":
        return None
    found = measured(climb) if found is None else found
    if not found:
        return None
    sel = climb.selection(index)
    return forecast(climb.plan, stage, len(sel.train), found, stage_shape(climb, index))


def _lengths(climb: Climb, index: int) -> list[int]:
    """Tokens of each of stage `index`'s training samples (the control arm's), as the model sees
    them: prompt format applied, EOS included."""
    from transformers import AutoTokenizer

    from tunegate.ladder.selection import selection_items
    from tunegate.models import resolve_model
    from tunegate.prompts import PromptFormat

    plan, sel = climb.plan, climb.selection(index)
    role = plan.arms[plan.arm_name("control")].role
    items = selection_items(climb.exp, role, sel, sel.train)
    if not items:
        return []
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(plan.model.name))
    rendered = PromptFormat.of(plan.model).render_items(tokenizer, items)
    return [len(tokenizer(i.prompt + i.completion)["input_ids"]) + 1 for i in rendered]


def _padding(climb: Climb, index: int, lengths: list[int] | None = None) -> float:
    """What padding adds to stage `index`'s training tokens (`forecast.expected_padding`): none
    with packing or at batch 1."""
    from tunegate.forecast import expected_padding

    training = climb.plan.stage_training(climb.plan.stages[index])
    if training.packing or training.batch_size == 1:
        return 1.0
    return expected_padding(
        _lengths(climb, index) if lengths is None else lengths, training.batch_size
    )


def stage_shape(climb: Climb, index: int) -> StageShape:
    """The tokens of an average training sample of stage `index`, as the model sees them, what
    padding adds to them, and its generation's work per training run."""
    from tunegate.evaluate.pipeline import Settings
    from tunegate.generate import MAX_BATCH_SEQUENCES, Sampling, generation_steps

    plan, stage, sel = climb.plan, climb.plan.stages[index], climb.selection(index)
    lengths = _lengths(climb, index)
    if not lengths:
        return StageShape()
    ev = stage.evaluation
    shapes = [(1, Sampling(max_new_tokens=ev.max_new_tokens))]  # the smoke answer
    if ev.mode == "full":
        tests = len(sel.test)
        shapes += [(tests, s) for s in Settings.from_config(ev, plan.seed).samplings()]
    steps = [generation_steps(n, s, MAX_BATCH_SEQUENCES) for n, s in shapes]
    return StageShape(
        tokens_per_sample=sum(lengths) / len(lengths),
        padding=_padding(climb, index, lengths),
        generation=(sum(r for r, _ in steps), sum(b for _, b in steps)),
    )


def measure(climb: Climb, index: int) -> None:
    """Record what training stage `index` took; forecast the training stages after it."""
    from tunegate.forecast import actual

    stage = climb.plan.stages[index]
    record = climb.state.stages[stage.name]
    record.actual = actual(climb.plan, stage, record, len(climb.selection(index).train))
    found = measured(climb)  # once for every stage ahead: it tokenizes the measured stages
    ahead = {
        i: f
        for i in range(index + 1, len(climb.plan.stages))
        if (f := forecast_stage(climb, i, found)) is not None
    }
    # Kept per measuring stage: the forecast made after the pilot is what the last stage is
    # judged against (docs/benchmarks.md reports its error).
    climb.state.forecasts[stage.name] = {f.stage: f for f in ahead.values()}
    climb.save()
    climb.events.emit(StageMeasured(index, stage.name, record.actual.to_json(), ahead, record))
