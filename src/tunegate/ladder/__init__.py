"""The ladder: stages in order, each gated; resume at the first stage not passed.

    climb.py        the climb: guards → the stage kind's runner → gates → verdict, in order
    guards.py       may a stage start (the stage before, the pre-flight, the budget)
    environment.py  the environment stage's runner
    training.py     the training stage's runner (data checks → arms → scoring)
    arm.py          one arm: train or reuse, reload from disk, generate
    scoring.py      both arms scored by the evaluation pipeline; the paired comparison
    forecasting.py  what a stage took and the forecast of those ahead
    selection.py    which stages run, which items each uses
    context.py      what they share, and the StageRunner Protocol

A stage never starts unless the one before passed, unless forced (and then that is recorded).
Nothing here prints or logs: it emits events (`tunegate.events`) to the console, MLflow and
`events.jsonl`.

Importers name the module they need (`tunegate.ladder.climb`, `.selection`): this package
imports nothing, so a light command that needs the run directory or the selection (`status`,
`plan`) does not load the climb and, through it, the trainer and the evaluation.
"""
