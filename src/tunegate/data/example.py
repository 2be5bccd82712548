"""The example experiment: does metadata in the prompt help a fine-tuned model write code?

Generated deterministically, no network. Each item asks for a two-argument function. The plain
(control) prompt describes what the function does but not its name; the experiment prompt is the
same text with metadata above it (entry point, intent, language). Every item's tests call the
function by name, so the metadata carries information a model genuinely needs — the effect the
ladder should detect is real, not planted in the scores.

Scenarios (issue "data" adds sql, express-api and react-components):
- `python`: write the function from its description.
- `bugfix`: fix a function whose operator is wrong; the buggy version fails its tests and the
  reference fix passes (checked by the test suite).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunegate.data.items import Item, write_arms


@dataclass(frozen=True)
class _Op:
    intent: str  # templated on the argument names {a} and {b}
    expr: str
    fn: Callable[[int, int], float]


# Five operators, each seen ~8 times in the small stage's 40 training items. With ten (floor
# division, modulo, power, absolute difference and average besides), each was seen ~4 times;
# the 2-layer tiny-llama then generalized the intent-to-operator lookup to 50–90 % of new items
# depending on the random seed, and so on the CPU's kernels: the small stage's figure moved from
# 0 % → 70 % to 0 % → 10 % between machines. With five it learns the lookup on every seed tried.
OPS: tuple[_Op, ...] = (
    _Op("adds {a} and {b}", "{a} + {b}", lambda a, b: a + b),
    _Op("subtracts {b} from {a}", "{a} - {b}", lambda a, b: a - b),
    _Op("multiplies {a} and {b}", "{a} * {b}", lambda a, b: a * b),
    _Op("returns the larger of {a} and {b}", "max({a}, {b})", max),
    _Op("returns the smaller of {a} and {b}", "min({a}, {b})", min),
)
# Eight names: 5 × 8 × 3 = 120 items a scenario, so a 70/15/15 split still leaves 15 test items
# (the pilot's p-value gate needs them), and a control that must guess the name (python) rarely
# guesses it.
NAMES: tuple[str, ...] = ("combine", "merge", "fold", "blend", "mix", "join", "pair", "unite")
ARGS: tuple[tuple[str, str], ...] = (("a", "b"), ("x", "y"), ("m", "n"))
TEST_INPUTS: tuple[tuple[int, int], ...] = ((7, 3), (3, 7), (10, 4))  # every op differs on these
SCENARIOS: tuple[str, ...] = ("python", "bugfix")


def _tests(name: str, op: _Op) -> str:
    return "".join(f"assert {name}({a}, {b}) == {op.fn(a, b)!r}\n" for a, b in TEST_INPUTS)


def _function(name: str, args: tuple[str, str], expr: str) -> str:
    a, b = args
    return f"def {name}({a}, {b}):\n    return {expr.format(a=a, b=b)}\n"


def _metadata_block(metadata: dict[str, str]) -> str:
    return "".join(f"# {key}: {value}\n" for key, value in metadata.items())


def _every_op_in_turn(
    combos: list[tuple[int, str, tuple[str, str]]], rng: random.Random
) -> list[tuple[int, str, tuple[str, str]]]:
    """The shuffled combinations reordered so that every run of len(OPS) items holds each
    operator once. A stage that takes the head of a scenario (the small stage's first 40 items,
    then 10 test items) then trains on every operator it is tested on, equally often: a head
    that happened to miss an operator made the small stage's figure depend on the CPU."""
    by_op: dict[int, list[tuple[int, str, tuple[str, str]]]] = {}
    for combo in combos:
        by_op.setdefault(combo[0], []).append(combo)
    turn = rng.sample(sorted(by_op), len(by_op))
    return [by_op[op][j] for j in range(len(combos) // len(by_op)) for op in turn]


def generate(seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Return (control, experiment) items, paired by id, in the same deterministic order."""
    rng = random.Random(seed)
    control: list[Item] = []
    experiment: list[Item] = []
    for scenario in SCENARIOS:
        combos = [(o, n, a) for o in range(len(OPS)) for n in NAMES for a in ARGS]
        rng.shuffle(combos)
        for k, (op_index, name, args) in enumerate(_every_op_in_turn(combos, rng)):
            op = OPS[op_index]
            a, b = args
            intent = op.intent.format(a=a, b=b)
            completion = _function(name, args, op.expr)
            metadata = {
                "language": "python",
                "intent": intent,
                "entry_point": name,
                "signature": f"def {name}({a}, {b}):",
            }
            if scenario == "python":
                prompt = f"Write a function that {intent}.\n"
            else:
                # A wrong operator, different for each item, so the buggy code alone does not
                # tell which operator was meant.
                bug = OPS[(op_index + 1 + k % (len(OPS) - 1)) % len(OPS)]
                prompt = f"Fix the bug in this function:\n{_function(name, args, bug.expr)}"
                metadata = {"bug": "wrong operator", **metadata}
            common = dict(
                id=f"{scenario}-{k:03d}",
                scenario=scenario,
                completion=completion,
                language="python",
                tests=_tests(name, op),
            )
            control.append(Item(prompt=prompt, **common))
            experiment.append(
                Item(prompt=prompt + _metadata_block(metadata), metadata=metadata, **common)
            )
    return control, experiment


def write_example(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    return write_arms(directory, *generate(seed))
