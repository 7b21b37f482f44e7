"""criteo-synth: Criteo-shaped synthetic data, and recforge beside its references on it.

Data (``generate``; seeded, deterministic): 500,000 training rows in 4 parquet files and
100,000 test rows, columns ``label``, ``I1..I13`` (float32, ``log1p`` of log-normal counts) and
``C1..C26`` (int64 ids). The 26 vocabulary sizes are log-uniform in 10..1,000,000 (about 2.2M
rows in all); ids follow a Zipf law (exponent 1.1) over a random permutation of the
vocabulary. The label is Bernoulli of a planted logit: per-id effects of 10 of the columns, a
pairwise interaction of two of them, and a linear term of 4 dense columns, with the bias set
for a 25% positive rate (as Criteo's). ``meta.json`` records the vocabulary sizes.

Benchmark (``python -m benchmarks criteo-synth``), interleaved per repeat, each after waiting
for a quiet machine (disturbed runs rerun):

* recforge from the parquet files (``benchmarks/configs/criteo_synth_deepfm.config``: DeepFM,
  emb 16, MLP [256, 128, 64], batch 4096, Adagrad for tables, Adam for the MLP), 1 process;
* the same under ``torchrun --nproc-per-node=2`` (gloo; each rank trains its own batch of
  4096, so each epoch has half the steps);
* ``hand-sparse``: framework-free loop, ``EmbeddingBag(sparse=True)`` + sparse Adagrad;
* ``hand-dense``: same with ``nn.Embedding`` (dense gradients of the 2.2M-row tables every
  step: what a framework with plain ``nn.Embedding`` does);
* ``torchrec``: EBC + DMP (1 rank), fbgemm's fused Adagrad.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

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

NUM_DENSE, NUM_SPARSE = 13, 26
TRAIN_ROWS, TEST_ROWS, TRAIN_FILES = 500_000, 100_000, 4
ZIPF_EXPONENT = 1.1
SEED = 2024  # gives 2,211,339 ids in all, the issue's ~2.2M
ADAGRAD_LR = 0.05
DATA_DIR = BENCH_DIR / "data" / "criteo_synth"
CONFIG = "benchmarks/configs/criteo_synth_deepfm.config"
RESULTS_FILE = BENCH_DIR / "results" / "criteo_synth.md"


def vocab_sizes(seed: int = SEED) -> list[int]:
    """The 26 vocabulary sizes: log-uniform in [10, 1e6]."""
    rng = np.random.default_rng([seed, 0])
    return [int(v) for v in np.exp(rng.uniform(math.log(10), math.log(1e6), NUM_SPARSE))]


def zipf_ids(rng: np.random.Generator, vocab: int, n: int, perm: np.ndarray) -> np.ndarray:
    """``n`` ids in ``[0, vocab)``: Zipf ranks (inverse CDF of a power law) mapped by ``perm``."""
    a = 1.0 - ZIPF_EXPONENT
    u = rng.random(n)
    ranks = np.floor((((vocab + 1.0) ** a - 1.0) * u + 1.0) ** (1.0 / a)) - 1.0
    return perm[np.clip(ranks.astype(np.int64), 0, vocab - 1)]


def _columns(seed: int, rows: int, part: int, vocabs: list[int], effects: dict) -> tuple:
    """``(columns, planted probabilities)`` of ``rows`` rows (``part`` seeds the draws)."""
    import pyarrow as pa

    rng = np.random.default_rng([seed, 1, part])
    ids = [zipf_ids(rng, v, rows, effects["perm"][j]) for j, v in enumerate(vocabs)]
    counts = np.exp(rng.normal(1.0, 1.2, size=(rows, NUM_DENSE)))
    dense = np.log1p(np.floor(counts)).astype(np.float32)
    logit = np.zeros(rows)
    for j, w in effects["id_effects"].items():
        logit += w[ids[j]]
    a, b = effects["pair"]
    logit += effects["pair_w"][(ids[a] % 64) * 64 + ids[b] % 64]
    logit += (dense[:, :4] - 1.2) @ effects["dense_w"]
    prob = 1.0 / (1.0 + np.exp(-(logit + effects["bias"])))
    cols = {"label": pa.array((rng.random(rows) < prob).astype(np.float32))}
    for k in range(NUM_DENSE):
        cols[f"I{k + 1}"] = pa.array(dense[:, k])
    for j in range(NUM_SPARSE):
        cols[f"C{j + 1}"] = pa.array(ids[j])
    return cols, prob


def generate(
    out_dir: Path = DATA_DIR, seed: int = SEED, rows: int = TRAIN_ROWS, test_rows: int = TEST_ROWS
) -> Path:
    """Writes the data set to ``out_dir`` (skipped when ``meta.json`` says it is there)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vocabs = vocab_sizes(seed)
    meta = {
        "seed": seed,
        "train_rows": rows,
        "test_rows": test_rows,
        "vocab_sizes": vocabs,
        "adagrad_lr": ADAGRAD_LR,
        "zipf_exponent": ZIPF_EXPONENT,
    }
    meta_file = out_dir / "meta.json"
    if meta_file.exists() and json.loads(meta_file.read_text()) == meta:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    effects = _effects(seed, vocabs)
    per_file = -(-rows // TRAIN_FILES)
    for f in range(TRAIN_FILES):
        n = min(per_file, rows - f * per_file)
        table = pa.table(_columns(seed, n, f, vocabs, effects)[0])
        pq.write_table(table, out_dir / f"train_{f}.parquet", row_group_size=65536)
    table = pa.table(_columns(seed, test_rows, 1000, vocabs, effects)[0])
    pq.write_table(table, out_dir / "test_0.parquet", row_group_size=65536)
    meta_file.write_text(json.dumps(meta, indent=1))
    return out_dir


def _effects(seed: int, vocabs: list[int]) -> dict:
    """The planted model: id permutations, per-id effects, interaction, dense weights, bias."""
    rng = np.random.default_rng([seed, 2])
    informative = rng.choice(NUM_SPARSE, size=10, replace=False)
    effects = {
        "perm": [rng.permutation(v) for v in vocabs],
        "id_effects": {int(j): rng.normal(0.0, 0.6, vocabs[j]) for j in informative},
        "pair": (int(informative[0]), int(informative[1])),
        "pair_w": rng.normal(0.0, 0.8, 64 * 64),
        "dense_w": rng.normal(0.0, 0.4, 4),
        "bias": 0.0,
    }
    # bias for a 25% positive rate, found by bisection on a sample
    lo, hi = -10.0, 10.0
    probe = _logits(seed, vocabs, effects)
    for _ in range(50):
        mid = (lo + hi) / 2
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(probe + mid)))))
        lo, hi = (mid, hi) if rate < 0.25 else (lo, mid)
    effects["bias"] = (lo + hi) / 2
    return effects


def oracle_auc(seed: int = SEED, test_rows: int = TEST_ROWS) -> float:
    """Test AUC of the planted probabilities themselves: the best any model can reach."""
    from benchmarks.ref_common import auc

    vocabs = vocab_sizes(seed)
    cols, prob = _columns(seed, test_rows, 1000, vocabs, _effects(seed, vocabs))
    return auc(cols["label"].to_numpy(), prob)


def _logits(seed: int, vocabs: list[int], effects: dict) -> np.ndarray:
    """Planted logits (bias 0) of a 20,000-row sample, to set the bias."""
    effects = dict(effects, bias=0.0)
    rng = np.random.default_rng([seed, 3])
    ids = [zipf_ids(rng, v, 20_000, effects["perm"][j]) for j, v in enumerate(vocabs)]
    dense = np.log1p(np.floor(np.exp(rng.normal(1.0, 1.2, size=(20_000, NUM_DENSE)))))
    logit = np.zeros(20_000)
    for j, w in effects["id_effects"].items():
        logit += w[ids[j]]
    a, b = effects["pair"]
    logit += effects["pair_w"][(ids[a] % 64) * 64 + ids[b] % 64]
    return logit + (dense[:, :4] - 1.2) @ effects["dense_w"]


def write_config(path: Path, seed: int = SEED) -> str:
    """The recforge config of the benchmark (``benchmarks/configs/criteo_synth_deepfm.config``)."""
    vocabs = vocab_sizes(seed)
    sparse = [f"C{j + 1}" for j in range(NUM_SPARSE)]
    dense = [f"I{k + 1}" for k in range(NUM_DENSE)]
    names = lambda cols: " ".join(f'feature_names: "{c}"' for c in cols)  # noqa: E731
    lines = [
        "# criteo-synth benchmark: DeepFM, emb 16, MLP [256, 128, 64], batch 4096, Adagrad for",
        "# the tables (fbgemm's fused kernel), fused Adam for the MLP, as the references in",
        "# benchmarks/ref_hand.py and ref_torchrec.py. Written by",
        "# `python -m benchmarks.criteo_synth --write_config` (vocab sizes from the seeded",
        "# generator); data: `python -m benchmarks criteo-synth` generates it first.",
        "# num_workers: 0 reads in the trainer process: on 2 cores a worker process slowed",
        "# training by ~10% (benchmarks/README.md, Fast defaults).",
        'train_input_path: "benchmarks/data/criteo_synth/train_*.parquet"',
        'eval_input_path: "benchmarks/data/criteo_synth/test_0.parquet"',
        'model_dir: "experiments/criteo_synth_deepfm"',
        "train_config {",
        f"  sparse_optimizer {{ adagrad_optimizer {{ lr: {ADAGRAD_LR} }}"
        " constant_learning_rate {} }",
        "  dense_optimizer { adam_optimizer { lr: 0.001 } constant_learning_rate {} }",
        "  num_epochs: 3",
        "}",
        "eval_config {}",
        "data_config { fg_mode: FG_DAG batch_size: 4096 dataset_type: ParquetDataset"
        ' label_fields: "label" num_workers: 0 }',
    ]
    for name, vocab in zip(sparse, vocabs):
        lines.append(
            f'feature_configs {{ id_feature {{ feature_name: "{name}" num_buckets: {vocab}'
            " embedding_dim: 16 } }"
        )
    for name in dense:
        lines.append(f'feature_configs {{ raw_feature {{ feature_name: "{name}" }} }}')
    lines += [
        "model_config {",
        f'  feature_groups {{ group_name: "wide" {names(sparse)} group_type: WIDE }}',
        f'  feature_groups {{ group_name: "fm" {names(sparse)} group_type: DEEP }}',
        f'  feature_groups {{ group_name: "deep" {names(sparse + dense)} group_type: DEEP }}',
        "  deepfm { deep { hidden_units: [256, 128, 64] } }",
        "  metrics { auc { thresholds: 0 } }  # exact (TorchEasyRec bins into 200 by default)",
        "  losses { binary_cross_entropy {} }",
        "}",
    ]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


REFERENCES = {
    "hand-sparse": (
        "hand-written loop, EmbeddingBag(sparse=True) + sparse Adagrad",
        ["ref_hand.py", "criteo", "--sparse"],
    ),
    "hand-dense": (
        "hand-written loop, nn.Embedding dense gradients + Adagrad",
        ["ref_hand.py", "criteo"],
    ),
    "torchrec": ("torchrec EBC + DMP (1 rank), fused Adagrad", ["ref_torchrec.py", "criteo"]),
}
DEFAULT_REFS = "torchrec,hand-sparse,hand-dense"

HEADER = (
    "| implementation | train samples/s (median, epochs 2..N) | test AUC "
    "| peak RSS MB (largest process) | peak PSS MB (process tree) "
    "| recforge (1 process) / this | eval loop from files, samples/s |\n"
    "|---|---:|---:|---:|---:|---:|---:|"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``criteo-synth`` subcommand's options."""
    parser.add_argument("--repeats", type=int, default=1, help="runs per implementation")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (>= 2)")
    parser.add_argument(
        "--dense_epochs", type=int, default=2, help="epochs of the slow hand-dense reference"
    )
    parser.add_argument("--refs", default=DEFAULT_REFS, help="comma-separated, or 'none'")
    parser.add_argument("--nproc", type=int, default=2, help="torchrun processes (0: skip)")
    parser.add_argument(
        "--per_rank_batch",
        action="store_true",
        help="torchrun ranks each train a batch of batch_size (default: batch_size / nproc, so "
        "that the global batch, the steps and hence the AUC compare with 1 process)",
    )
    parser.add_argument("--seed0", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS_FILE), help="report file")
    add_quiet_arguments(parser)


def table_rows(groups: dict[str, list[Run]], labels: dict[str, str]) -> list[str]:
    """Markdown rows with the ratio of the first group (recforge, 1 process) to each."""
    base = median_sps(next(iter(groups.values())))
    rows = []
    for key, runs in groups.items():
        sps = median_sps(runs)
        loops = [r.extra.get("eval_loop_sps") or 0 for r in runs]
        pss = [r.pss_mb for r in runs if r.pss_mb]
        cells = [
            labels[key],
            fmt(sps),
            auc_text(runs),
            fmt(max(r.rss_mb for r in runs)),
            fmt(max(pss)) if pss else "n/a",
            f"{base / sps:.2f}x",
            fmt(middle(loops)) if max(loops) else "",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def main(args: argparse.Namespace) -> int:
    """Generates the data if needed, runs everything, prints and writes the table."""
    if args.epochs < 2 or args.dense_epochs < 2:
        raise SystemExit("--epochs and --dense_epochs must be >= 2 (epoch 1 is not timed)")
    refs = parse_refs(args.refs, list(REFERENCES))
    print(f"generating {DATA_DIR} (once) ...", file=sys.stderr, flush=True)
    generate()
    apply_child_env(args)
    results = Results(args.max_others)
    quiet = (args.max_others, args.retries, args.wait_s)
    edits = {"train_config.num_epochs": args.epochs}
    impls: list[tuple[str, str, Optional[list]]] = [("recforge", "recforge, 1 process", None)]
    if args.nproc > 1:
        torchrun = [sys.executable, "-m", "torch.distributed.run"]
        launcher = [*torchrun, f"--nproc-per-node={args.nproc}", "--master-port=29611", "-m"]
        per_rank = 4096 if args.per_rank_batch else 4096 // args.nproc
        label = f"recforge, torchrun {args.nproc} processes (gloo, batch {per_rank} per rank)"
        impls.append((f"recforge-{args.nproc}", label, launcher))
    with tempfile.TemporaryDirectory(prefix="recforge-criteo-") as tmp:
        for i in range(args.repeats):
            seed = args.seed0 + i
            for key, label, launcher in impls:
                run_edits = dict(edits)
                if launcher and not args.per_rank_batch:
                    run_edits["data_config.batch_size"] = 4096 // args.nproc
                kept = measured(
                    lambda w, key=key, seed=seed, launcher=launcher, e=run_edits: run_recforge(
                        key, CONFIG, seed, e, w, launcher=launcher or ()
                    ),
                    Path(tmp) / key / f"seed{seed}",
                    *quiet,
                )
                results.add(key, f"{label} from parquet, `{CONFIG}`", kept)
            for ref in refs:
                script, *rest = REFERENCES[ref][1]
                epochs = args.dense_epochs if ref == "hand-dense" else args.epochs
                cmd = [sys.executable, BENCH_DIR / script, *rest, "--data", DATA_DIR]
                cmd += ["--epochs", epochs]
                kept = measured(
                    lambda w, ref=ref, cmd=cmd, seed=seed: run_reference(ref, seed, cmd, w),
                    Path(tmp) / ref / f"seed{seed}",
                    *quiet,
                )
                results.add(ref, f"{REFERENCES[ref][0]} (`{ref}`)", kept)
    vocabs = vocab_sizes()
    table_bytes = sum(vocabs) * (16 + 4) * 4
    notes = [
        f"- data: {TRAIN_ROWS:,} train rows, {TEST_ROWS:,} test rows, {sum(vocabs):,} ids "
        f"per table kind; tables (emb 16 + wide 4, fp32) {table_bytes / 2**20:,.0f} MiB, "
        f"Adagrad state as large again",
        f"- test AUC of the planted probabilities (the best any model can reach): "
        f"{oracle_auc():.4f}",
    ]
    table = [HEADER, *table_rows(results.groups, results.labels)]
    return results.write_report("criteo-synth benchmark", notes, table, args.out)


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="criteo-synth data and config")
    cli.add_argument("--write_config", action="store_true", help=f"write {CONFIG}")
    cli.add_argument("--generate", action="store_true", help=f"write the data to {DATA_DIR}")
    cli_args = cli.parse_args()
    if cli_args.write_config:
        write_config(REPO_ROOT / CONFIG)
    if cli_args.generate:
        generate()
