"""ultra_hstu configs and data: the planted DLRM-HSTU rows with a second history channel.

The two channels have the layout of TorchEasyRec's two-channel ultra_hstu test config: a
click stream and a view stream (``<name>``, ``<name>_action``, ``<name>_watchtime``,
``<name>_timestamp`` groups each), shared ``candidate`` / ``candidate_timestamp`` groups and a
DEEP ``contextual`` group of user features; semi-local attention and mid-stack truncation on.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tests.helpers.dlrm_hstu import MODEL, NUM_ITEMS, TASKS, planted_rank_table

#: one unnamed channel: dlrm_hstu's config under the ultra_hstu name
SINGLE_CHANNEL_MODEL = MODEL.replace("dlrm_hstu {", "ultra_hstu {", 1)


def two_channel_table(rows: int, seed: int) -> pa.Table:
    """The planted rows; the click stream is the history, the view stream every 2nd event."""
    base = planted_rank_table(rows, seed)
    rng = np.random.default_rng(seed + 100)
    hist = base.column("uih__video_id").to_pylist()
    ts = base.column("uih__action_timestamp").to_pylist()

    def every_other(values: list[str]) -> list[str]:
        return ["|".join(v.split("|")[1::2]) for v in values]

    def noise(values: list[str], high: int) -> list[str]:
        return ["|".join(str(int(rng.integers(0, high))) for _ in v.split("|")) for v in values]

    columns = {
        "click_seq__video_id": hist,
        "click_seq__action_timestamp": ts,
        "click_seq__action_weight": noise(hist, 8),
        "click_seq__watch_time": noise(hist, 100),
        "view_seq__video_id": every_other(hist),
        "view_seq__action_timestamp": every_other(ts),
        "view_seq__action_weight": noise(every_other(hist), 8),
        "view_seq__watch_time": noise(every_other(hist), 100),
        "cand_seq__video_id": base.column("cand__item_id").to_pylist(),
        "cand_seq__query_time": base.column("cand__item_ts").to_pylist(),
        "user_id": [str(i) for i in range(rows)],
        "user_active_degree": [str(int(rng.integers(0, 4))) for _ in range(rows)],
    }
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    for label in ("label_next", "label_hot"):
        table = table.append_column(label, base.column(label))
    return table


def _seq(name: str) -> str:
    return f"""
feature_configs {{ sequence_feature {{
  sequence_name: "{name}" sequence_length: 10 sequence_delim: "|"
  features {{ id_feature {{ feature_name: "video_id" expression: "item:video_id"
                          embedding_name: "video_emb" num_buckets: {NUM_ITEMS}
                          embedding_dim: 16 }} }}
  features {{ raw_feature {{ feature_name: "action_timestamp"
                           expression: "user:action_timestamp" }} }}
  features {{ raw_feature {{ feature_name: "action_weight" expression: "user:action_weight" }} }}
  features {{ raw_feature {{ feature_name: "watch_time" expression: "user:watch_time" }} }}
}} }}"""


TWO_CHANNEL_FEATURES = (
    _seq("click_seq")
    + _seq("view_seq")
    + f"""
feature_configs {{ sequence_feature {{
  sequence_name: "cand_seq" sequence_length: 1 sequence_delim: "|"
  features {{ id_feature {{ feature_name: "video_id" expression: "item:video_id"
                          embedding_name: "video_emb" num_buckets: {NUM_ITEMS}
                          embedding_dim: 16 }} }}
  features {{ raw_feature {{ feature_name: "query_time" expression: "user:query_time" }} }}
}} }}
feature_configs {{ id_feature {{ feature_name: "user_id" expression: "user:user_id"
                                 embedding_dim: 8 num_buckets: 1000 }} }}
feature_configs {{ id_feature {{ feature_name: "user_active_degree"
                                 expression: "user:user_active_degree"
                                 embedding_dim: 8 num_buckets: 8 }} }}
"""
)


def _channel(name: str, dim: int) -> str:
    return f"""
    hstu {{
      name: "{name}"
      stu {{ embedding_dim: {dim} num_heads: 2 hidden_dim: 4 attention_dim: 4
            output_dropout_ratio: 0.1 use_group_norm: true sla_k1: 3 sla_k2: 1 }}
      input_dropout_ratio: 0.2
      attn_num_layers: 3
      attn_truncation_split_layer: 2
      attn_truncation_tail_len: 4
      positional_encoder {{ num_position_buckets: 32 num_time_buckets: 64
                           use_time_encoding: true }}
      input_preprocessor {{ contextual_preprocessor {{
        content_encoder {{ slice_content_encoder {{ }} }}
        content_mlp {{ simple_mlp {{ hidden_dim: 16 }} }}
      }} }}
      output_postprocessor {{ layernorm_postprocessor {{ }} }}
    }}"""


def _groups(name: str, seq: str) -> str:
    return "".join(
        f"""
  feature_groups {{ group_name: "{name}{suffix}" feature_names: "{seq}__{column}"
                   group_type: JAGGED_SEQUENCE }}"""
        for suffix, column in (
            ("", "video_id"),
            ("_action", "action_weight"),
            ("_watchtime", "watch_time"),
            ("_timestamp", "action_timestamp"),
        )
    )


TWO_CHANNEL_MODEL = f"""
model_config {{
  feature_groups {{ group_name: "contextual" feature_names: ["user_id", "user_active_degree"]
                   group_type: DEEP }}
  {_groups("uih_click", "click_seq")}
  {_groups("uih_view", "view_seq")}
  feature_groups {{ group_name: "candidate" feature_names: "cand_seq__video_id"
                   group_type: JAGGED_SEQUENCE }}
  feature_groups {{ group_name: "candidate_timestamp" feature_names: "cand_seq__query_time"
                   group_type: JAGGED_SEQUENCE }}
  ultra_hstu {{
    {_channel("uih_click", 16)}
    {_channel("uih_view", 8)}
    fusion_mtl_tower {{ mlp {{ hidden_units: [16] }} {TASKS} }}
    max_seq_len: 12
    item_embedding_hidden_dim: 16
  }}
  kernel: PYTORCH
}}
"""
