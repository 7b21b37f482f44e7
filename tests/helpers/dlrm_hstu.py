"""Planted-signal ranking data and dlrm_hstu configs for the DLRM-HSTU tests.

Each row is a user's history of random items, oldest first, and candidates taken from the
history: its last item (a third of them), its second to last one (a third) or an earlier one.
``label_hot`` says whether the last item is one of the first ``NUM_ITEMS // 2`` items: a model
that pools the history as a bag only knows how many such items the history holds, not whether
the last one is. ``label_next`` says whether the candidate is the last item (every candidate
is in the history, so again only the order tells). With one candidate per row the labels are
numbers; with several they are "|"-joined, one per candidate, like the candidate columns.

With ``actions=True`` the table, the features and the model take the shape of TorchEasyRec's
documented dlrm_hstu config: per-event action bitmasks ``uih__action_weight`` and watch times
``uih__watch_time`` (groups ``uih_action`` / ``uih_watchtime``), a DEEP ``contextual`` group
(``user_id``), an action encoder with ``action_weights: [1, 2]`` and ``task_bitmask`` tasks
over the candidates' action label ``label_action`` (bit 1: ``label_next``, bit 2:
``label_hot``). The actions are noise drawn from their own generator, so the other columns are
the same with and without them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tests.helpers.planted_sequences import (
    draw_history,
    history_columns,
    joined,
    write_train_eval,
)

NUM_ITEMS = 20
#: the candidate sequence's length in FEATURES (the most candidates a row may hold)
MAX_CANDIDATES = 4


def planted_rank_table(
    rows: int,
    seed: int,
    min_len: int = 6,
    max_len: int = 10,
    max_candidates: int = 1,
    actions: bool = False,
) -> pa.Table:
    """``uih__video_id`` / ``uih__action_timestamp`` ("|"-joined), the candidates
    ``cand__item_id`` / ``cand__item_ts`` (1 to ``max_candidates`` each), ``label_next``,
    ``label_hot``; with ``actions`` also ``uih__action_weight`` / ``uih__watch_time``,
    ``user_id`` and ``label_action`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    histories, times, cands, cand_ts, nxt, hot = [], [], [], [], [], []
    for _ in range(rows):
        items, ts = draw_history(rng, NUM_ITEMS, min_len, max_len)
        n = len(items)
        count = int(rng.integers(1, max_candidates + 1)) if max_candidates > 1 else 1
        row = []
        for _ in range(count):
            which = int(rng.integers(0, 3))
            pick = -1 if which == 0 else -2 if which == 1 else int(rng.integers(0, n - 2))
            row.append(int(items[pick]))
        histories.append(items)
        times.append(ts)
        cands.append(np.array(row))
        cand_ts.append(np.full(count, int(ts[-1]) + 60))
        nxt.append(np.array([int(c == items[-1]) for c in row]))
        hot.append(np.full(count, int(items[-1] < NUM_ITEMS // 2)))
    if max_candidates > 1:
        labels = {"label_next": joined(nxt), "label_hot": joined(hot)}
    else:
        labels = {
            "label_next": pa.array([int(v[0]) for v in nxt], pa.int64()),
            "label_hot": pa.array([int(v[0]) for v in hot], pa.int64()),
        }
    if actions:
        noise = np.random.default_rng(seed + 1000)
        labels["label_action"] = (
            joined([n + 2 * h for n, h in zip(nxt, hot)])
            if max_candidates > 1
            else pa.array([int(n[0] + 2 * h[0]) for n, h in zip(nxt, hot)], pa.int64())
        )
        labels = {
            "uih__action_weight": joined([noise.integers(0, 4, len(h)) for h in histories]),
            "uih__watch_time": joined([noise.integers(0, 100, len(h)) for h in histories]),
            "user_id": pa.array([str(i) for i in range(rows)]),
            **labels,
        }
    return pa.table(
        {
            **history_columns(histories, times),
            "cand__item_id": joined(cands),
            "cand__item_ts": joined(cand_ts),
            **labels,
        }
    )


def write_planted_rank_data(
    directory: str, train_rows: int = 2400, eval_rows: int = 400, max_candidates: int = 1
) -> None:
    """``train.parquet`` and ``eval.parquet`` in ``directory``."""

    def table(rows: int, seed: int) -> pa.Table:
        return planted_rank_table(rows, seed, max_candidates=max_candidates)

    write_train_eval(directory, table, train_rows, eval_rows)


def features(actions: bool = False) -> str:
    """The feature configs of :func:`planted_rank_table`'s columns."""
    extra = ""
    if actions:
        extra = """
    features { raw_feature { feature_name: "action_weight" expression: "user:action_weight" } }
    features { raw_feature { feature_name: "watch_time" expression: "user:watch_time" } }"""
    user = (
        """
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id"
                               embedding_dim: 8 num_buckets: 1000 } }"""
        if actions
        else ""
    )
    return f"""
feature_configs {{
  sequence_feature {{
    sequence_name: "uih" sequence_length: 10 sequence_delim: "|"
    features {{ id_feature {{ feature_name: "video_id" expression: "item:video_id"
                            embedding_name: "video_emb" num_buckets: {NUM_ITEMS}
                            embedding_dim: 16 }} }}
    features {{ raw_feature {{ feature_name: "action_timestamp"
                             expression: "user:action_timestamp" }} }}{extra}
  }}
}}
feature_configs {{
  sequence_feature {{
    sequence_name: "cand" sequence_length: {MAX_CANDIDATES} sequence_delim: "|"
    features {{ id_feature {{ feature_name: "item_id" expression: "item:item_id"
                            embedding_name: "video_emb" num_buckets: {NUM_ITEMS}
                            embedding_dim: 16 }} }}
    features {{ raw_feature {{ feature_name: "item_ts" expression: "item:item_ts" }} }}
  }}
}}{user}
"""


FEATURES = features()

TASKS = """
    task_configs { task_name: "next" label_name: "label_next"
                   losses { binary_cross_entropy { } } metrics { auc { } } }
    task_configs { task_name: "hot" label_name: "label_hot"
                   losses { binary_cross_entropy { } } metrics { auc { } } }
"""

#: the ``task_bitmask`` tasks of the ``actions`` model (TorchEasyRec's click / like pair)
ACTION_TASKS = """
    task_configs { task_name: "next" label_name: "label_action" task_bitmask: 1
                   losses { binary_cross_entropy { } } metrics { auc { } } }
    task_configs { task_name: "hot" label_name: "label_action" task_bitmask: 2
                   losses { binary_cross_entropy { } } metrics { auc { } } }
"""

#: the action encoder and MLP of the ``actions`` model
ACTION_ENCODER = """
        action_encoder { simple_action_encoder { action_embedding_dim: 4
                                                 action_weights: [1, 2] } }
        action_mlp { simple_mlp { hidden_dim: 16 } }"""


def model(actions: bool = False) -> str:
    """The dlrm_hstu model config; with ``actions`` TorchEasyRec's documented shape."""
    groups = ""
    if actions:
        groups = """
  feature_groups { group_name: "contextual" feature_names: "user_id" group_type: DEEP }
  feature_groups { group_name: "uih_action" feature_names: "uih__action_weight"
                   group_type: JAGGED_SEQUENCE }
  feature_groups { group_name: "uih_watchtime" feature_names: "uih__watch_time"
                   group_type: JAGGED_SEQUENCE }"""
    tower = (
        f'mlp {{ hidden_units: [16] activation: "nn.SiLU" use_ln: true }} {ACTION_TASKS}'
        if actions
        else f"mlp {{ hidden_units: [16] }} {TASKS}"
    )
    return f"""
model_config {{
  feature_groups {{ group_name: "uih" feature_names: "uih__video_id"
                   group_type: JAGGED_SEQUENCE }}
  feature_groups {{ group_name: "uih_timestamp" feature_names: "uih__action_timestamp"
                   group_type: JAGGED_SEQUENCE }}
  feature_groups {{ group_name: "candidate" feature_names: "cand__item_id"
                   group_type: JAGGED_SEQUENCE }}
  feature_groups {{ group_name: "candidate_timestamp" feature_names: "cand__item_ts"
                   group_type: JAGGED_SEQUENCE }}{groups}
  dlrm_hstu {{
    hstu {{
      stu {{ embedding_dim: 16 num_heads: 2 hidden_dim: 8 attention_dim: 8
            output_dropout_ratio: 0.0 }}
      input_dropout_ratio: 0.0
      attn_num_layers: 2
      positional_encoder {{ num_position_buckets: 32 num_time_buckets: 64
                           use_time_encoding: true }}
      input_preprocessor {{ contextual_preprocessor {{{ACTION_ENCODER if actions else ""}
        content_encoder {{ slice_content_encoder {{ }} }}
        content_mlp {{ simple_mlp {{ hidden_dim: 16 }} }}
      }} }}
      output_postprocessor {{ layernorm_postprocessor {{ }} }}
    }}
    fusion_mtl_tower {{ {tower} }}
    max_seq_len: 14
    item_embedding_hidden_dim: 16
  }}
  kernel: PYTORCH
}}
"""


MODEL = model()

#: the bag-of-history baseline (the history pooled by sum next to the candidate, an MLP) that
#: a dlrm_hstu run on this data should beat on ``label_hot``
BAG_MODEL = """
model_config {
  feature_groups { group_name: "all" feature_names: "cand__item_id"
                   sequence_groups { group_name: "hist" feature_names: "uih__video_id" }
                   sequence_encoders { pooling_encoder { input: "hist" pooling_type: "sum" } } }
  simple_multi_task {
    task_towers { tower_name: "next" label_name: "label_next" mlp { hidden_units: [32, 16] }
                  losses { binary_cross_entropy { } } metrics { auc { } } }
    task_towers { tower_name: "hot" label_name: "label_hot" mlp { hidden_units: [32, 16] }
                  losses { binary_cross_entropy { } } metrics { auc { } } }
  }
}
"""


def pipeline_text(directory: str, model: str = MODEL, epochs: int = 4) -> str:
    """The pipeline config of a run on :func:`write_planted_rank_data`'s tables."""
    return f"""
train_input_path: "{directory}/train.parquet"
eval_input_path: "{directory}/eval.parquet"
model_dir: "{directory}/model"
train_config {{
  sparse_optimizer {{ adam_optimizer {{ lr: 0.01 }} constant_learning_rate {{ }} }}
  dense_optimizer {{ adam_optimizer {{ lr: 0.01 }} constant_learning_rate {{ }} }}
  num_epochs: {epochs}
  use_tensorboard: false
}}
data_config {{
  batch_size: 64 fg_mode: FG_DAG label_fields: ["label_next", "label_hot"]
}}
{FEATURES}
{model}
"""
