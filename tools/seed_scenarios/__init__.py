"""The generator of the five-scenario example that `tunegate data example DIR` writes.

Generated deterministically and offline, once, by the developers; the runtime ships its output
as package data (src/tunegate/resources/seed-scenarios) and never runs this. Regenerate with
`python -m tools.seed_scenarios` from the repository root; tests/test_scenarios.py checks that
it reproduces the shipped files byte for byte.

- `python` and `bugfix` (humaneval.py): HumanEval's problems, and the same with one injected bug.
- `sql` (sql.py, sql_questions.yaml): questions on the `shop` fixture.
- `express-api` (express.py): Express-style route handlers.
- `react-components` (react.py): React-style function components.

Items are identified by scenario and source (`python-he012` is HumanEval/12, `sql-top_n-03` the
fourth variant of the `top_n` template); the generator's seed shuffles each scenario's order and
picks the variants of the templated scenarios.
"""
