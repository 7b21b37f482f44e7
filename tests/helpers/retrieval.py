"""A tiny retrieval set-up: item table, training rows and a DSSM pipeline config with a sampler."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from google.protobuf import text_format

from recforge.protos import pipeline_pb2, sampler_pb2

NUM_ITEMS = 60


FEATURES = """
feature_configs { id_feature { feature_name: "user_id" num_buckets: 20 embedding_dim: 8 } }
feature_configs { raw_feature { feature_name: "age" } }
feature_configs {
  id_feature { feature_name: "item_id" hash_bucket_size: 200 embedding_dim: 8
               embedding_name: "item_emb" }
}
feature_configs { id_feature { feature_name: "cate" num_buckets: 5 embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "price" } }
feature_configs {
  id_feature { feature_name: "last_item" hash_bucket_size: 200 embedding_dim: 8
               embedding_name: "item_emb" }
}
"""


GROUPS = """
  feature_groups { group_name: "user" feature_names: ["user_id", "age", "last_item"] }
  feature_groups { group_name: "item" feature_names: ["item_id", "cate", "price"] }
"""


def item_table() -> pa.Table:
    ids = [f"i{k}" for k in range(NUM_ITEMS)]
    return pa.table(
        {
            "item_id": ids,
            "cate": pa.array(np.arange(NUM_ITEMS) % 5, pa.int64()),
            "price": pa.array(np.arange(NUM_ITEMS) * 0.5 + 1.0),
            "weight": pa.array(np.arange(NUM_ITEMS) + 1.0),
        }
    )


def train_table(num_rows: int = 40, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    items = rng.integers(0, NUM_ITEMS, num_rows)
    return pa.table(
        {
            "user_id": pa.array(rng.integers(0, 20, num_rows), pa.int64()),
            "age": pa.array(rng.random(num_rows)),
            "last_item": [f"i{k}" for k in rng.integers(0, NUM_ITEMS, num_rows)],
            "item_id": [f"i{k}" for k in items],
            "cate": pa.array(items % 5, pa.int64()),
            "price": pa.array(items * 0.5 + 1.0),
            "label": pa.array(np.ones(num_rows, dtype=np.int64)),
        }
    )


def sampler_config(path: str, num_sample: int = 8, **fields) -> sampler_pb2.NegativeSampler:
    config = sampler_pb2.NegativeSampler(
        input_path=path, num_sample=num_sample, item_id_field="item_id"
    )
    config.attr_fields.extend(["item_id", "cate", "price"])
    for name, value in fields.items():
        setattr(config, name, value)
    return config


def pipeline_config(workdir, model: str = "dssm", sampler: str = "", extra: str = ""):
    text = f"""
      train_input_path: "{workdir}/train.parquet"
      data_config {{ fg_mode: FG_DAG batch_size: 10 label_fields: "label" {sampler} }}
      {FEATURES}
      model_config {{
        {GROUPS}
        {model} {{
          user_tower {{ input: "user" mlp {{ hidden_units: [16] }} }}
          item_tower {{ input: "item" mlp {{ hidden_units: [16] }} }}
          output_dim: 8 temperature: 0.2 {extra}
        }}
        metrics {{ recall_at_k {{ top_k: 3 }} }}
      }}
    """
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


def sampler_text(workdir, num_sample: int = 8) -> str:
    return f"""negative_sampler {{
        input_path: "{workdir}/items.parquet" num_sample: {num_sample} item_id_field: "item_id"
        attr_fields: ["item_id", "cate", "price"] }}"""


def write_tables(directory):
    """Writes items.parquet (item_table) and train.parquet (train_table) into ``directory``."""
    pq.write_table(item_table(), directory / "items.parquet")
    pq.write_table(train_table(), directory / "train.parquet")
    return directory
