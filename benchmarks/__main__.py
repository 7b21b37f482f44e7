"""``python -m benchmarks {frappe} ...``: run a benchmark from the repository root."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from benchmarks import frappe, movielens


def main(argv: Optional[list[str]] = None) -> int:
    """Parses the subcommand and runs its benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    frappe.add_arguments(
        sub.add_parser("frappe", help="DeepFM on Frappe: train samples/s, test AUC, peak RSS")
    )
    movielens.add_arguments(
        sub.add_parser("movielens", help="DSSM retrieval on MovieLens 100K vs most-popular")
    )
    args = parser.parse_args(argv)
    if args.benchmark == "movielens":
        return movielens.main(args)
    return frappe.main(args)


if __name__ == "__main__":
    sys.exit(main())
