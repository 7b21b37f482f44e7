"""``python -m benchmarks ml-seq``: hstu_match on MovieLens 100K sequences vs SASRec (issue 16).

Every interaction of ML-100K (all ratings) is an event; a user's events are ordered by
timestamp, ties by their order in ``ml-100k.inter`` (RecBole's stable sort). Leave-last-out
per user: the last item is the test target, the one before it the validation target, the rest
is training data. This is RecBole's ``LS: valid_and_test`` split with ``order: TO``.

Evaluation is full ranking over all 1,682 items with nothing masked (RecBole's full-sort
evaluation of sequential models masks no history item either): a test user's history is all
its events before the test item (training events and the validation item); HR@10 is the share
of users whose test item is in the top 10, NDCG@10 ``1 / log2(rank + 2)`` of it (0 outside).

Models, each on the same split:
- ``hstu_match`` (``benchmarks/configs/hstu_match_ml100k.config``): a user's training events
  in windows of ``MAX_LEN`` (see :func:`write_hstu_data`) and ``autoregressive_loss``, so every
  event learns to predict the next one (RecBole's SASRec feeds every prefix as a sample and
  trains its last position instead);
- ``dssm`` (``benchmarks/movielens.py``'s DSSM config): one row per training event after the
  user's first, the user tower reading user features and the mean of the previous
  ``DSSM_HISTORY`` items;
- most-popular: items ranked by their training interactions;
- RecBole 1.2.1 SASRec with its defaults (``benchmarks/ref_recbole.py`` in
  ``benchmarks/.venv-recbole``, made by ``benchmarks/setup_recbole.sh``).

Threads: every training subprocess (recforge's and RecBole's) runs with ``OMP_NUM_THREADS=1``
(:func:`one_thread_env`). torch's default of one intra-op thread per core spin-waits at each
op's barrier when the cores are shared with other processes, which made both trainings
several times slower (benchmarks/README.md, "HSTU on ML-100K").

Training samples/s: recforge's is the rows of ``train.parquet`` (windows) times epochs over
the wall time of ``recforge train``, and also per predicted event (one next-item target each);
RecBole's is its (prefix, next item) samples, each one predicted event.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import movielens

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "ml-100k"
HSTU_CONFIG = REPO_ROOT / "benchmarks" / "configs" / "hstu_match_ml100k.config"
RECBOLE_PYTHON = REPO_ROOT / "benchmarks" / ".venv-recbole" / "bin" / "python"
MAX_LEN = 50  # SASRec's default MAX_ITEM_LIST_LENGTH (config: sequence_length, max_seq_len)
DSSM_HISTORY = MAX_LEN
NUM_ITEMS = 1682
TOP_K = 10


@dataclass
class Split:
    """Leave-last-out sequences: per user, its events in time order.

    Attributes:
        users: user ids ``[U]``, ascending.
        items: each user's item ids, oldest first (``train + [valid, test]``).
        times: each user's timestamps, aligned with ``items``.
    """

    users: np.ndarray
    items: list[np.ndarray]
    times: list[np.ndarray]

    def train(self, u: int) -> np.ndarray:
        """User ``u``'s training items (all but the last two)."""
        return self.items[u][:-2]

    def test_target(self) -> np.ndarray:
        """Every user's last item ``[U]``."""
        return np.array([s[-1] for s in self.items], dtype=np.int64)


def load_split(data_dir: Path = DATA_DIR, users: Optional[int] = None) -> Split:
    """Reads ``ml-100k.inter`` into per-user sequences (users with >= 3 events).

    Args:
        data_dir: the folder of ``ml-100k.inter``.
        users: keep only the first ``users`` user ids (a smaller benchmark); None: all.

    Raises:
        FileNotFoundError: ``ml-100k.inter`` is missing.

    """
    path = data_dir / "ml-100k.inter"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (MovieLens 100K, see README)")
    inter = movielens._read_atomic(path)
    user = inter["user_id"].to_numpy().astype(np.int64)
    item = inter["item_id"].to_numpy().astype(np.int64)
    ts = inter["timestamp"].to_numpy().astype(np.int64)
    order = np.lexsort((np.arange(user.size), ts, user))  # ties keep the file's order
    user, item, ts = user[order], item[order], ts[order]
    starts = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    ends = np.r_[starts[1:], user.size]
    keep = [(s, e) for s, e in zip(starts, ends) if e - s >= 3]
    if users is not None:
        keep = keep[:users]
    return Split(
        users=np.array([user[s] for s, _ in keep], dtype=np.int64),
        items=[item[s:e] for s, e in keep],
        times=[ts[s:e] for s, e in keep],
    )


def _joined(values: np.ndarray) -> str:
    return "|".join(map(str, values.tolist()))


def _hstu_table(rows: list[tuple[int, np.ndarray, np.ndarray, int]]) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "uih__video_id": pa.array([_joined(r[1]) for r in rows]),
            "uih__action_timestamp": pa.array([_joined(r[2]) for r in rows]),
            "item_id": pa.array([r[3] for r in rows], pa.int64()),
            "cand__video_id": pa.array([str(r[3]) for r in rows]),
            "label": np.ones(len(rows), dtype=np.int64),
        }
    )


def write_hstu_data(split: Split, out_dir: Path, max_len: int = MAX_LEN) -> dict[str, int]:
    """``train.parquet``, ``valid.parquet``, ``test.parquet`` and ``items.parquet``.

    Columns: ``user_id``, ``uih__video_id`` and ``uih__action_timestamp`` ("|"-joined, oldest
    first, at most ``MAX_LEN``), ``item_id`` (the target) and ``cand__video_id`` (the same id
    as the candidate sequence that the config reads), ``label`` (1). A user's training
    events are cut into windows of ``MAX_LEN`` history events and the next one, each window
    starting at the previous one's target, so that with ``autoregressive_loss`` every training
    event but the user's first is predicted once per epoch, from at most ``MAX_LEN`` events
    before it. A validation / test row's history is the ``MAX_LEN`` events before its target.
    ``max_len`` replaces ``MAX_LEN`` (the config's ``sequence_length`` and ``max_seq_len``
    must then be at least as long).

    Returns:
        ``train_rows`` and ``train_events`` (next-item targets per epoch).

    """
    out_dir.mkdir(parents=True, exist_ok=True)
    train, valid, test = [], [], []
    for user, items, ts in zip(split.users.tolist(), split.items, split.times):
        end = len(items) - 3  # the last training event
        while end >= 1:
            start = max(0, end - max_len)
            train.append((user, items[start:end], ts[start:end], int(items[end])))
            end = start
        for rows, end in ((valid, len(items) - 2), (test, len(items) - 1)):
            start = max(0, end - max_len)
            rows.append((user, items[start:end], ts[start:end], int(items[end])))
    order = np.random.default_rng(0).permutation(len(train))
    pq.write_table(_hstu_table([train[k] for k in order]), out_dir / "train.parquet")
    pq.write_table(_hstu_table(valid), out_dir / "valid.parquet")
    pq.write_table(_hstu_table(test), out_dir / "test.parquet")
    ids = np.arange(1, NUM_ITEMS + 1)
    items = pa.table(
        {"item_id": pa.array(ids, pa.int64()), "cand__video_id": pa.array(ids.astype(str))}
    )
    pq.write_table(items, out_dir / "items.parquet")
    events = sum(len(r[1]) for r in train)
    return {"train_rows": len(train), "train_events": events}


def write_dssm_data(split: Split, out_dir: Path, data_dir: Path = DATA_DIR) -> dict[str, int]:
    """``benchmarks/movielens.py``'s columns on this split: ``train`` / ``eval`` / ``items``.

    A training row per training event after the user's first, its history the previous
    ``DSSM_HISTORY`` items; the eval row of a user is its test item, its history the
    ``DSSM_HISTORY`` items before it (the validation item included).
    """
    users = movielens._read_atomic(data_dir / "ml-100k.user")
    items_table = movielens._read_atomic(data_dir / "ml-100k.item")
    user_pos = {int(u): i for i, u in enumerate(users["user_id"].to_numpy())}
    age = np.digitize(users["age"].to_numpy().astype(np.int64), [18, 25, 35, 45, 50, 56])
    gender = users["gender"].to_pylist()
    occupation = users["occupation"].to_pylist()
    item_ids = items_table["item_id"].to_numpy().astype(np.int64)
    item_pos = {int(i): k for k, i in enumerate(item_ids)}
    genres = items_table["class"].cast(pa.string()).to_pylist()
    year = items_table["release_year"].cast(pa.string()).to_pylist()

    def rows(pairs: list[tuple[int, np.ndarray, int]]) -> pa.Table:
        u = [p[0] for p in pairs]
        i = [p[2] for p in pairs]
        return pa.table(
            {
                "user_id": pa.array(u, pa.int64()),
                "age": pa.array([int(age[user_pos[x]]) for x in u], pa.int64()),
                "gender": pa.array([gender[user_pos[x]] for x in u]),
                "occupation": pa.array([occupation[user_pos[x]] for x in u]),
                "hist_item_ids": pa.array([p[1].tolist() for p in pairs], pa.list_(pa.int64())),
                "item_id": pa.array(i, pa.int64()),
                "genres": pa.array([genres[item_pos[x]] for x in i]),
                "release_year": pa.array([year[item_pos[x]] for x in i]),
                "label": pa.array(np.ones(len(pairs), dtype=np.int64)),
            }
        )

    train, test = [], []
    for user, items in zip(split.users.tolist(), split.items):
        for k in range(1, len(items) - 2):
            train.append((user, items[max(0, k - DSSM_HISTORY) : k], int(items[k])))
        end = len(items) - 1
        test.append((user, items[max(0, end - DSSM_HISTORY) : end], int(items[end])))
    out_dir.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(len(train))
    pq.write_table(rows([train[k] for k in order]), out_dir / "train.parquet")
    pq.write_table(rows(test), out_dir / "eval.parquet")
    counts = np.bincount(
        np.concatenate([split.train(u) for u in range(len(split.items))]),
        minlength=int(item_ids.max()) + 1,
    )[item_ids]
    pq.write_table(
        pa.table(
            {
                "item_id": item_ids,
                "genres": pa.array(genres),
                "release_year": pa.array(year),
                "weight": (counts + 1).astype(np.float64),
            }
        ),
        out_dir / "items.parquet",
    )
    return {"train_rows": len(train)}


def rank_metrics(scores: np.ndarray, targets: np.ndarray, k: int = TOP_K) -> dict[str, float]:
    """HR@k and NDCG@k of one target per row.

    Args:
        scores: ``[U, NUM_ITEMS]``, column ``j`` is item id ``j + 1``.
        targets: item ids ``[U]``.
        k: the cut-off.

    Returns:
        ``hit@k`` and ``ndcg@k``; a tie with the target counts as ranked above it.

    """
    target_scores = scores[np.arange(len(targets)), targets - 1]
    rank = (scores >= target_scores[:, None]).sum(axis=1) - 1
    hit = rank < k
    ndcg = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
    return {f"hit@{k}": float(hit.mean()), f"ndcg@{k}": float(ndcg.mean())}


def most_popular(split: Split) -> dict[str, float]:
    """Items ranked by their training interactions, the same list for every user."""
    counts = np.bincount(
        np.concatenate([split.train(u) for u in range(len(split.items))]),
        minlength=NUM_ITEMS + 1,
    )[1:].astype(np.float64)
    scores = np.broadcast_to(counts, (len(split.items), NUM_ITEMS))
    return rank_metrics(np.asarray(scores), split.test_target())


def one_thread_env() -> dict[str, str]:
    """This process's environment with ``OMP_NUM_THREADS=1`` (see the module docstring)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _recforge(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "recforge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=one_thread_env(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"recforge {' '.join(args)} failed:\n{proc.stderr[-4000:]}")


def _train(config_text: str, work: Path, edits: dict[str, str]) -> tuple[Path, float]:
    """Trains through the CLI; returns the model_dir and the training wall seconds."""
    config = work / "pipeline.config"
    config.write_text(config_text)
    args = ["train", "--config", str(config)]
    if edits:
        args += ["--edit_config_json", json.dumps(edits)]
    start = time.perf_counter()
    _recforge(*args, cwd=work)
    return work / "model", time.perf_counter() - start


def _train_seconds(model_dir: Path, wall_s: float) -> float:
    """The train loop's seconds (``train_stats.json``'s epochs), else the whole command's."""
    path = model_dir / "train_stats.json"
    if path.is_file():
        epochs = json.loads(path.read_text()).get("epochs", [])
        seconds = sum(float(e.get("seconds", 0.0)) for e in epochs)
        if seconds > 0:
            return seconds
    return wall_s


def score_model(model_dir: Path, test_path: Path, items_path: Path) -> np.ndarray:
    """Full-ranking scores ``[U, NUM_ITEMS]`` of a trained match model (no item masked)."""
    import torch

    from recforge.export import restore_model
    from recforge.retrieval import embed_table
    from recforge.utils.layout import checkpoint_or_latest
    from recforge.utils.pipeline import prepare_config

    config = prepare_config(str(model_dir / "pipeline.config"), None, (), None)
    model, _ = restore_model(config, checkpoint_or_latest(config.model_dir, None), None)
    items = pq.read_table(items_path)
    if items.column("item_id").to_pylist() != list(range(1, NUM_ITEMS + 1)):
        raise ValueError(f"{items_path}: item_id must be 1..{NUM_ITEMS} in order")
    item_emb = embed_table(model.tower_module("item"), model.tower_features("item"), items)
    users = pq.read_table(test_path)
    user_emb = embed_table(model.tower_module("user"), model.tower_features("user"), users)
    with torch.no_grad():
        return torch.matmul(user_emb, item_emb.t()).numpy()


def run_hstu(
    split: Split, work: Path, epochs: Optional[int] = None, edits: Optional[dict] = None
) -> dict:
    """Trains ``hstu_match`` (the benchmark config) and evaluates it on the test targets."""
    data = work / "data"
    counts = write_hstu_data(split, data)
    text = (
        HSTU_CONFIG.read_text().replace("{DATA}", str(data)).replace("{MODEL}", str(work / "model"))
    )
    all_edits = dict(edits or {})
    if epochs is not None:
        all_edits["train_config.num_epochs"] = str(epochs)
    model_dir, train_s = _train(text, work, all_edits)
    config_text = (model_dir / "pipeline.config").read_text()
    num_epochs = int(config_text.split("num_epochs:")[1].split()[0])
    scores = score_model(model_dir, data / "test.parquet", data / "items.parquet")
    result = rank_metrics(scores, split.test_target())
    loop_s = _train_seconds(model_dir, train_s)
    return {
        "model": "hstu_match",
        **result,
        "epochs": num_epochs,
        "train_s": train_s,
        "samples_per_s": counts["train_rows"] * num_epochs / loop_s,
        "events_per_s": counts["train_events"] * num_epochs / loop_s,
    }


def run_dssm(
    split: Split,
    work: Path,
    epochs: int = 8,
    batch_size: int = 1024,
    data_dir: Path = DATA_DIR,
    seed: int = 2026,
) -> dict:
    """Trains ``benchmarks/movielens.py``'s DSSM on this split and evaluates it."""
    data = work / "data"
    counts = write_dssm_data(split, data, data_dir)
    config = movielens.write_config(data, work / "model", "dssm", epochs, seed, batch_size)
    start = time.perf_counter()
    _recforge("train", "--config", str(config), cwd=work)
    train_s = time.perf_counter() - start
    loop_s = _train_seconds(work / "model", train_s)
    items = pq.read_table(data / "items.parquet")
    if items.column("item_id").to_pylist() != list(range(1, NUM_ITEMS + 1)):
        raise ValueError("ml-100k.item must list item ids 1..1682 in order")
    scores = score_model(work / "model", data / "eval.parquet", data / "items.parquet")
    result = rank_metrics(scores, split.test_target())
    return {
        "model": "dssm",
        **result,
        "epochs": epochs,
        "train_s": train_s,
        "samples_per_s": counts["train_rows"] * epochs / loop_s,
        "events_per_s": counts["train_rows"] * epochs / loop_s,
    }


def run_recbole(work: Path, epochs: int = 300, data_dir: Path = DATA_DIR) -> dict:
    """Runs ``ref_recbole.py`` in ``benchmarks/.venv-recbole``; its metrics and samples/s."""
    if not RECBOLE_PYTHON.is_file():
        raise FileNotFoundError(f"{RECBOLE_PYTHON} not found: run benchmarks/setup_recbole.sh")
    work.mkdir(parents=True, exist_ok=True)
    out = work / "recbole.json"
    proc = subprocess.run(
        [
            str(RECBOLE_PYTHON),
            str(REPO_ROOT / "benchmarks" / "ref_recbole.py"),
            "--out",
            str(out),
            "--data",
            str(data_dir.parent),
            "--epochs",
            str(epochs),
        ],
        cwd=work,  # RecBole writes log/ and log_tensorboard/ into the working directory
        capture_output=True,
        text=True,
        env=one_thread_env(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ref_recbole.py failed:\n{proc.stderr[-4000:]}")
    ref = json.loads(out.read_text())
    sps = sorted(ref["epoch_sps"])[len(ref["epoch_sps"]) // 2]
    return {
        "model": "SASRec (RecBole 1.2.1)",
        "hit@10": ref["hit@10"],
        "ndcg@10": ref["ndcg@10"],
        "epochs": f"{ref['epochs_run']} (best {ref['best_epoch']})",
        "train_s": ref["train_s"],
        "samples_per_s": sps,
        "events_per_s": sps,
    }


def table(results: list[dict]) -> str:
    """The markdown table of the runs."""
    lines = [
        "| model | HR@10 | NDCG@10 | epochs | train s | train samples/s | next-item targets/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [r["model"], f"{r['hit@10']:.4f}", f"{r['ndcg@10']:.4f}", str(r.get("epochs", "-"))]
        cells.append(f"{r['train_s']:.0f}" if "train_s" in r else "-")
        for key in ("samples_per_s", "events_per_s"):
            cells.append(f"{r[key]:,.0f}" if key in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``ml-seq`` subcommand's options."""
    parser.add_argument(
        "--models",
        default="popular,dssm,hstu,recbole",
        help="comma-separated: popular,dssm,hstu,recbole",
    )
    parser.add_argument("--hstu_epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--dssm_epochs", type=int, default=8)
    parser.add_argument("--recbole_epochs", type=int, default=300, help="RecBole's default 300")
    parser.add_argument("--work_dir", default=None, help="where data and models go (default: tmp)")


def main(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints its table."""
    if not DATA_DIR.is_dir():
        print(f"{DATA_DIR} not found (MovieLens 100K; see ../shared/data/README.md)")
        return 1
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ml_seq_"))
    split = load_split(DATA_DIR)
    print(f"{len(split.items)} users, {sum(len(s) for s in split.items)} events", flush=True)
    results = []
    runs = {
        "popular": lambda: {"model": "most-popular", **most_popular(split)},
        "dssm": lambda: run_dssm(split, work / "dssm", args.dssm_epochs),
        "hstu": lambda: run_hstu(split, work / "hstu", args.hstu_epochs),
        "recbole": lambda: run_recbole(work / "recbole", args.recbole_epochs),
    }
    for name in args.models.split(","):
        results.append(runs[name.strip()]())
        print(json.dumps(results[-1]), flush=True)
    text = table(results)
    print(text)
    out = REPO_ROOT / "benchmarks" / "results"
    os.makedirs(out, exist_ok=True)
    (out / "ml_seq.md").write_text(text + "\n")
    return 0


__all__ = ["Split", "load_split", "most_popular", "rank_metrics", "run_dssm", "run_hstu"]
