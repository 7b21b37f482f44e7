"""big-tables: the same DeepFM with its largest tables in RAM and in files (issue 20).

Data (``generate``): criteo-synth's generator (``benchmarks/criteo_synth.py``: 26 Zipf id
columns, 13 dense, planted label) with the vocabularies of its ``--big_tables`` largest id
columns raised to ``--rows_per_table`` each, so that those tables hold most of the model, as
the five 40M-row tables of TorchEasyRec's ``deepfm_criteo.config`` do. Ids stay Zipf
(exponent 1.1): each step reads a few hot rows and many cold ones.

Benchmark (``python -m benchmarks big-tables``): for every size, ``recforge train`` of
``benchmarks/configs/criteo_synth_deepfm.config`` on that data, once with the tables in RAM
and once with ``train_config.embedding_file_dir`` (memory-mapped files under ``model_dir``),
interleaved and alternating which goes first. Reports train samples/s (epochs 2..N), test AUC,
the peak RSS split into anonymous memory and file-mapped pages (``RssAnon`` / ``RssFile`` of
``/proc/PID/status``: the page cache may drop the latter under memory pressure, the former it
cannot), and the wall time of the whole run (table creation and evaluation included).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import criteo_synth
from benchmarks.harness import (
    BENCH_DIR,
    Results,
    Run,
    add_quiet_arguments,
    apply_child_env,
    auc_text,
    fmt,
    measured,
    median_sps,
    run_recforge,
)

VARIANTS = {"memory": "tables in RAM", "files": "file-backed tables (embedding_file_dir)"}
RESULTS_FILE = BENCH_DIR / "results" / "big_tables.md"


def big_columns(big_tables: int, seed: int = criteo_synth.SEED) -> list[int]:
    """Indices (0-based) of the ``big_tables`` id columns with the largest vocabularies."""
    vocabs = criteo_synth.vocab_sizes(seed)
    return sorted(int(j) for j in np.argsort(vocabs)[::-1][:big_tables])


def vocabs_for(rows_per_table: int, big_tables: int, seed: int = criteo_synth.SEED) -> list[int]:
    """criteo-synth's vocabulary sizes with the ``big_tables`` largest set to ``rows_per_table``."""
    vocabs = criteo_synth.vocab_sizes(seed)
    for j in big_columns(big_tables, seed):
        vocabs[j] = max(vocabs[j], rows_per_table)
    return vocabs


def generate(
    rows_per_table: int, big_tables: int, train_rows: int, test_rows: int, seed: int
) -> Path:
    """Writes ``benchmarks/data/big_tables_<rows>x<n>/`` (skipped when ``meta.json`` matches)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = BENCH_DIR / "data" / f"big_tables_{rows_per_table}x{big_tables}"
    vocabs = vocabs_for(rows_per_table, big_tables, seed)
    meta = {"seed": seed, "train_rows": train_rows, "test_rows": test_rows, "vocab_sizes": vocabs}
    meta_file = out_dir / "meta.json"
    if meta_file.exists() and json.loads(meta_file.read_text()) == meta:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    effects = criteo_synth._effects(seed, vocabs)
    columns, _ = criteo_synth._columns(seed, train_rows, 0, vocabs, effects)
    pq.write_table(pa.table(columns), out_dir / "train_0.parquet", row_group_size=65536)
    columns, _ = criteo_synth._columns(seed, test_rows, 1000, vocabs, effects)
    pq.write_table(pa.table(columns), out_dir / "test_0.parquet", row_group_size=65536)
    meta_file.write_text(json.dumps(meta, indent=1))
    return out_dir


def edits_for(data: Path, vocabs: list[int], big: list[int], epochs: int, files: bool) -> dict:
    """``--edit_config_json`` of one run: the data, the bigger tables, file-backed or not."""
    edits: dict = {
        "train_input_path": str(data / "train_0.parquet"),
        "eval_input_path": str(data / "test_0.parquet"),
        "train_config.num_epochs": epochs,
    }
    for j in big:
        edits[f"feature_configs[feature_name=C{j + 1}].id_feature.num_buckets"] = vocabs[j]
    if files:
        edits["train_config.embedding_file_dir"] = "emb_files"
    return edits


HEADER = (
    "| rows per big table | tables | train samples/s (median, epochs 2..N) | test AUC "
    "| peak RssAnon MB | peak RssFile MB | peak RSS MB | wall s (whole run) |\n"
    "|---:|---|---:|---:|---:|---:|---:|---:|"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``big-tables`` subcommand's options."""
    parser.add_argument(
        "--rows_per_table",
        default="4000000,16000000",
        help="comma-separated sizes of the big tables (rows each), one measurement per size",
    )
    parser.add_argument("--big_tables", type=int, default=5, help="how many tables are big")
    parser.add_argument("--train_rows", type=int, default=300_000, help="training rows")
    parser.add_argument("--test_rows", type=int, default=50_000, help="test rows")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (>= 2)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant and size")
    parser.add_argument(
        "--variants", default="memory,files", help=f"comma-separated, of {sorted(VARIANTS)}"
    )
    parser.add_argument("--seed0", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS_FILE), help="report file")
    add_quiet_arguments(parser)


def table_row(rows: int, variant: str, runs: list[Run]) -> str:
    """One markdown row: the median rate and the largest memory of the runs."""
    anon = [r.anon_mb for r in runs if r.anon_mb]
    mapped = [r.file_mb for r in runs if r.file_mb]
    cells = [
        f"{rows:,}",
        VARIANTS[variant],
        fmt(median_sps(runs)),
        auc_text(runs),
        fmt(max(anon)) if anon else "n/a",
        fmt(max(mapped)) if mapped else "n/a",
        fmt(max(r.rss_mb for r in runs)),
        fmt(max(r.wall_s for r in runs)),
    ]
    return "| " + " | ".join(cells) + " |"


def main(args: argparse.Namespace) -> int:
    """Generates the data sets, runs the variants interleaved, prints and writes the table."""
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (epoch 1 is not timed)")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    sizes = [int(s) for s in args.rows_per_table.split(",") if s.strip()]
    seed = criteo_synth.SEED
    big = big_columns(args.big_tables, seed)
    apply_child_env(args)
    results = Results(args.max_others)
    with tempfile.TemporaryDirectory(prefix="recforge-big-tables-") as tmp:
        for rows in sizes:
            print(f"generating data for {rows:,} rows per table ...", file=sys.stderr, flush=True)
            data = generate(rows, args.big_tables, args.train_rows, args.test_rows, seed)
            vocabs = vocabs_for(rows, args.big_tables, seed)
            for i in range(args.repeats):
                for variant in variants if i % 2 == 0 else variants[::-1]:
                    edits = edits_for(data, vocabs, big, args.epochs, variant == "files")
                    name, run_seed = f"{variant} {rows:,}", args.seed0 + i
                    work = Path(tmp) / f"{rows}_{variant}_{run_seed}"
                    kept = measured(
                        lambda w, e=edits, n=name, s=run_seed: run_recforge(
                            n, criteo_synth.CONFIG, s, e, w
                        ),
                        work,
                        args.max_others,
                        args.retries,
                        args.wait_s,
                    )
                    # each model_dir holds a checkpoint as large as the tables: free the disk
                    shutil.rmtree(work, ignore_errors=True)
                    results.add(f"{rows}:{variant}", VARIANTS[variant], kept)
    table = [HEADER]
    for key, runs in results.groups.items():
        rows_text, variant = key.split(":")
        table.append(table_row(int(rows_text), variant, runs))
    notes = [
        "",
        f"DeepFM of `{criteo_synth.CONFIG}` (emb 16, wide 4, batch 4096, Adagrad) with "
        f"{args.big_tables} id columns ({', '.join(f'C{j + 1}' for j in big)}) raised to the "
        f"given rows; Zipf ids; {args.train_rows:,} training rows, {args.epochs} epochs; "
        "variants interleaved.",
    ]
    return results.write_report("big-tables (issue 20)", notes, table, args.out)
