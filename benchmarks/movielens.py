"""``python -m benchmarks movielens``: DSSM / MIND / DAT on MovieLens 100K vs most-popular.

Interactions with rating >= 4 are positives. Each user's last positive (by timestamp; ties by
item id) is held out for evaluation when the user has at least two (leave-last-out), the rest
are training data. Every row carries the user's previous positives (``hist_item_ids``, at most
``HISTORY`` items, strictly earlier in time), so the user tower sees the user's taste.

The benchmark writes the data as parquet (``train.parquet``, ``eval.parquet``, ``items.parquet``)
and a config, trains through ``python -m recforge train``, then runs ``python -m recforge
evaluate-retrieval --exclude_train`` (every item of the catalogue is a candidate; items of the
user's training interactions are excluded) and prints recall@K and hit-rate@K of the model and
of recommending the most popular items.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "ml-100k"
HISTORY = 20
MIN_RATING = 4

CONFIG = """
train_input_path: "{data}/train.parquet"
eval_input_path: "{data}/eval.parquet"
model_dir: "{model_dir}"
train_config {{
    sparse_optimizer {{ adagrad_optimizer {{ lr: 0.05 }} constant_learning_rate {{}} }}
    dense_optimizer {{ adam_optimizer {{ lr: 0.002 }} constant_learning_rate {{}} }}
    num_epochs: {epochs}
}}
data_config {{
    fg_mode: FG_DAG
    batch_size: {batch_size}
    eval_batch_size: {batch_size}
    dataset_type: ParquetDataset
    label_fields: "label"
    num_workers: 1
    shuffle: true
    seed: {seed}
    negative_sampler {{
        input_path: "{data}/items.parquet"
        num_sample: 256
        attr_fields: ["item_id", "genres", "release_year"]
        item_id_field: "item_id"
        popularity_exponent: 0.5
    }}
}}
feature_configs {{ id_feature {{ feature_name: "user_id" num_buckets: 944 embedding_dim: 16 }} }}
feature_configs {{ id_feature {{ feature_name: "age" num_buckets: 8 embedding_dim: 4 }} }}
feature_configs {{ id_feature {{ feature_name: "gender" hash_bucket_size: 4 embedding_dim: 4 }} }}
feature_configs {{
    id_feature {{ feature_name: "occupation" hash_bucket_size: 64 embedding_dim: 4 }}
}}
{history_feature}
feature_configs {{
    id_feature {{ feature_name: "item_id" num_buckets: 1683 embedding_dim: 32
                  embedding_name: "item_id_emb" }}
}}
feature_configs {{
    id_feature {{ feature_name: "genres" hash_bucket_size: 64 embedding_dim: 8 separator: " "
                  pooling: "mean" }}
}}
feature_configs {{
    id_feature {{ feature_name: "release_year" hash_bucket_size: 128 embedding_dim: 4 }}
}}
model_config {{
{model_body}
    metrics {{ recall_at_k {{ top_k: 10 }} }}
}}
"""

# DSSM / DSSMV2: the history is one mean-pooled feature of the user tower
TWO_TOWER_HISTORY = """feature_configs {{
    id_feature {{ feature_name: "hist_item_ids" num_buckets: 1683 embedding_dim: 32
                  embedding_name: "item_id_emb" pooling: "mean" }}
}}"""
TWO_TOWER_MODEL = """    feature_groups {{
        group_name: "user"
        feature_names: ["user_id", "age", "gender", "occupation", "hist_item_ids"]
    }}
    feature_groups {{ group_name: "item" feature_names: ["item_id", "genres", "release_year"] }}
    {model} {{
        user_tower {{ input: "user" mlp {{ hidden_units: [128] }} }}
        item_tower {{ input: "item" mlp {{ hidden_units: [128] }} }}
        output_dim: 64
        similarity: COSINE
        temperature: 0.1
        in_batch_negative: true
    }}"""
# MIND: the history is a sequence routed to up to 4 interests
MIND_HISTORY = """feature_configs {{
    sequence_id_feature {{ feature_name: "hist_item_ids" num_buckets: 1683 embedding_dim: 32
                           sequence_length: {history} embedding_name: "item_id_emb" }}
}}"""
MIND_MODEL = """    feature_groups {{
        group_name: "user" feature_names: ["user_id", "age", "gender", "occupation"]
    }}
    feature_groups {{ group_name: "item" feature_names: ["item_id", "genres", "release_year"] }}
    feature_groups {{
        group_name: "hist" feature_names: ["hist_item_ids"] group_type: SEQUENCE
    }}
    mind {{
        user_tower {{
            input: "user"
            history_input: "hist"
            user_mlp {{ hidden_units: [64, 32] }}
            capsule_config {{
                max_k: 4 max_seq_len: {history} high_dim: 64 num_iters: 3 squash_pow: 0.2
            }}
            concat_mlp {{ hidden_units: [128] }}
        }}
        item_tower {{ input: "item" mlp {{ hidden_units: [128] }} }}
        output_dim: 64
        similarity: COSINE
        simi_pow: 20
        temperature: 0.1
        in_batch_negative: true
    }}"""
# DAT: DSSM's towers, each also reading its augmented vector (an id embedding of its own,
# output_dim wide) that the adaptive-mimic losses pull towards the other tower's output
DAT_FEATURES = """feature_configs {{
    id_feature {{ feature_name: "user_aug" expression: "user:user_id" num_buckets: 944
                  embedding_dim: {dim} }}
}}
feature_configs {{
    id_feature {{ feature_name: "item_aug" expression: "item:item_id" num_buckets: 1683
                  embedding_dim: {dim} }}
}}"""
DAT_MODEL = """    feature_groups {{
        group_name: "user"
        feature_names: ["user_id", "age", "gender", "occupation", "hist_item_ids"]
    }}
    feature_groups {{ group_name: "item" feature_names: ["item_id", "genres", "release_year"] }}
    feature_groups {{ group_name: "user_augment" feature_names: ["user_aug"] }}
    feature_groups {{ group_name: "item_augment" feature_names: ["item_aug"] }}
    dat {{
        user_tower {{ input: "user" augment_input: "user_augment" mlp {{ hidden_units: [128] }} }}
        item_tower {{ input: "item" augment_input: "item_augment" mlp {{ hidden_units: [128] }} }}
        output_dim: {dim}
        similarity: COSINE
        temperature: 0.1
        in_batch_negative: true
        amm_u_weight: {amm_u}
        amm_i_weight: {amm_i}
    }}"""
MODELS = ("dssm", "dssm_v2", "mind", "dat")


def _read_atomic(path: Path) -> pa.Table:
    """A RecBole ``.inter`` / ``.user`` / ``.item`` file (tab separated, ``name:type`` header)."""
    options = pa_csv.ParseOptions(delimiter="\t", quote_char=False)
    convert = pa_csv.ConvertOptions(strings_can_be_null=False)
    table = pa_csv.read_csv(path, parse_options=options, convert_options=convert)
    return table.rename_columns([c.split(":")[0] for c in table.column_names])


def prepare(data_dir: Path, out_dir: Path, min_rating: int = MIN_RATING) -> dict[str, int]:
    """Writes ``train.parquet``, ``eval.parquet`` and ``items.parquet`` to ``out_dir``.

    Returns:
        Row counts: ``train``, ``eval`` (users evaluated), ``items``.

    Raises:
        FileNotFoundError: an ML-100K file is missing (the message names it).

    """
    for name in ("ml-100k.inter", "ml-100k.user", "ml-100k.item"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"{data_dir / name} not found (MovieLens 100K, see README)")
    inter = _read_atomic(data_dir / "ml-100k.inter")
    inter = inter.filter(pc.greater_equal(inter["rating"], min_rating))
    users = inter["user_id"].to_numpy().astype(np.int64)
    items = inter["item_id"].to_numpy().astype(np.int64)
    times = inter["timestamp"].to_numpy().astype(np.int64)
    order = np.lexsort((items, times, users))
    users, items = users[order], items[order]
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    ends = np.r_[starts[1:], users.size]
    history = []
    is_eval = np.zeros(users.size, dtype=bool)
    for start, end in zip(starts, ends):
        for i in range(start, end):
            history.append(items[max(start, i - HISTORY) : i].tolist())
        if end - start >= 2:
            is_eval[end - 1] = True

    user_table = _read_atomic(data_dir / "ml-100k.user")
    user_ids = user_table["user_id"].to_numpy().astype(np.int64)
    position = np.full(user_ids.max() + 1, -1)
    position[user_ids] = np.arange(user_ids.size)
    age = user_table["age"].to_numpy().astype(np.int64)
    age_bucket = np.digitize(age, [18, 25, 35, 45, 50, 56])
    item_table = _read_atomic(data_dir / "ml-100k.item")
    item_ids = item_table["item_id"].to_numpy().astype(np.int64)
    item_pos = np.full(item_ids.max() + 1, -1)
    item_pos[item_ids] = np.arange(item_ids.size)
    genres = item_table["class"].cast(pa.string())
    year = item_table["release_year"].cast(pa.string())

    def rows(mask: np.ndarray) -> pa.Table:
        u, i = users[mask], items[mask]
        return pa.table(
            {
                "user_id": u,
                "age": age_bucket[position[u]],
                "gender": user_table["gender"].take(pa.array(position[u])),
                "occupation": user_table["occupation"].take(pa.array(position[u])),
                "hist_item_ids": pa.array(
                    [history[k] for k in np.flatnonzero(mask)], pa.list_(pa.int64())
                ),
                "item_id": i,
                "genres": genres.take(pa.array(item_pos[i])),
                "release_year": year.take(pa.array(item_pos[i])),
                "label": np.ones(u.size, dtype=np.int64),
            }
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    train_mask = ~is_eval
    rng = np.random.default_rng(0)
    train = rows(train_mask)
    train = train.take(pa.array(rng.permutation(train.num_rows)))
    pq.write_table(train, out_dir / "train.parquet")
    pq.write_table(rows(is_eval), out_dir / "eval.parquet")
    counts = np.bincount(items[train_mask], minlength=item_ids.max() + 1)[item_ids]
    pq.write_table(
        pa.table(
            {
                "item_id": item_ids,
                "genres": genres,
                "release_year": year,
                "weight": (counts + 1).astype(np.float64),
            }
        ),
        out_dir / "items.parquet",
    )
    return {"train": train.num_rows, "eval": int(is_eval.sum()), "items": int(item_ids.size)}


def write_config(
    out_dir: Path,
    model_dir: Path,
    model: str = "dssm",
    epochs: int = 8,
    seed: int = 2026,
    batch_size: int = 256,
    amm_weights: tuple[float, float] = (0.5, 0.5),
    output_dim: int = 64,
) -> Path:
    """Writes the benchmark's pipeline config (``model``: one of :data:`MODELS`).

    ``amm_weights`` (``amm_u_weight``, ``amm_i_weight``) and ``output_dim`` apply to DAT only.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model '{model}' (known: {', '.join(MODELS)})")
    path = out_dir / f"{model}_ml100k.config"
    if model == "mind":
        history = MIND_HISTORY.format(history=HISTORY)
        body = MIND_MODEL.format(history=HISTORY)
    elif model == "dat":
        history = TWO_TOWER_HISTORY.format() + "\n" + DAT_FEATURES.format(dim=output_dim)
        amm_u, amm_i = amm_weights
        body = DAT_MODEL.format(dim=output_dim, amm_u=amm_u, amm_i=amm_i)
    else:
        history, body = TWO_TOWER_HISTORY.format(), TWO_TOWER_MODEL.format(model=model)
    text = CONFIG.format(
        history_feature=history,
        model_body=body,
        data=out_dir,
        model_dir=model_dir,
        epochs=epochs,
        seed=seed,
        batch_size=batch_size,
    )
    path.write_text(text)
    return path


def _recforge(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "recforge", *args], cwd=cwd, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"recforge {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc


def run(
    work: Path,
    model: str = "dssm",
    epochs: int = 8,
    seed: int = 2026,
    data_dir: Path = DATA_DIR,
    batch_size: int = 256,
    amm_weights: tuple[float, float] = (0.5, 0.5),
    output_dim: int = 64,
) -> dict:
    """Prepares the data, trains and evaluates; returns the retrieval metrics and timings."""
    data = work / "data"
    counts = prepare(data_dir, data)
    model_dir = work / f"{model}_model"
    config = write_config(data, model_dir, model, epochs, seed, batch_size, amm_weights, output_dim)
    start = time.perf_counter()
    _recforge("train", "--config", str(config), cwd=work)
    train_s = time.perf_counter() - start
    _recforge(
        "evaluate-retrieval",
        "--config",
        str(model_dir / "pipeline.config"),
        "--exclude_train",
        cwd=work,
    )
    with open(model_dir / "retrieval_result.json") as f:
        result = json.load(f)
    return {**result, "train_rows": counts["train"], "train_s": train_s, "model": model}


def table(results: list[dict]) -> str:
    """The markdown table of a list of :func:`run` results."""
    lines = [
        "| model | seed | recall@10 | recall@50 | recall@100 | hit-rate@10 | hit-rate@50 |"
        " most-popular recall@10 | most-popular recall@50 | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['recall@10']:.4f} | {r['recall@50']:.4f} |"
            f" {r['recall@100']:.4f} | {r['hit_rate@10']:.4f} | {r['hit_rate@50']:.4f} |"
            f" {r['popularity_recall@10']:.4f} | {r['popularity_recall@50']:.4f} |"
            f" {r['train_s']:.0f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``movielens`` subcommand's options."""
    parser.add_argument(
        "--models", default="dssm,dssm_v2", help="comma-separated: dssm,dssm_v2,mind,dat"
    )
    parser.add_argument(
        "--amm_weights",
        default="0.5,0.5",
        help="DAT's amm_u_weight,amm_i_weight (TorchEasyRec's defaults: 0.5,0.5)",
    )
    parser.add_argument(
        "--dat_output_dim", type=int, default=64, help="DAT's output_dim (its augment width)"
    )
    parser.add_argument("--epochs", type=int, default=8, help="training epochs")
    parser.add_argument("--batch_size", type=int, default=256, help="positives per batch")
    parser.add_argument("--seeds", default="2026", help="comma-separated data_config.seed values")
    parser.add_argument("--work_dir", default=None, help="where data and models go (default: tmp)")


def main(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints its table."""
    if not DATA_DIR.is_dir():
        print(f"{DATA_DIR} not found (MovieLens 100K; see ../shared/data/README.md)")
        return 1
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ml100k_"))
    results = []
    amm_u, amm_i = (float(w) for w in args.amm_weights.split(","))
    for model in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            result = run(
                work / f"{model}_{seed}",
                model.strip(),
                args.epochs,
                seed,
                DATA_DIR,
                args.batch_size,
                (amm_u, amm_i),
                args.dat_output_dim,
            )
            results.append({**result, "seed": seed})
            print(json.dumps({k: v for k, v in results[-1].items() if "@" in k or k == "model"}))
    text = table(results)
    print(text)
    out = REPO_ROOT / "benchmarks" / "results"
    os.makedirs(out, exist_ok=True)
    (out / "movielens.md").write_text(text + "\n")
    return 0


def _main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.movielens")
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_main())
