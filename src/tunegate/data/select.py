"""Selections: which items each stage trains, validates and tests on — the same ids in every arm.

Every selection is a pure function of (items, stage data config, seed), so a rerun, a resume or
another machine picks the same ids; the run directory records them with their hashes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from tunegate.data.items import Item
from tunegate.data.micro import micro_items
from tunegate.plan import DataSelection


@dataclass
class Selection:
    """Ids per split; the same ids are looked up in each arm."""

    train: list[str]
    val: list[str]
    test: list[str]
    builtin: list[Item] = field(default_factory=list)  # items not from the arms (micro)

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def _stable_order(ids: list[str], seed: int) -> list[str]:
    """A seeded order that does not depend on Python's hash seed or the input order."""
    return sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())


def _cap_per_scenario(ids: list[str], items: list[Item], cap: int | None, seed: int) -> list[str]:
    if cap is None:
        return ids
    scenario = {i.id: i.scenario for i in items}
    seen: dict[str, int] = {}
    kept = []
    for item_id in sorted(_stable_order(ids, seed), key=lambda i: scenario[i]):
        seen[scenario[item_id]] = seen.get(scenario[item_id], 0) + 1
        if seen[scenario[item_id]] <= cap:
            kept.append(item_id)
    return kept


def select(items: list[Item], spec: DataSelection, seed: int) -> Selection:
    """Pick train/val/test ids from the (control) arm's items according to the stage's spec."""
    if spec.selection == "micro":
        micro = micro_items()
        ids = [m.id for m in micro]
        # val = train, as the original plan
        return Selection(train=ids, val=ids, test=[], builtin=micro)
    pool = [i for i in items if spec.scenarios is None or i.scenario in spec.scenarios]
    if spec.selection == "head":
        # The original plan's `head -n 20` for training and `head -n 5` for validation. Testing on
        # the original plan's val set would score items the model trained on, so test items are the
        # next `test_n` after the head instead: held out, and still the file's order.
        ids = [i.id for i in pool]
        n, val_n, test_n = spec.n or 20, spec.val_n or 5, spec.test_n or 5
        return Selection(train=ids[:n], val=ids[:val_n], test=ids[n : n + test_n])
    # Stratified split per scenario, so every scenario keeps its 70/15/15 proportions.
    train: list[str] = []
    val: list[str] = []
    test: list[str] = []
    frac_train, frac_val, _ = spec.split
    grouped = [i for i in pool if i.group is not None]
    if grouped:
        # A group's side is a function of the group alone, so an item and its siblings in other
        # scenarios always land together (proportions then hold in expectation, not exactly).
        for item in grouped:
            u = int(hashlib.sha256(f"{seed}:{item.group}".encode()).hexdigest()[:15], 16) / 16**15
            side = train if u < frac_train else val if u < frac_train + frac_val else test
            side.append(item.id)
        pool = [i for i in pool if i.group is None]
        test[:] = _cap_per_scenario(test, grouped, spec.test_per_scenario, seed)
    for scenario in sorted({i.scenario for i in pool}):
        ids = _stable_order([i.id for i in pool if i.scenario == scenario], seed)
        n_train = round(len(ids) * frac_train)
        n_val = round(len(ids) * frac_val)
        train += ids[:n_train]
        val += ids[n_train : n_train + n_val]
        scenario_test = ids[n_train + n_val :]
        if spec.test_per_scenario is not None:
            scenario_test = scenario_test[: spec.test_per_scenario]
        test += scenario_test
    if spec.n is not None:
        train = train[: spec.n]
    return Selection(train=train, val=val, test=test)
