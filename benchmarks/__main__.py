"""``python -m benchmarks SUITE ...``, SUITE one of frappe, criteo-synth, big-tables, profile,
movielens, ml-seq, planted, fg, serve."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from benchmarks import (
    big_tables,
    criteo_synth,
    fg_bench,
    frappe,
    ml_seq,
    movielens,
    planted_interests,
    profile_train,
    serve_bench,
)


def main(argv: Optional[list[str]] = None) -> int:
    """Parses the subcommand and runs its benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    frappe.add_arguments(
        sub.add_parser(
            "frappe", help="Frappe: recforge configs beside the references (samples/s, AUC, RSS)"
        )
    )
    criteo_synth.add_arguments(
        sub.add_parser(
            "criteo-synth", help="Criteo-shaped synthetic parquet: recforge 1 and 2 processes, refs"
        )
    )
    big_tables.add_arguments(
        sub.add_parser(
            "big-tables", help="tables in RAM vs file-backed (embedding_file_dir), Zipf ids"
        )
    )
    profile_train.add_arguments(
        sub.add_parser("profile", help="profile one config's parsing and train step")
    )
    movielens.add_arguments(
        sub.add_parser("movielens", help="DSSM / MIND retrieval on MovieLens 100K vs most-popular")
    )
    ml_seq.add_arguments(
        sub.add_parser(
            "ml-seq", help="hstu_match vs RecBole SASRec, DSSM, most-popular on ML-100K sequences"
        )
    )
    planted_interests.add_arguments(
        sub.add_parser("planted", help="MIND max_k 3 / 1 vs DSSM on planted multi-interest data")
    )
    fg_bench.add_arguments(
        sub.add_parser("fg", help="FG rows/s per thread (FG_DAG vs FG_NONE) vs training")
    )
    serve_bench.add_arguments(
        sub.add_parser("serve", help="recforge serve p50/p99 and requests/s vs load_predictor")
    )
    args = parser.parse_args(argv)
    run = {
        "frappe": frappe.main,
        "criteo-synth": criteo_synth.main,
        "big-tables": big_tables.main,
        "profile": profile_train.main,
        "movielens": movielens.main,
        "ml-seq": ml_seq.main,
        "planted": planted_interests.main,
        "fg": fg_bench.main,
        "serve": serve_bench.main,
    }
    return run[args.benchmark](args)


if __name__ == "__main__":
    sys.exit(main())
