"""Frappe: recforge end to end from the CSV files beside its references, interleaved.

Per repeat (seed 1, 2, ...), in child processes from the repository root, in this order:

* for each ``--config``: ``python -m recforge train --config C`` (CSV -> features -> training
  -> test evaluation); then, unless ``--no_infer``, ``recforge_infer.py`` (export + scripted
  inference over the test file in memory, and the eager model on pre-parsed batches);
* each reference of ``--refs`` (default ``hand,hand-fused,hand-fastdrop,torchrec,deepctr``):
  ``hand`` = ``ref_hand.py`` (framework-free loop, preloaded tensors, ``Adam``), ``hand-fused``
  (same with ``Adam(fused=True)``), ``hand-fastdrop`` (fused Adam and recforge's dropout
  kernel: the same kernels as recforge), ``hand-nodropout`` (fused Adam, no dropout),
  ``torchrec`` = ``ref_torchrec.py`` (EBC + DMP, 1 rank), ``deepctr`` = ``ref_deepctr.py`` in
  ``benchmarks/.venv-deepctr`` (DeepCTR-Torch 0.3.0; ``benchmarks/setup_deepctr.sh``),
  ``fuxictr`` = ``ref_fuxictr.py`` in ``benchmarks/.venv-fuxictr`` (FuxiCTR 2.3.10's DeepFM with
  its published Frappe settings: batch norm, embedding regulariser 0.05; made by
  ``benchmarks/setup_fuxictr.sh``). ``fuxictr`` is not in the default list: it is a model-quality
  peer (batch norm and an embedding regulariser: the model of ``examples/deepfm_frappe.config``,
  not of the benchmark config), its virtualenv is large (1.9 GB, mostly ray and pyarrow), and
  it scores the test set after every epoch (five extra passes in its wall time, not in its
  per-epoch samples/s).

Before each run the harness waits for a quiet machine and reruns a disturbed run (see
``harness.measured``). One table: training samples/s (median of epochs 2..N), inference
samples/s, test AUC, peak memory, and the ratio of the first config's recforge numbers to each
row's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import (
    BENCH_DIR,
    REPO_ROOT,
    Results,
    Run,
    add_quiet_arguments,
    apply_child_env,
    auc_text,
    fmt,
    measured,
    median_sps,
    middle,
    parse_refs,
    run_recforge,
    run_reference,
)

DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "frappe"
DATA_FILES = ("frappe_validation.csv", "frappe_test.csv")
DEFAULT_CONFIGS = ("benchmarks/configs/deepfm_frappe_bench.config",)
DEFAULT_REFS = "hand,hand-fused,hand-fastdrop,torchrec,deepctr"
RESULTS_FILE = BENCH_DIR / "results" / "frappe.md"
DEEPCTR_PYTHON = BENCH_DIR / ".venv-deepctr" / "bin" / "python"
# references run by another virtualenv's interpreter, and the script that creates it
VENV_PYTHONS = {
    "deepctr": (DEEPCTR_PYTHON, "setup_deepctr.sh"),
    "fuxictr": (BENCH_DIR / ".venv-fuxictr" / "bin" / "python", "setup_fuxictr.sh"),
}

REFERENCES = {
    "hand": ("hand-written loop, preloaded tensors, Adam", ["ref_hand.py", "frappe"]),
    "hand-fused": (
        "hand-written loop, preloaded tensors, Adam(fused=True)",
        ["ref_hand.py", "frappe", "--fused_adam"],
    ),
    "hand-fastdrop": (
        "hand-written loop, Adam(fused=True), recforge's dropout kernel",
        ["ref_hand.py", "frappe", "--fused_adam", "--recforge_dropout"],
    ),
    "hand-nodropout": (
        "hand-written loop, fused Adam, no dropout (not the benchmark's model)",
        ["ref_hand.py", "frappe", "--fused_adam", "--dropout", "0"],
    ),
    "torchrec": (
        "torchrec EBC + DMP (1 rank), dense kernel + fused Adam",
        ["ref_torchrec.py", "frappe"],
    ),
    "deepctr": ("DeepCTR-Torch 0.3.0", ["ref_deepctr.py"]),
    "fuxictr": (
        "FuxiCTR 2.3.10 DeepFM, batch norm, embedding regulariser 0.05",
        ["ref_fuxictr.py"],
    ),
}


def reference_command(ref: str, epochs: int) -> list:
    """The command line of a reference."""
    script, *args = REFERENCES[ref][1]
    python = VENV_PYTHONS[ref][0] if ref in VENV_PYTHONS else sys.executable
    return [python, BENCH_DIR / script, *args, "--data", DATA_DIR, "--epochs", epochs]


HEADER = (
    "| implementation | train samples/s (median, epochs 2..N) | inference samples/s "
    "| test AUC (mean ± std) | peak RSS MB (largest process) | peak PSS MB (process tree) "
    "| recforge train speed / this | recforge inference / this | eval loop from files, "
    "samples/s | eager inference on parsed batches, samples/s | inference of the export "
    "with `mlp_dtype: bfloat16`, samples/s (test AUC) | recforge bfloat16 inference / this |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def table_rows(groups: dict[str, list[Run]], labels: dict[str, str]) -> list[str]:
    """Markdown rows, one per implementation, with ratios to the first (recforge) group."""
    first = next(iter(groups.values()))
    base_sps = median_sps(first)
    base_infer = middle(r.infer_sps for r in first if r.infer_sps)
    base_bf16 = middle(r.extra["bf16_sps"] for r in first if r.extra.get("bf16_sps"))
    rows = []
    for key, runs in groups.items():
        sps = median_sps(runs)
        inf_value = middle(r.infer_sps for r in runs if r.infer_sps)
        loops = [r.extra.get("eval_loop_sps") or 0 for r in runs]
        eager = [r.extra.get("eager_sps") or 0 for r in runs]
        bf16 = middle(
            (r.extra["bf16_sps"], r.extra["bf16_auc"]) for r in runs if r.extra.get("bf16_sps")
        )
        bf16_cell = f"{fmt(bf16[0])} ({bf16[1]:.4f})" if bf16 else ""
        pss = [r.pss_mb for r in runs if r.pss_mb]
        cells = [
            labels[key],
            fmt(sps),
            fmt(inf_value),
            auc_text(runs),
            fmt(max(r.rss_mb for r in runs)),
            fmt(max(pss)) if pss else "n/a",
            f"{base_sps / sps:.2f}x",
            f"{base_infer / inf_value:.2f}x" if base_infer and inf_value else "n/a",
            fmt(middle(loops)) if max(loops) else "",
            fmt(middle(eager)) if max(eager) else "",
            bf16_cell,
            f"{base_bf16 / inf_value:.2f}x" if base_bf16 and inf_value else "n/a",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``frappe`` subcommand's options."""
    parser.add_argument("--repeats", type=int, default=3, help="runs per implementation")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (>= 2)")
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        help="recforge config relative to the repo root; repeatable (default: "
        + ", ".join(DEFAULT_CONFIGS)
        + ")",
    )
    parser.add_argument(
        "--refs",
        default=DEFAULT_REFS,
        help=f"comma-separated references of {sorted(REFERENCES)}, or 'none'",
    )
    parser.add_argument(
        "--no_infer", action="store_true", help="skip recforge's export + inference timing"
    )
    parser.add_argument("--seed0", type=int, default=1, help="seed of the first repeat")
    parser.add_argument("--out", default=str(RESULTS_FILE), help="report file")
    add_quiet_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Runs the benchmark, prints the table and writes the report."""
    missing = [f for f in DATA_FILES if not (DATA_DIR / f).is_file()]
    if missing:
        raise SystemExit(
            f"frappe benchmark not run: {', '.join(missing)} not found in {DATA_DIR} "
            "(the shared real-data folder ../shared/data next to the repository)"
        )
    if args.repeats < 1 or args.epochs < 2:
        raise SystemExit("--repeats must be >= 1 and --epochs >= 2 (epoch 1 is not timed)")
    refs = parse_refs(args.refs, list(REFERENCES))
    for ref in refs:
        if ref in VENV_PYTHONS and not VENV_PYTHONS[ref][0].exists():
            python, setup = VENV_PYTHONS[ref]
            raise SystemExit(
                f"{python} not found: run `bash benchmarks/{setup}` first, or "
                f"leave {ref} out of --refs"
            )
    configs = args.config or list(DEFAULT_CONFIGS)
    apply_child_env(args)
    results = Results(args.max_others)
    test_file = None if args.no_infer else str(DATA_DIR / "frappe_test.csv")
    quiet = (args.max_others, args.retries, args.wait_s)
    with tempfile.TemporaryDirectory(prefix="recforge-bench-") as tmp:
        for i in range(args.repeats):
            seed = args.seed0 + i
            for c, config in enumerate(configs):
                key = f"recforge:{config}"
                kept = measured(
                    lambda w, key=key, config=config, seed=seed: run_recforge(
                        key, config, seed, {"train_config.num_epochs": args.epochs}, w, test_file
                    ),
                    Path(tmp) / f"c{c}" / f"seed{seed}",
                    *quiet,
                )
                results.add(key, f"recforge (from CSV files) `{config}`", kept)
            for ref in refs:
                cmd = reference_command(ref, args.epochs)
                kept = measured(
                    lambda w, ref=ref, cmd=cmd, seed=seed: run_reference(ref, seed, cmd, w),
                    Path(tmp) / ref / f"seed{seed}",
                    *quiet,
                )
                results.add(ref, f"{REFERENCES[ref][0]} (`{ref}`)", kept)
    table = [HEADER, *table_rows(results.groups, results.labels)]
    return results.write_report("Frappe benchmark (DeepFM and model zoo)", [], table, args.out)
