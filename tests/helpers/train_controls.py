"""A tiny MultiTower run for the train-loop controls: its config text, optimizers, rows, files."""

from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def config_text(
    train: str,
    ids: tuple[str, ...] = ("user", "item"),
    extra: str = "",
    feature_options: Optional[dict[str, str]] = None,
) -> str:
    """A DeepFM over ``ids`` + price (no dropout: runs are deterministic), with ``train``."""
    options = feature_options or {}
    features = "\n".join(ID_FEATURES[name] % options.get(name, "") for name in ids)
    quoted = ", ".join(f'"{name}"' for name in ids)
    return f"""
{features}
{PRICE}
model_config {{
  feature_groups {{ group_name: "wide" feature_names: [{quoted}] group_type: WIDE }}
  feature_groups {{ group_name: "deep" feature_names: [{quoted}, "price"] }}
  feature_groups {{ group_name: "fm" feature_names: [{quoted}] }}
  deepfm {{ deep {{ hidden_units: [16, 8] }} final {{ hidden_units: [4] }} }}
  metrics {{ auc {{}} }}
  losses {{ binary_cross_entropy {{}} }}
}}
data_config {{ batch_size: 8 label_fields: "label" num_workers: 0 }}
train_config {{ {train} }}
{extra}
"""


def sgd(sparse_lr: float, dense_lr: float, extra: str = "") -> str:
    return (
        f"sparse_optimizer {{ sgd_optimizer {{ lr: {sparse_lr} }} }}"
        f" dense_optimizer {{ sgd_optimizer {{ lr: {dense_lr} }} }} {extra}"
    )


def rows(num_rows: int, seed: int, with_city: bool = False) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    columns = {
        "user": rng.integers(0, 50, num_rows),
        "item": rng.integers(0, 100, num_rows),
        "price": rng.random(num_rows),
        "label": (rng.random(num_rows) < 0.4).astype(np.int64),
    }
    if with_city:
        columns["city"] = rng.integers(0, 10, num_rows)
    return pa.RecordBatch.from_pydict(columns)


def write_parquet(path: str, num_rows: int, seed: int) -> str:
    pq.write_table(pa.Table.from_batches([rows(num_rows, seed)]), path)
    return path


ID_FEATURES = {
    "user": 'feature_configs { id_feature { feature_name: "user" num_buckets: 50 embedding_dim: 8'
    " %s } }",
    "item": 'feature_configs { id_feature { feature_name: "item" num_buckets: 100 embedding_dim: 8'
    " %s } }",
    "city": 'feature_configs { id_feature { feature_name: "city" num_buckets: 10 embedding_dim: 8'
    " %s } }",
}


PRICE = 'feature_configs { raw_feature { feature_name: "price" } }'
