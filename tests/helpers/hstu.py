"""Planted-signal sequential data and hstu_match configs for the HSTU tests.

Each row is a user's history of random items, oldest first; its next item is ``(last + 1) mod
N``. Only the order says which event is the last one, so a model that pools the history as a
bag cannot place the next item in its top 10 much more often than 10 / (history length).
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers.planted_sequences import draw_history, history_columns, write_train_eval

NUM_ITEMS = 100


def planted_table(rows: int, seed: int, min_len: int = 16, max_len: int = 24) -> pa.Table:
    """``uih__video_id`` / ``uih__action_timestamp`` ("|"-joined), ``item_id``, ``label``."""
    rng = np.random.default_rng(seed)
    histories, times, nxt = [], [], []
    for _ in range(rows):
        items, ts = draw_history(rng, NUM_ITEMS, min_len, max_len)
        histories.append(items)
        times.append(ts)
        n = len(items)
        nxt.append(int((items[-1] + 1) % NUM_ITEMS) if n else int(rng.integers(0, NUM_ITEMS)))
    return pa.table(
        {
            **history_columns(histories, times),
            "item_id": pa.array(nxt, pa.int64()),
            "label": pa.array(np.ones(rows, dtype=np.int64)),
        }
    )


def write_planted_data(directory: str, train_rows: int = 3000, eval_rows: int = 300) -> None:
    """``train.parquet``, ``eval.parquet`` and the item table ``items.parquet`` in ``directory``."""
    write_train_eval(directory, planted_table, train_rows, eval_rows)
    items = pa.table({"item_id": pa.array(np.arange(NUM_ITEMS), pa.int64())})
    pq.write_table(items, os.path.join(directory, "items.parquet"))


FEATURES = f"""
feature_configs {{
  sequence_feature {{
    sequence_name: "uih" sequence_length: 24 sequence_delim: "|"
    features {{ id_feature {{ feature_name: "video_id" expression: "item:video_id"
                            embedding_name: "video_emb" num_buckets: {NUM_ITEMS}
                            embedding_dim: 16 }} }}
    features {{ raw_feature {{ feature_name: "action_timestamp"
                             expression: "user:action_timestamp" }} }}
  }}
}}
feature_configs {{ id_feature {{ feature_name: "item_id" expression: "item:item_id"
                               embedding_name: "video_emb" num_buckets: {NUM_ITEMS}
                               embedding_dim: 16 }} }}
"""

MODEL = """
model_config {
  feature_groups { group_name: "uih" feature_names: "uih__video_id" group_type: JAGGED_SEQUENCE }
  feature_groups { group_name: "uih_timestamp" feature_names: "uih__action_timestamp"
                   group_type: JAGGED_SEQUENCE }
  feature_groups { group_name: "candidate" feature_names: "item_id" group_type: DEEP }
  hstu_match {
    user_tower {
      input: "uih"
      hstu {
        stu { embedding_dim: 16 num_heads: 2 hidden_dim: 8 attention_dim: 8
              output_dropout_ratio: 0.0 }
        input_dropout_ratio: 0.0
        attn_num_layers: 2
        positional_encoder { num_position_buckets: 32 num_time_buckets: 64
                             use_time_encoding: true }
        input_preprocessor { uih_preprocessor { } }
        output_postprocessor { l2norm_postprocessor { } }
      }
      max_seq_len: 24
    }
    item_tower { input: "candidate" mlp { hidden_units: [16] activation: "" } }
    similarity: COSINE
    temperature: 0.1
    in_batch_negative: true
  }
  metrics { recall_at_k { top_k: 10 } }
  losses { softmax_cross_entropy { } }
  kernel: PYTORCH
}
"""


def pipeline_text(directory: str, epochs: int = 4, sampler: bool = False) -> str:
    """The pipeline config of a run on :func:`write_planted_data`'s tables."""
    negative = (
        f'negative_sampler {{ input_path: "{directory}/items.parquet" num_sample: 16'
        ' item_id_field: "item_id" attr_fields: ["item_id"] }'
        if sampler
        else ""
    )
    return f"""
train_input_path: "{directory}/train.parquet"
eval_input_path: "{directory}/eval.parquet"
model_dir: "{directory}/model"
train_config {{
  sparse_optimizer {{ adam_optimizer {{ lr: 0.01 }} constant_learning_rate {{ }} }}
  dense_optimizer {{ adam_optimizer {{ lr: 0.005 }} constant_learning_rate {{ }} }}
  num_epochs: {epochs}
  use_tensorboard: false
}}
data_config {{
  batch_size: 64 fg_mode: FG_DAG label_fields: "label"
  {negative}
}}
{FEATURES}
{MODEL}
"""


# TorchEasyRec's hstu example config shape (kuairand): JAGGED_SEQUENCE history, candidate,
# action / watch-time / timestamp groups, a DEEP contextual and query_time group
TZREC_SHAPE = """
data_config { label_fields: ["cand_seq__action_weight"] fg_mode: FG_DAG }
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id"
                               embedding_dim: 16 num_buckets: 100 } }
feature_configs { sequence_feature { sequence_name: "uih_seq" sequence_length: 64
  sequence_delim: "|"
  features { id_feature { feature_name: "video_id" expression: "item:video_id"
                          embedding_name: "video_id_emb" embedding_dim: 16 num_buckets: 100 } }
  features { raw_feature { feature_name: "action_timestamp" expression: "user:action_timestamp" } }
  features { raw_feature { feature_name: "action_weight" expression: "user:action_weight" } } } }
feature_configs { sequence_feature { sequence_name: "cand_seq" sequence_length: 8
  sequence_delim: "|"
  features { id_feature { feature_name: "video_id" expression: "item:video_id"
                          embedding_name: "video_id_emb" embedding_dim: 16 num_buckets: 100 } } } }
feature_configs { raw_feature { feature_name: "request_time" expression: "user:request_time" } }
model_config {
  feature_groups { group_name: "contextual" feature_names: "user_id" group_type: DEEP }
  feature_groups { group_name: "uih" feature_names: "uih_seq__video_id"
                   group_type: JAGGED_SEQUENCE }
  feature_groups { group_name: "candidate" feature_names: "cand_seq__video_id"
                   group_type: JAGGED_SEQUENCE }
  feature_groups { group_name: "uih_action" feature_names: "uih_seq__action_weight"
                   group_type: JAGGED_SEQUENCE }
  feature_groups { group_name: "uih_timestamp" feature_names: "uih_seq__action_timestamp"
                   group_type: JAGGED_SEQUENCE }
  feature_groups { group_name: "query_time" feature_names: "request_time" group_type: DEEP }
  hstu_match {
    user_tower {
      input: "uih"
      hstu {
        stu { embedding_dim: 16 num_heads: 2 hidden_dim: 8 attention_dim: 8
              output_dropout_ratio: 0.1 use_group_norm: true }
        input_dropout_ratio: 0.2 attn_num_layers: 2
        positional_encoder { num_position_buckets: 64 num_time_buckets: 32
                             use_time_encoding: true }
        input_preprocessor { uih_preprocessor {
          action_encoder { simple_action_encoder { action_embedding_dim: 8
                                                   action_weights: [1, 2, 4] } }
          action_mlp { simple_mlp { hidden_dim: 16 } } } }
        output_postprocessor { l2norm_postprocessor { } }
      }
      max_seq_len: 64
    }
    item_tower { input: "candidate" mlp { hidden_units: 16 activation: "" } }
    similarity: COSINE temperature: 0.05
  }
  metrics { recall_at_k { top_k: 5 } }
  losses { softmax_cross_entropy { } }
  kernel: PYTORCH
}
"""


def tzrec_shape_rows() -> pa.Table:
    """Three users in :data:`TZREC_SHAPE`'s columns: histories of 3, 1 and 0 events."""
    return pa.table(
        {
            "user_id": pa.array([1, 2, 3]),
            "uih_seq__video_id": pa.array(["1|2|3", "4", ""]),
            "uih_seq__action_timestamp": pa.array(["10|20|30", "5", ""]),
            "uih_seq__action_weight": pa.array(["1|2|1", "4", ""]),
            "cand_seq__video_id": pa.array(["7", "8", "9"]),
            "request_time": pa.array([40.0, 6.0, 1.0]),
            "cand_seq__action_weight": pa.array([1, 1, 1]),
        }
    )
