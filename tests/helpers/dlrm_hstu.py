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

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from recforge.config import ConfigError
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


# ---- config pieces (ultra_hstu's helper builds its channels from them too) ------------------
def history_feature(sequence_name: str = "uih", actions: bool = False) -> str:
    """A history sequence feature: ``video_id``, ``action_timestamp`` (and with ``actions``
    ``action_weight``, ``watch_time``)."""
    extra = ""
    if actions:
        extra = """
    features { raw_feature { feature_name: "action_weight" expression: "user:action_weight" } }
    features { raw_feature { feature_name: "watch_time" expression: "user:watch_time" } }"""
    return f"""
feature_configs {{
  sequence_feature {{
    sequence_name: "{sequence_name}" sequence_length: 10 sequence_delim: "|"
    features {{ id_feature {{ feature_name: "video_id" expression: "item:video_id"
                            embedding_name: "video_emb" num_buckets: {NUM_ITEMS}
                            embedding_dim: 16 }} }}
    features {{ raw_feature {{ feature_name: "action_timestamp"
                             expression: "user:action_timestamp" }} }}{extra}
  }}
}}"""


def candidate_feature(
    sequence_name: str = "cand",
    item: str = "item_id",
    timestamp: str = "item_ts",
    length: int = MAX_CANDIDATES,
) -> str:
    """The candidate sequence feature: an ``item`` id (the history's table), a ``timestamp``."""
    return f"""
feature_configs {{
  sequence_feature {{
    sequence_name: "{sequence_name}" sequence_length: {length} sequence_delim: "|"
    features {{ id_feature {{ feature_name: "{item}" expression: "item:{item}"
                            embedding_name: "video_emb" num_buckets: {NUM_ITEMS}
                            embedding_dim: 16 }} }}
    features {{ raw_feature {{ feature_name: "{timestamp}" expression: "item:{timestamp}" }} }}
  }}
}}"""


#: the user feature of the ``contextual`` group
USER_ID_FEATURE = """
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id"
                               embedding_dim: 8 num_buckets: 1000 } }"""


def features(actions: bool = False) -> str:
    """The feature configs of :func:`planted_rank_table`'s columns."""
    user = USER_ID_FEATURE if actions else ""
    return f"{history_feature(actions=actions)}\n{candidate_feature()}{user}\n"


FEATURES = features()


def group(name: str, column: str, kind: str = "JAGGED_SEQUENCE") -> str:
    """One feature group ``name`` of one feature ``column``."""
    return f"""
  feature_groups {{ group_name: "{name}" feature_names: "{column}"
                   group_type: {kind} }}"""


def history_groups(name: str = "uih", sequence: str = "uih") -> str:
    """History ``name`` and ``<name>_timestamp`` from sequence feature ``sequence``."""
    return group(name, f"{sequence}__video_id") + group(
        f"{name}_timestamp", f"{sequence}__action_timestamp"
    )


def action_groups(name: str = "uih", sequence: str = "uih") -> str:
    """``<name>_action`` and ``<name>_watchtime`` from sequence feature ``sequence``."""
    return group(f"{name}_action", f"{sequence}__action_weight") + group(
        f"{name}_watchtime", f"{sequence}__watch_time"
    )


def candidate_groups(sequence: str = "cand", item: str = "item_id", ts: str = "item_ts") -> str:
    """``candidate`` and ``candidate_timestamp`` from sequence feature ``sequence``."""
    return group("candidate", f"{sequence}__{item}") + group(
        "candidate_timestamp", f"{sequence}__{ts}"
    )


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


def hstu(
    stu: str = "embedding_dim: 16 num_heads: 2 hidden_dim: 8 attention_dim: 8\n"
    "            output_dropout_ratio: 0.0",
    layers: str = "input_dropout_ratio: 0.0\n      attn_num_layers: 2",
    name: str = "",
    actions: bool = False,
) -> str:
    """An ``hstu { ... }`` channel: its ``stu`` fields, its layer settings, the shared rest."""
    named = f'\n      name: "{name}"' if name else ""
    return f"""
    hstu {{{named}
      stu {{ {stu} }}
      {layers}
      positional_encoder {{ num_position_buckets: 32 num_time_buckets: 64
                           use_time_encoding: true }}
      input_preprocessor {{ contextual_preprocessor {{{ACTION_ENCODER if actions else ""}
        content_encoder {{ slice_content_encoder {{ }} }}
        content_mlp {{ simple_mlp {{ hidden_dim: 16 }} }}
      }} }}
      output_postprocessor {{ layernorm_postprocessor {{ }} }}
    }}"""


def model_config(
    groups: str, channels: str, tower: str, kind: str = "dlrm_hstu", max_seq_len: int = 14
) -> str:
    """A ``model_config`` of ``kind`` (dlrm_hstu / ultra_hstu) from the pieces above."""
    return f"""
model_config {{{groups}
  {kind} {{{channels}
    fusion_mtl_tower {{ {tower} }}
    max_seq_len: {max_seq_len}
    item_embedding_hidden_dim: 16
  }}
  kernel: PYTORCH
}}
"""


def model(actions: bool = False) -> str:
    """The dlrm_hstu model config; with ``actions`` TorchEasyRec's documented shape."""
    groups = history_groups() + candidate_groups()
    if actions:
        groups += group("contextual", "user_id", "DEEP") + action_groups()
    tower = (
        f'mlp {{ hidden_units: [16] activation: "nn.SiLU" use_ln: true }} {ACTION_TASKS}'
        if actions
        else f"mlp {{ hidden_units: [16] }} {TASKS}"
    )
    return model_config(groups, hstu(actions=actions), tower)


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


def assert_config_error_at(
    build: Callable[[str], Any], text: str, old: str, new: str, field: str, message: str
) -> None:
    """``build`` of ``text`` with ``old`` replaced by ``new`` raises a ConfigError at ``field``.

    Args:
        build: builds a model from a config text.
        text: a config text that builds; it must contain ``old``.
        old: the text to replace (every occurrence).
        new: its replacement.
        field: the field path the error must name.
        message: a regular expression the error must match.
    """
    assert old in text
    with pytest.raises(ConfigError, match=message) as info:
        build(text.replace(old, new))
    assert field in str(info.value)
