"""ultra_hstu configs and data: the planted DLRM-HSTU rows with a second history channel.

The two channels have the layout of TorchEasyRec's two-channel ultra_hstu test config: a
click stream and a view stream (``<name>``, ``<name>_action``, ``<name>_watchtime``,
``<name>_timestamp`` groups each), shared ``candidate`` / ``candidate_timestamp`` groups and a
DEEP ``contextual`` group of user features; semi-local attention and mid-stack truncation on.
Built from the pieces of :mod:`tests.helpers.dlrm_hstu`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tests.helpers.dlrm_hstu import (
    MODEL,
    TASKS,
    USER_ID_FEATURE,
    action_groups,
    candidate_feature,
    candidate_groups,
    history_feature,
    history_groups,
    hstu,
    model_config,
    planted_rank_table,
)

#: one unnamed channel: dlrm_hstu's config under the ultra_hstu name
SINGLE_CHANNEL_MODEL = MODEL.replace("dlrm_hstu {", "ultra_hstu {", 1)


def two_channel_table(rows: int, seed: int) -> pa.Table:
    """The planted rows with actions; the click stream is the history, the view stream
    every 2nd event of it."""
    base = planted_rank_table(rows, seed, actions=True)
    rng = np.random.default_rng(seed + 100)

    def every_other(values: list[str]) -> list[str]:
        return ["|".join(v.split("|")[1::2]) for v in values]

    columns: dict[str, list[str]] = {}
    for column in ("video_id", "action_timestamp", "action_weight", "watch_time"):
        history = base.column(f"uih__{column}").to_pylist()
        columns[f"click_seq__{column}"] = history
        columns[f"view_seq__{column}"] = every_other(history)
    columns["cand_seq__video_id"] = base.column("cand__item_id").to_pylist()
    columns["cand_seq__query_time"] = base.column("cand__item_ts").to_pylist()
    columns["user_id"] = base.column("user_id").to_pylist()
    columns["user_active_degree"] = [str(int(rng.integers(0, 4))) for _ in range(rows)]
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    for label in ("label_next", "label_hot"):
        table = table.append_column(label, base.column(label))
    return table


TWO_CHANNEL_FEATURES = (
    history_feature("click_seq", actions=True)
    + history_feature("view_seq", actions=True)
    + candidate_feature("cand_seq", "video_id", "query_time", length=1)
    + USER_ID_FEATURE
    + """
feature_configs { id_feature { feature_name: "user_active_degree"
                               expression: "user:user_active_degree"
                               embedding_dim: 8 num_buckets: 8 } }
"""
)


def _channel(name: str, dim: int) -> str:
    return hstu(
        f"embedding_dim: {dim} num_heads: 2 hidden_dim: 4 attention_dim: 4\n"
        "            output_dropout_ratio: 0.1 use_group_norm: true sla_k1: 3 sla_k2: 1",
        "input_dropout_ratio: 0.2\n      attn_num_layers: 3\n"
        "      attn_truncation_split_layer: 2\n      attn_truncation_tail_len: 4",
        name,
    )


TWO_CHANNEL_MODEL = model_config(
    """
  feature_groups { group_name: "contextual" feature_names: ["user_id", "user_active_degree"]
                   group_type: DEEP }"""
    + "".join(
        history_groups(name, seq) + action_groups(name, seq)
        for name, seq in (("uih_click", "click_seq"), ("uih_view", "view_seq"))
    )
    + candidate_groups("cand_seq", "video_id", "query_time"),
    _channel("uih_click", 16) + _channel("uih_view", 8),
    f"mlp {{ hidden_units: [16] }} {TASKS}",
    kind="ultra_hstu",
    max_seq_len=12,
)
