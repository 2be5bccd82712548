"""The original plan's stage-1 micro dataset: five samples, verbatim ("not 500!").

Its own module, importing nothing but `data.items`, because the embedded model's tokenizer corpus
includes it and `plan` must not import what imports `plan` back.
"""

from __future__ import annotations

from tunegate.data.items import Item, derived_id

SEED_MICRO_SAMPLES: tuple[tuple[str, str], ...] = (
    ("Write a hello function", "def hello(): print('hi')"),
    ("Write a sum function", "def sum(a,b): return a+b"),
    ("Write a max function", "def max(a,b): return a if a>b else b"),
    ("Write a min function", "def min(a,b): return a if a<b else b"),
    ("Write a len function", "def len(x): return len(x)"),
)


def micro_items() -> list[Item]:
    return [
        # Ids as the loader derives them for the original plan's files (`tunegate data micro`).
        Item(id=derived_id(c, i), scenario="micro", prompt=p + "\n", completion=c + "\n")
        for i, (p, c) in enumerate(SEED_MICRO_SAMPLES, start=1)
    ]
