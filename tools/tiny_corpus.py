"""The example data's texts that tiny-llama's tokenizer trains on, frozen as package data.

`tunegate.models.tiny` builds the embedded model's byte-level BPE from the example experiment
(`data.example`, seed 0) and the micro samples (`data.micro`), plus a few fragments of its own.
It reads them from `resources/tiny-llama-corpus.json` rather than importing `data`: a plan's
stage hash fingerprints the model and the data reads the plan, so the model sits below both.
This regenerates the file; the test suite checks it is current, so a change to either
generator cannot silently leave the model built from the old texts.

    python -m tools.tiny_corpus            # rewrite the file
    python -m tools.tiny_corpus --check    # exit 1 if it is not what the generators give now
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunegate.data.example import generate
from tunegate.data.micro import SEED_MICRO_SAMPLES

SHIPPED = Path(__file__).resolve().parents[1] / "src/tunegate/resources/tiny-llama-corpus.json"


def seed_texts() -> list[str]:
    """The example's items (both arms) and the micro samples, in the tokenizer's order."""
    control, experiment = generate(seed=0)
    texts = [i.prompt + i.completion + (i.tests or "") for i in control + experiment]
    return texts + [p + "\n" + c for p, c in SEED_MICRO_SAMPLES]


def render(texts: list[str]) -> str:
    return json.dumps(texts, indent=0, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.tiny_corpus", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args()
    text = render(seed_texts())
    if args.check:
        current = SHIPPED.read_text(encoding="utf-8") if SHIPPED.is_file() else ""
        if current != text:
            print(f"{SHIPPED} is stale: run python -m tools.tiny_corpus", file=sys.stderr)
            return 1
        return 0
    SHIPPED.write_text(text, encoding="utf-8")
    print(f"wrote {SHIPPED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
