"""Pairing by id: the one rule every paired comparison rests on.

Control and experiment are compared item by item, so every place that joins the two arms (their
data files, a test set, their results) pairs them here and reports what did not pair in its own
words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Pairing(Generic[T]):
    pairs: list[tuple[T, T]]  # (control, experiment), in the control's order
    only_control: list[str]  # ids, in the control's order
    only_experiment: list[str]  # ids, in the experiment's order

    @property
    def complete(self) -> bool:
        return not self.only_control and not self.only_experiment


def pair_by_id(
    control: Iterable[T], experiment: Iterable[T], id_of: Callable[[T], str]
) -> Pairing[T]:
    """Each control element with the experiment element of the same id."""
    by_id = {id_of(e): e for e in experiment}
    control_ids: set[str] = set()
    pairs: list[tuple[T, T]] = []
    only_control: list[str] = []
    for c in control:
        key = id_of(c)
        control_ids.add(key)
        if key in by_id:
            pairs.append((c, by_id[key]))
        else:
            only_control.append(key)
    only_experiment = [key for key in by_id if key not in control_ids]
    return Pairing(pairs, only_control, only_experiment)
