"""A seeded retrieval demo: users with latent preferences over item clusters.

Every item belongs to one of ``num_clusters`` clusters (its ``cate``) and has a popularity
(Zipf-like over the corpus). Every user prefers two clusters: each interaction picks one of
them with probability ``1 - noise`` (else any cluster), then an item of that cluster by
popularity. A user's ``user_segment`` is its first favourite cluster 70% of the time (else
random), a weak hint for a model. The last interaction of each user (by ``timestamp``) is
held out for evaluation (leave-last-out), the rest is training data.

Files written to ``output_dir``:

* ``train.parquet`` / ``eval.parquet``: ``user_id, user_segment, item_id, cate,
  prev_item_id, prev_cate, hist_item_ids, timestamp, label`` (``prev_*``: the user's
  previous interaction, null for its first; ``hist_item_ids``: its up to ``HISTORY``
  previous items, oldest first, e.g. for MIND's interests; ``label`` is 1: every row is a
  positive interaction);
* ``items.parquet``: ``item_id, cate, weight`` (``weight``: training interactions + 1), the
  item table of ``data_config.negative_sampler`` and of ``recforge evaluate-retrieval``.

A model that learns each user's clusters finds the held-out item far more often than
recommending the most popular items.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: the most previous items in ``hist_item_ids``
HISTORY = 20


def generate_retrieval_demo_data(
    output_dir: str,
    num_users: int = 2000,
    num_items: int = 2000,
    num_clusters: int = 50,
    interactions_per_user: int = 16,
    noise: float = 0.1,
    seed: int = 2026,
) -> dict[str, str]:
    """Writes the retrieval demo data set (see the module docstring).

    Args:
        output_dir: directory to write to (created).
        num_users: users (each gets ``interactions_per_user`` +- 50% interactions, >= 3).
        num_items: items, spread evenly over the clusters.
        num_clusters: item clusters (latent topics).
        interactions_per_user: mean interactions per user.
        noise: share of interactions outside the user's two favourite clusters.
        seed: random seed (same seed, same files).

    Returns:
        ``{"train": path, "eval": path, "items": path}``.

    """
    rng = np.random.default_rng(seed)
    os.makedirs(output_dir, exist_ok=True)
    item_ids = np.arange(num_items, dtype=np.int64)
    cluster = rng.permutation(np.arange(num_items) % num_clusters)
    popularity = 1.0 / (rng.permutation(num_items) + 10.0) ** 0.5
    members = [np.flatnonzero(cluster == c) for c in range(num_clusters)]
    in_cluster_p = [popularity[m] / popularity[m].sum() for m in members]

    favourites = np.stack(
        [rng.choice(num_clusters, 2, replace=False) for _ in range(num_users)]
    ).astype(np.int64)
    segment = np.where(
        rng.random(num_users) < 0.7, favourites[:, 0], rng.integers(0, num_clusters, num_users)
    )
    low, high = max(3, interactions_per_user // 2), max(4, interactions_per_user * 3 // 2)
    counts = rng.integers(low, high + 1, num_users)
    users = np.repeat(np.arange(num_users, dtype=np.int64), counts)
    n = users.size
    pick_fav = rng.random(n) >= noise
    which = rng.integers(0, 2, n)
    chosen = np.where(pick_fav, favourites[users, which], rng.integers(0, num_clusters, n))
    items = np.empty(n, dtype=np.int64)
    for c in range(num_clusters):
        rows = np.flatnonzero(chosen == c)
        items[rows] = rng.choice(members[c], rows.size, p=in_cluster_p[c])
    timestamp = np.arange(n, dtype=np.int64)  # per user, rows are already in time order
    last = np.r_[np.flatnonzero(np.diff(users)), n - 1]
    first = np.r_[0, last[:-1] + 1]
    prev_item = np.r_[-1, items[:-1]]
    prev_item[first] = -1  # a user's first interaction has no previous item (null)
    is_eval = np.zeros(n, dtype=bool)
    is_eval[last] = True
    start_of = np.repeat(first, last - first + 1)  # each row's user's first row
    history = [items[max(start_of[i], i - HISTORY) : i] for i in range(n)]
    order = rng.permutation(np.flatnonzero(~is_eval))  # training rows shuffled

    def table(rows: np.ndarray) -> pa.Table:
        return pa.table(
            {
                "user_id": users[rows],
                "user_segment": segment[users[rows]].astype(np.int64),
                "item_id": item_ids[items[rows]],
                "cate": cluster[items[rows]].astype(np.int64),
                "prev_item_id": pa.array(prev_item[rows], mask=prev_item[rows] < 0),
                "prev_cate": pa.array(
                    cluster[np.maximum(prev_item[rows], 0)].astype(np.int64),
                    mask=prev_item[rows] < 0,
                ),
                "hist_item_ids": pa.array(
                    [item_ids[history[i]] for i in rows], pa.list_(pa.int64())
                ),
                "timestamp": timestamp[rows],
                "label": np.ones(rows.size, dtype=np.int64),
            }
        )

    paths = {
        "train": os.path.join(output_dir, "train.parquet"),
        "eval": os.path.join(output_dir, "eval.parquet"),
        "items": os.path.join(output_dir, "items.parquet"),
    }
    pq.write_table(table(order), paths["train"])
    pq.write_table(table(np.flatnonzero(is_eval)), paths["eval"])
    train_counts = np.bincount(items[~is_eval], minlength=num_items)
    pq.write_table(
        pa.table(
            {
                "item_id": item_ids,
                "cate": cluster.astype(np.int64),
                "weight": (train_counts + 1).astype(np.float64),
            }
        ),
        paths["items"],
    )
    return paths
