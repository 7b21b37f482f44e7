"""Planted-interest retrieval data: items in clusters, each user interested in a few of them.

Item ``i`` belongs to cluster ``i % num_clusters``. Each user draws ``interests`` distinct
clusters; each of its rows has a history of items from all of the user's clusters (mixed)
and a target item from one of them. A retriever that learns the clusters recalls a user's
targets far above chance.
"""

import os
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def planted_tables(
    num_users: int,
    num_clusters: int,
    items_per_cluster: int,
    interests: tuple[int, int],
    rows_per_user: int,
    hist_len: int,
    seed: int = 0,
) -> tuple[pa.Table, pa.Table]:
    """The training rows and the item table.

    Args:
        num_users: users ``0 .. num_users - 1``.
        num_clusters: item clusters.
        items_per_cluster: items per cluster (``num_clusters * items_per_cluster`` items).
        interests: the fewest and most clusters a user is interested in (inclusive).
        rows_per_user: rows (target items) per user.
        hist_len: behaviours in each row's history.
        seed: the random seed.

    Returns:
        ``(rows, items)``: ``user_id``, ``hist`` (list of item ids), ``item_id``, ``label``;
        and ``item_id``.

    """
    rng = np.random.default_rng(seed)
    num_items = num_clusters * items_per_cluster
    users, hists, targets = [], [], []
    for user in range(num_users):
        count = int(rng.integers(interests[0], interests[1] + 1))
        clusters = rng.choice(num_clusters, count, replace=False)
        for _ in range(rows_per_user):
            hist_clusters = np.resize(rng.permutation(clusters), hist_len)
            hist = hist_clusters + num_clusters * rng.integers(0, items_per_cluster, hist_len)
            target = rng.choice(clusters) + num_clusters * rng.integers(0, items_per_cluster)
            users.append(user)
            hists.append(rng.permutation(hist).tolist())
            targets.append(int(target))
    rows = pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "hist": pa.array(hists, pa.list_(pa.int64())),
            "item_id": pa.array(targets, pa.int64()),
            "label": pa.array(np.ones(len(users), dtype=np.int64)),
        }
    )
    items = pa.table({"item_id": pa.array(np.arange(num_items), pa.int64())})
    return rows, items


def write_planted_run(
    workdir: str,
    model_config: str,
    rows: pa.Table,
    items: pa.Table,
    num_steps: int,
    batch_size: int = 32,
    num_sample: int = 16,
    extra_features: Optional[str] = None,
    user_ids: bool = True,
) -> str:
    """Writes ``train.parquet``, ``items.parquet`` and ``train.config``; returns its path.

    The features: ``user_id``, ``item_id`` and the sequence ``hist`` (sharing the item
    table); ``model_config`` is the body of the model config. Adam on both sides; the
    sampler draws ``num_sample`` negatives from the item table. ``user_ids`` False hashes
    every user id to one bucket: the towers must then read a user from its history.
    """
    num_users = int(rows.column("user_id").to_numpy().max()) + 1
    buckets = f"num_buckets: {num_users}" if user_ids else "hash_bucket_size: 1"
    num_items = items.num_rows
    pq.write_table(rows, os.path.join(workdir, "train.parquet"))
    pq.write_table(items, os.path.join(workdir, "items.parquet"))
    path = os.path.join(workdir, "train.config")
    with open(path, "w") as f:
        f.write(f"""
          train_input_path: "{workdir}/train.parquet" eval_input_path: "{workdir}/train.parquet"
          model_dir: "{workdir}/model"
          train_config {{
            sparse_optimizer {{ adam_optimizer {{ lr: 0.02 }} }}
            dense_optimizer {{ adam_optimizer {{ lr: 0.01 }} }}
            num_steps: {num_steps} use_tensorboard: false
          }}
          data_config {{
            fg_mode: FG_DAG batch_size: {batch_size} label_fields: "label" shuffle: true
            negative_sampler {{ input_path: "{workdir}/items.parquet" num_sample: {num_sample}
                                item_id_field: "item_id" attr_fields: ["item_id"] }}
          }}
          feature_configs {{
            id_feature {{ feature_name: "user_id" {buckets} embedding_dim: 8 }}
          }}
          feature_configs {{
            sequence_id_feature {{ feature_name: "hist" num_buckets: {num_items}
                                   embedding_dim: 8 sequence_length: 8
                                   embedding_name: "item" }}
          }}
          feature_configs {{
            id_feature {{ feature_name: "item_id" num_buckets: {num_items} embedding_dim: 8
                          embedding_name: "item" }}
          }}
          {extra_features or ""}
          model_config {{ {model_config} }}
        """)
    return path


def mind_model(max_k: int, dim: int) -> str:
    """A MIND ``model_config`` body over the planted features: ``max_k`` interests of ``dim``."""
    return f"""
      feature_groups {{ group_name: "user" feature_names: ["user_id"] }}
      feature_groups {{ group_name: "item" feature_names: ["item_id"] }}
      feature_groups {{ group_name: "hist" feature_names: ["hist"] group_type: SEQUENCE }}
      mind {{
        user_tower {{ input: "user" history_input: "hist" user_mlp {{ hidden_units: [4] }}
                      capsule_config {{ max_k: {max_k} max_seq_len: 8 high_dim: 8 num_iters: 3 }}
                      concat_mlp {{ hidden_units: [16] }} }}
        item_tower {{ input: "item" mlp {{ hidden_units: [16] }} }}
        output_dim: {dim} temperature: 0.1
      }}
      metrics {{ recall_at_k {{ top_k: 5 }} }}
    """


def dssm_model(dim: int) -> str:
    """A DSSM ``model_config`` body over the planted features (the history sum-pooled)."""
    return f"""
      feature_groups {{ group_name: "user" feature_names: ["user_id", "hist"] }}
      feature_groups {{ group_name: "item" feature_names: ["item_id"] }}
      dssm {{
        user_tower {{ input: "user" mlp {{ hidden_units: [16] }} }}
        item_tower {{ input: "item" mlp {{ hidden_units: [16] }} }}
        output_dim: {dim} similarity: COSINE temperature: 0.1
      }}
      metrics {{ recall_at_k {{ top_k: 5 }} }}
    """
