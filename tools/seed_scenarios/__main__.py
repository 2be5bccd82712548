"""python -m tools.seed_scenarios [--out DIR] [--seed N]: regenerate the example's data."""

from __future__ import annotations

import argparse
from pathlib import Path

from .generate import write_scenarios

SHIPPED = Path(__file__).resolve().parents[2] / "src/tunegate/resources/seed-scenarios/data"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.seed_scenarios",
        description="Write control.jsonl and experiment.jsonl of the five seed scenarios.",
    )
    parser.add_argument(
        "--out", type=Path, default=SHIPPED, help=f"directory to write (default: {SHIPPED})"
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (shipped: 0)")
    args = parser.parse_args()
    for path in write_scenarios(args.out, seed=args.seed):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
