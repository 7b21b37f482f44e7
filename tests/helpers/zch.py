"""A zch (zero-collision hashing) test set-up: planted users with ids up to 1e12."""

from typing import Optional

import numpy as np
import pyarrow as pa

#: distinct users (fewer than ZCH_SIZE - 1, so every one gets a row of its own)
NUM_USERS = 120
ZCH_SIZE = 200
MAX_ID = 10**12


def zch_config(
    train_path: str = "train.parquet",
    eval_path: str = "train.parquet",
    fg_mode: str = "FG_DAG",
    zch: Optional[str] = None,
    batch_size: int = 64,
) -> str:
    """A wide & deep config whose ``user`` id feature is zero-collision hashed.

    Args:
        train_path: training data.
        eval_path: evaluation data.
        fg_mode: ``FG_DAG`` (ids hashed as strings) or ``FG_NONE`` (raw ids are the hashes).
        zch: the ``zch { ... }`` body (default: ``ZCH_SIZE`` rows, lfu, eviction every step).
        batch_size: rows per batch.

    """
    zch = zch or f"zch_size: {ZCH_SIZE} eviction_interval: 1 lfu {{}}"
    return f"""
train_input_path: "{train_path}"
eval_input_path: "{eval_path}"
model_dir: "model"
train_config {{
  sparse_optimizer {{ adagrad_optimizer {{ lr: 0.1 }} }}
  dense_optimizer {{ adam_optimizer {{ lr: 0.01 }} }}
  num_epochs: 1
}}
data_config {{
  batch_size: {batch_size} dataset_type: ParquetDataset label_fields: "label"
  fg_mode: {fg_mode} num_workers: 0
}}
feature_configs {{ id_feature {{ feature_name: "user" embedding_dim: 8 zch {{ {zch} }} }} }}
feature_configs {{ id_feature {{ feature_name: "item" num_buckets: 10 embedding_dim: 8 }} }}
model_config {{
  feature_groups {{ group_name: "wide" feature_names: ["user", "item"] group_type: WIDE }}
  feature_groups {{ group_name: "deep" feature_names: ["user", "item"] }}
  wide_and_deep {{ deep {{ hidden_units: [16] }} final {{ hidden_units: [8] }} }}
  metrics {{ auc {{}} }}
  losses {{ binary_cross_entropy {{}} }}
}}
"""


def planted_users(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``NUM_USERS`` distinct ids in ``[0, 1e12)`` and each one's click rate (0.1 or 0.9)."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(MAX_ID, NUM_USERS, replace=False).astype(np.int64)
    rates = np.where(rng.random(NUM_USERS) < 0.5, 0.1, 0.9)
    return ids, rates


def planted_rows(num_rows: int, seed: int) -> pa.Table:
    """Rows of ``user`` (an id of :func:`planted_users`), ``item`` (noise) and ``label``.

    A user's label is 1 with its click rate, whatever the item: only a model that gives each
    user its own row can learn the rates (AUC near 0.9; 0.5 by chance).
    """
    ids, rates = planted_users()
    rng = np.random.default_rng(seed)
    who = rng.integers(0, NUM_USERS, num_rows)
    return pa.table(
        {
            "user": pa.array(ids[who]),
            "item": pa.array(rng.integers(0, 10, num_rows)),
            "label": pa.array((rng.random(num_rows) < rates[who]).astype(np.int64)),
        }
    )
