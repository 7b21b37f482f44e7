"""Feature generation throughput: does computing features from raw columns limit training?

``python -m benchmarks fg [--config C] [--rows N] [--steps S]``:

1. writes ``recforge mock-data`` for the config twice (cached under ``benchmarks/data/fg/``):
   raw input columns (``FG_DAG``: features computed from the ``expression`` columns) and FG
   output (``FG_NONE``: columns already encoded, named by ``feature_name``);
2. per input kind, reads every batch once in this process with one torch thread, as a
   DataLoader worker runs: reader only, then reader + parser (= feature generation);
3. builds the model as ``recforge train`` does and times train steps on preloaded batches
   (forward, backward, optimizers) with torch's default threads.

The target of issue 14: feature generation never limits training, i.e. the FG_DAG parser's
rows/s in one thread is at least 2x the training samples/s of the same config, both measured
in this run. The report goes to stdout and ``benchmarks/results/fg.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from benchmarks.profile_train import parse_rate, train_step_rate

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT.parent / "shared/tzrec-configs/examples/multi_tower_din_taobao.config"
DATA_ROOT = REPO_ROOT / "benchmarks" / "data" / "fg"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "fg.md"
MODES = ("FG_DAG", "FG_NONE")
#: the speed-up over training that FG must reach (issue 14)
TARGET_RATIO = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``fg`` subcommand's options."""
    parser.add_argument(
        "--config",
        default=str(DEFAULT_CONFIG),
        help="pipeline config with raw-input features (default: TorchEasyRec's "
        "multi_tower_din_taobao example from ../shared)",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="mock rows per input kind")
    parser.add_argument("--files", type=int, default=4, help="parquet files per input kind")
    parser.add_argument("--steps", type=int, default=20, help="timed train steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (best is kept)")


def _mock_data(config_path: str, mode: str, rows: int, files: int) -> dict:
    """Writes (once) the mock data of ``config_path`` for ``mode``; returns its config edits."""
    from recforge.datasets.mock_data import generate_mock_data

    out = DATA_ROOT / f"{Path(config_path).stem}-{rows}" / mode
    done = out / "edits.json"
    if done.exists():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    result = generate_mock_data(config_path, str(out), num_rows=rows, num_files=files, fg_mode=mode)
    edits = {
        "train_input_path": os.path.join(str(out), "part-*.parquet"),
        "eval_input_path": os.path.join(str(out), "part-*.parquet"),
        "data_config.fg_mode": mode,
        "data_config.dataset_type": "ParquetDataset",
    }
    if result.get("item_table"):
        edits["data_config.negative_sampler.input_path"] = result["item_table"]
    done.write_text(json.dumps(edits))
    return edits


def main(args: argparse.Namespace) -> int:
    """Prints and writes the FG report; returns the exit status."""
    import torch

    from recforge.utils.logging_util import setup_logging
    from recforge.utils.pipeline import build_features, prepare_config, setup_process

    if not os.path.exists(args.config):
        print(f"{args.config} is absent (TorchEasyRec's examples live in ../shared/tzrec-configs)")
        return 2
    setup_logging()
    setup_process()
    default_threads = torch.get_num_threads()
    rates: dict[str, tuple[float, float]] = {}
    config = None
    for mode in MODES:
        edits = _mock_data(args.config, mode, args.rows, args.files)
        config = prepare_config(args.config, edits, model_dir="/tmp/recforge-fg-bench")
        torch.set_num_threads(1)  # as a DataLoader worker runs
        rates[mode] = parse_rate(config, build_features(config))
        print(f"{mode}: reader {rates[mode][0]:,.0f} rows/s; reader + FG {rates[mode][1]:,.0f}")
    torch.set_num_threads(default_threads)
    train_sps, cpu_ms = train_step_rate(config, build_features(config), args.steps, args.rounds)
    print(f"train steps on preloaded batches: {train_sps:,.0f} samples/s")

    fg_rate = rates["FG_DAG"][1]
    ratio = fg_rate / train_sps
    verdict = "met" if ratio >= TARGET_RATIO else "missed"
    lines = [
        "# FG throughput benchmark",
        "",
        f"- command: `python -m benchmarks fg --config {args.config} --rows {args.rows}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"- machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        f"- batch size {config.data_config.batch_size}, {args.rows:,} mock rows per input kind",
        "",
        "| input | reader rows/s (1 thread) | reader + FG rows/s (1 thread) |",
        "|---|---:|---:|",
        *(f"| {m} | {rates[m][0]:,.0f} | {rates[m][1]:,.0f} |" for m in MODES),
        "",
        f"Training on preloaded batches ({default_threads} threads): {train_sps:,.0f} samples/s "
        f"({cpu_ms:.1f} ms CPU per step).",
        "",
        f"FG_DAG reader + FG in one thread / training: **{ratio:.2f}x** (target >= "
        f"{TARGET_RATIO:g}x: {verdict}).",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    print(f"written to {RESULTS}")
    return 0
