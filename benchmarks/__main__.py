"""``python -m benchmarks {frappe,criteo-synth,profile} ...`` from the repository root."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from benchmarks import frappe, profile_train


def main(argv: Optional[list[str]] = None) -> int:
    """Parses the subcommand and runs its benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    frappe.add_arguments(
        sub.add_parser("frappe", help="DeepFM on Frappe: train samples/s, test AUC, peak RSS")
    )
    profile_train.add_arguments(
        sub.add_parser("profile", help="profile one config's parsing and train step")
    )
    args = parser.parse_args(argv)
    if args.benchmark == "profile":
        return profile_train.main(args)
    return frappe.main(args)


if __name__ == "__main__":
    sys.exit(main())
