"""A synthetic Criteo-like CTR data set with planted signal, and configs that train on it.

Every row is one impression of an item to a user. The click probability follows a known
logistic model (so the best possible AUC is known):

``logit = bias + user + item + category + city + device + mean(tags) + hour + age + price
+ <U[user_group], V[category]> + sequence_effect * (overlap - 0.6)``

with per-id effects drawn once per ``seed`` (the "world", shared by train and eval), a
rank-4 interaction between ``user_group`` and ``category`` that only models crossing the two
can learn, and ``overlap``: whether the user's behaviour sequence of the row (the items
clicked before, ``click_seq__item_id`` with their categories in ``click_seq__category``)
holds an item of the candidate's category. Half of the sequences are drawn around the
candidate's category (1-3 of their items), the others at random, so only a model that
compares the candidate with the sequence (DIN's target attention) can use this term.

``sequence_effect`` is 0 in the default demo data (the sequence columns are there, the
labels ignore them) and ``SEQUENCE_DEMO_EFFECT`` (4) in the *sequence demo* data that
``multi_tower_din`` trains on (``generate_demo_data(..., sequence_effect=4.0)``, by default
into ``data/demo_sequence``): there a model without the sequence reaches ~0.71 AUC and
MultiTowerDIN ~0.79.

A second label, ``label_cvr``, is a conversion: only a click can convert, with probability

``sigmoid(cvr_bias + cvr_category + cvr_user + 0.5 * item - price_term + age_term + device)``

(partly the click's features, partly its own), so it is correlated with ``label`` but is a
different task for multi-task models. It is drawn from its own random stream: every other
column is the same as without it. Columns (nulls where noted):

=============  ==============================================  =========================
column         values                                          config feature
=============  ==============================================  =========================
label          int 0/1 (~35% positive)                          label
label_cvr      int 0/1, 1 only where label is 1 (~11% positive)  second label (multi-task)
click_seq__    ``"12;407;3"``: 1-20 earlier clicked item ids,   sequence_feature element
item_id        most recent first (3% null: no history)          (id, num_buckets)
click_seq__    ``"4;31;4"``: the categories of those items      sequence_feature element
category       (null where click_seq__item_id is)               (id, num_buckets)
user_id        strings ``"u123"`` (2,000 users, skewed; 1% null)  id, hash_bucket_size
item_id        int 0..999 (skewed)                             id, num_buckets
category       int 0..49 (fixed per item)                      id, num_buckets
user_group     int 0..9 (fixed per user)                       id, num_buckets
city           30 city names (fixed per user; 5% null)         id, vocab_list (25 + OOV)
device         ``"ios"``, ``"android"``, ``"web"``             id, vocab_list
tags           ``"tag3|tag17"``: 1-4 of 40 tags (8% null/empty)  id, multi-value, separator
hour           int 0..23                                       id, num_buckets
age            float 18..70 (fixed per user; 10% null)         raw, boundaries
price          float, log-normal per item (5% null)            raw, log10 normalizer
ctr_hist       float in [0, 1], a noisy item click rate        raw
=============  ==============================================  =========================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUM_USERS = 2000
NUM_ITEMS = 1000
NUM_CATEGORIES = 50
NUM_GROUPS = 10
NUM_TAGS = 40
CITIES = [
    "beijing", "shanghai", "guangzhou", "shenzhen", "hangzhou", "chengdu", "wuhan", "xian",
    "nanjing", "tianjin", "suzhou", "chongqing", "qingdao", "dalian", "xiamen", "kunming",
    "harbin", "jinan", "changsha", "zhengzhou", "shenyang", "fuzhou", "hefei", "nanning",
    "ningbo", "lhasa", "urumqi", "haikou", "lanzhou", "yinchuan",
]  # fmt: skip
#: the configs' vocabulary: the last 5 cities are out of vocabulary on purpose.
CITY_VOCAB = CITIES[:25]
DEVICES = ["ios", "android", "web"]
AGE_BOUNDARIES = [18, 25, 30, 35, 40, 45, 50, 60]
INTERACTION_RANK = 4
#: the longest behaviour sequence drawn (the configs' ``sequence_length``)
MAX_SEQUENCE_LENGTH = 20
#: logit gap, in the sequence demo data, between rows whose sequence holds the candidate's
#: category and the others
SEQUENCE_DEMO_EFFECT = 4.0
#: where the sequence demo data goes by default (the multi_tower_din example reads it)
SEQUENCE_DEMO_DIR = "data/demo_sequence"
#: the columns of the behaviour sequence (``sequence_feature`` "click_seq")
SEQUENCE_COLUMNS = ("click_seq__item_id", "click_seq__category")


@dataclass
class DemoWorld:
    """The hidden parameters of the click model (drawn once per seed)."""

    bias: float
    user_effect: np.ndarray  # [NUM_USERS]
    user_group: np.ndarray  # [NUM_USERS] int
    user_city: np.ndarray  # [NUM_USERS] int
    user_age: np.ndarray  # [NUM_USERS] float
    item_effect: np.ndarray  # [NUM_ITEMS]
    item_category: np.ndarray  # [NUM_ITEMS] int
    item_log_price: np.ndarray  # [NUM_ITEMS]
    category_effect: np.ndarray  # [NUM_CATEGORIES]
    city_effect: np.ndarray  # [len(CITIES)]
    device_effect: np.ndarray  # [len(DEVICES)]
    tag_effect: np.ndarray  # [NUM_TAGS]
    group_factors: np.ndarray  # [NUM_GROUPS, INTERACTION_RANK]
    category_factors: np.ndarray  # [NUM_CATEGORIES, INTERACTION_RANK]
    cvr_bias: float
    cvr_category_effect: np.ndarray  # [NUM_CATEGORIES]
    cvr_user_effect: np.ndarray  # [NUM_USERS]

    @staticmethod
    def create(seed: int = 0) -> DemoWorld:
        """Draw the world of ``seed``."""
        rng = np.random.default_rng([seed, 0])
        cvr_rng = np.random.default_rng([seed, 0, 1])  # its own stream: the CTR world is unchanged
        return DemoWorld(
            bias=-1.6,
            user_effect=rng.normal(0, 0.3, NUM_USERS),
            user_group=rng.integers(0, NUM_GROUPS, NUM_USERS),
            user_city=rng.integers(0, len(CITIES), NUM_USERS),
            user_age=np.clip(rng.normal(38, 12, NUM_USERS), 18, 70),
            item_effect=rng.normal(0, 0.7, NUM_ITEMS),
            item_category=rng.integers(0, NUM_CATEGORIES, NUM_ITEMS),
            item_log_price=rng.normal(4.0, 1.0, NUM_ITEMS),
            category_effect=rng.normal(0, 1.0, NUM_CATEGORIES),
            city_effect=rng.normal(0, 0.6, len(CITIES)),
            device_effect=np.array([0.4, 0.0, -0.5]),
            tag_effect=rng.normal(0, 1.5, NUM_TAGS),
            group_factors=rng.normal(0, 1.0, (NUM_GROUPS, INTERACTION_RANK)),
            category_factors=rng.normal(0, 1.0, (NUM_CATEGORIES, INTERACTION_RANK)),
            cvr_bias=-0.9,
            cvr_category_effect=cvr_rng.normal(0, 1.0, NUM_CATEGORIES),
            cvr_user_effect=cvr_rng.normal(0, 0.5, NUM_USERS),
        )


def _skewed(rng: np.random.Generator, n: int, size: int, power: float = 1.1) -> np.ndarray:
    """Draw ``size`` ids in ``[0, n)`` with Zipf-like popularity (shuffled ranks)."""
    weights = 1.0 / np.arange(1, n + 1) ** power
    ranks = rng.choice(n, size=size, p=weights / weights.sum())
    return np.random.default_rng(n).permutation(n)[ranks]


def _age_effect(age: np.ndarray) -> np.ndarray:
    return 0.6 * np.exp(-(((age - 30.0) / 8.0) ** 2)) - 0.3 * (age > 55)


def _conversions(
    world: DemoWorld,
    seed: int,
    split: int,
    label: np.ndarray,
    user: np.ndarray,
    item: np.ndarray,
    log_price: np.ndarray,
    age: np.ndarray,
    device: np.ndarray,
) -> np.ndarray:
    """``label_cvr``: each click converts with the world's conversion probability."""
    category = world.item_category[item]
    logit = (
        world.cvr_bias
        + world.cvr_category_effect[category]
        + world.cvr_user_effect[user]
        + 0.5 * world.item_effect[item]
        - 0.8 * (log_price - 4.0)
        + 0.03 * (age - 38.0)
        + np.array([0.3, 0.0, -0.4])[device]
    )
    probability = 1.0 / (1.0 + np.exp(-logit))
    rng = np.random.default_rng([seed, split, 1])
    return (label * (rng.random(len(label)) < probability)).astype(np.int64)


def _behaviour_sequences(
    world: DemoWorld, seed: int, split: int, item: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw each row's earlier clicks, from their own random stream.

    Returns:
        ``(items int [B, MAX_SEQUENCE_LENGTH], lengths int [B], overlap bool [B])``: the
        clicked items (valid up to ``lengths``; 0 to 20 of them) and whether one of them has
        the candidate ``item``'s category.

    """
    rng = np.random.default_rng([seed, split, 2])
    num_rows, width = len(item), MAX_SEQUENCE_LENGTH
    lengths = rng.integers(1, width + 1, num_rows)
    lengths[rng.random(num_rows) < 0.03] = 0
    items = _skewed(rng, NUM_ITEMS, num_rows * width, 1.0).reshape(num_rows, width)
    # half the rows: 1-3 random positions hold items of the candidate's category
    by_category = np.argsort(world.item_category, kind="stable")
    counts = np.bincount(world.item_category, minlength=NUM_CATEGORIES)
    starts = np.cumsum(counts) - counts
    category = world.item_category[item]
    pick = starts[category][:, None] + (
        rng.random((num_rows, 3)) * counts[category][:, None]
    ).astype(np.int64)
    planted = by_category[pick]  # [B, 3] items of the candidate's category
    num_planted = np.where(rng.random(num_rows) < 0.5, rng.integers(1, 4, num_rows), 0)
    num_planted = np.minimum(num_planted, lengths)
    order = np.argsort(
        np.where(np.arange(width)[None, :] < lengths[:, None], rng.random((num_rows, width)), 2),
        axis=1,
    )  # valid positions first, in random order
    for k in range(3):
        rows = np.flatnonzero(num_planted > k)
        items[rows, order[rows, k]] = planted[rows, k]
    valid = np.arange(width)[None, :] < lengths[:, None]
    overlap = ((world.item_category[items] == category[:, None]) & valid).any(axis=1)
    return items, lengths, overlap


def _join_sequences(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """``[B, T]`` ints with per-row lengths -> ``";"``-joined strings (null when empty)."""
    strings = values.astype(str).astype(object)
    joined = [";".join(row[:n]) for row, n in zip(strings, lengths)]
    return pa.array(joined, pa.string(), mask=lengths == 0)


def simulate_demo_table(
    num_rows: int, seed: int = 0, split: int = 1, sequence_effect: float = 0.0
) -> tuple[pa.Table, np.ndarray]:
    """Draw rows of the demo table together with their true click probabilities.

    Args:
        num_rows: rows to draw.
        seed: the world seed (effects shared by every split of one seed).
        split: a per-split stream (train and eval draw different rows of the same world).
        sequence_effect: logit gap between rows whose behaviour sequence holds the
            candidate's category and the others (0: labels ignore the sequence).

    Returns:
        ``(table, probability)``: the table (columns as in the module docstring) and the
        true click probability of each row, ``float64 [num_rows]``.

    """
    world = DemoWorld.create(seed)
    rng = np.random.default_rng([seed, split])
    user = _skewed(rng, NUM_USERS, num_rows, 0.8)
    item = _skewed(rng, NUM_ITEMS, num_rows, 1.0)
    category = world.item_category[item]
    group = world.user_group[user]
    city = world.user_city[user]
    age = world.user_age[user]
    device = rng.choice(len(DEVICES), num_rows, p=[0.45, 0.4, 0.15])
    hour = rng.integers(0, 24, num_rows)
    log_price = world.item_log_price[item] + rng.normal(0, 0.2, num_rows)
    seq_items, seq_lengths, overlap = _behaviour_sequences(world, seed, split, item)
    num_tags = rng.integers(1, 5, num_rows)
    tag_ids = rng.integers(0, NUM_TAGS, (num_rows, 4))
    tag_mask = np.arange(4)[None, :] < num_tags[:, None]
    tag_mean = (world.tag_effect[tag_ids] * tag_mask).sum(1) / num_tags

    logit = (
        world.bias
        + world.user_effect[user]
        + world.item_effect[item]
        + world.category_effect[category]
        + world.city_effect[city]
        + world.device_effect[device]
        + tag_mean
        + 0.7 * np.sin(2 * np.pi * hour / 24.0)
        + _age_effect(age)
        - 0.6 * (log_price - 4.0)
        + 0.4 * np.einsum("nr,nr->n", world.group_factors[group], world.category_factors[category])
        + sequence_effect * (overlap - 0.6)
    )
    probability = 1.0 / (1.0 + np.exp(-logit))
    label = (rng.random(num_rows) < probability).astype(np.int64)
    item_ctr = 1.0 / (1.0 + np.exp(-(world.bias + world.item_effect)))
    ctr_hist = np.clip(item_ctr[item] + rng.normal(0, 0.05, num_rows), 0.0, 1.0)

    def nulls(rate: float) -> np.ndarray:
        return rng.random(num_rows) < rate

    tag_strings = np.array([f"tag{t}" for t in range(NUM_TAGS)], dtype=object)
    tags = tag_strings[tag_ids[:, 0]]
    for k in range(1, 4):
        more = num_tags > k
        tags[more] = tags[more] + "|" + tag_strings[tag_ids[more, k]]
    tags[nulls(0.04)] = ""
    user_strings = np.array([f"u{u}" for u in range(NUM_USERS)], dtype=object)
    table = pa.table(
        {
            "label": pa.array(label),
            "user_id": pa.array(user_strings[user], pa.string(), mask=nulls(0.01)),
            "item_id": pa.array(item.astype(np.int64)),
            "category": pa.array(category.astype(np.int64)),
            "user_group": pa.array(group.astype(np.int64)),
            "city": pa.array(np.array(CITIES, dtype=object)[city], pa.string(), mask=nulls(0.05)),
            "device": pa.array(np.array(DEVICES, dtype=object)[device], pa.string()),
            "tags": pa.array(tags, pa.string(), mask=nulls(0.04)),
            "hour": pa.array(hour.astype(np.int64)),
            "age": pa.array(np.round(age, 1), pa.float64(), mask=nulls(0.10)),
            "price": pa.array(np.round(np.exp(log_price), 2), pa.float64(), mask=nulls(0.05)),
            "ctr_hist": pa.array(ctr_hist.astype(np.float32)),
            "click_seq__item_id": _join_sequences(seq_items, seq_lengths),
            "click_seq__category": _join_sequences(world.item_category[seq_items], seq_lengths),
            "label_cvr": pa.array(
                _conversions(world, seed, split, label, user, item, log_price, age, device)
            ),
        }
    )
    return table, probability


def generate_demo_data(
    output_dir: str,
    num_rows: int = 60000,
    num_files: int = 2,
    seed: int = 0,
    sequence_effect: float = 0.0,
) -> dict[str, str]:
    """Write the demo train and eval parquet files.

    Args:
        output_dir: folder to write into (created if needed).
        num_rows: training rows, split evenly over ``num_files`` files
            ``train_{i}.parquet``; ``eval.parquet`` gets ``num_rows // 4`` further rows of
            the same world.
        num_files: number of training files.
        seed: the world seed (same seed, same data).
        sequence_effect: see :func:`simulate_demo_table`; ``SEQUENCE_DEMO_EFFECT`` writes
            the sequence demo data.

    Returns:
        ``{"train": "<output_dir>/train_*.parquet", "eval": "<output_dir>/eval.parquet"}``.

    """
    os.makedirs(output_dir, exist_ok=True)
    train, _ = simulate_demo_table(num_rows, seed, split=1, sequence_effect=sequence_effect)
    bounds = np.linspace(0, num_rows, max(num_files, 1) + 1).astype(int)
    for i in range(max(num_files, 1)):
        part = train.slice(bounds[i], bounds[i + 1] - bounds[i])
        pq.write_table(part, os.path.join(output_dir, f"train_{i}.parquet"))
    evaluation, _ = simulate_demo_table(
        max(num_rows // 4, 1), seed, split=2, sequence_effect=sequence_effect
    )
    pq.write_table(evaluation, os.path.join(output_dir, "eval.parquet"))
    return {
        "train": os.path.join(output_dir, "train_*.parquet"),
        "eval": os.path.join(output_dir, "eval.parquet"),
    }


# ---------------------------------------------------------------------------- configs
DEMO_MODELS = ("deepfm", "multi_tower", "multi_tower_din")
#: multi-task demo models: tasks ``ctr`` (label) and ``cvr`` (label_cvr)
MULTI_TASK_DEMO_MODELS = ("simple_multi_task", "mmoe", "ple", "dbmtl")

_SPARSE = [
    ("user_id", "hash_bucket_size: 4000"),
    ("item_id", "num_buckets: 1000"),
    ("category", f"num_buckets: {NUM_CATEGORIES}"),
    ("user_group", f"num_buckets: {NUM_GROUPS}"),
    ("city", "vocab_list: [{}]".format(", ".join(f'"{c}"' for c in CITY_VOCAB))),
    ("device", "vocab_list: [{}]".format(", ".join(f'"{d}"' for d in DEVICES))),
    ("tags", 'hash_bucket_size: 100\n        separator: "|"\n        pooling: "mean"'),
    ("hour", "num_buckets: 24"),
]
_USER_FEATURES = ["user_id", "user_group", "city", "device", "age"]
_ITEM_FEATURES = ["item_id", "category", "tags", "hour", "price", "ctr_hist"]


def _sequence_feature_config(embedding_dim: int) -> str:
    """The ``click_seq`` sequence feature; its elements share the candidate's tables."""
    elements = [
        ("item_id", "num_buckets: 1000"),
        ("category", f"num_buckets: {NUM_CATEGORIES}"),
    ]
    lines = [
        "feature_configs {",
        "    sequence_feature {",
        '        sequence_name: "click_seq"',
        f"        sequence_length: {MAX_SEQUENCE_LENGTH}",
        '        sequence_delim: ";"',
    ]
    for name, spec in elements:
        lines += [
            "        features {",
            "            id_feature {",
            f'                feature_name: "{name}"',
            f"                {spec}",
            f"                embedding_dim: {embedding_dim}",
            f'                embedding_name: "{name}_emb"',
            "            }",
            "        }",
        ]
    return "\n".join([*lines, "    }", "}"])


def _feature_configs(embedding_dim: int, sequences: bool = False) -> str:
    lines = []
    for name, spec in _SPARSE:
        lines.append(
            f'feature_configs {{\n    id_feature {{\n        feature_name: "{name}"\n'
            f"        {spec}\n        embedding_dim: {embedding_dim}\n    }}\n}}"
        )
    boundaries = ", ".join(str(b) for b in AGE_BOUNDARIES)
    lines.append(
        'feature_configs {\n    raw_feature {\n        feature_name: "age"\n'
        f"        boundaries: [{boundaries}]\n        embedding_dim: {embedding_dim}\n    }}\n}}"
    )
    lines.append(
        'feature_configs {\n    raw_feature {\n        feature_name: "price"\n'
        '        normalizer: "method=log10,threshold=1e-6,default=0"\n    }\n}'
    )
    lines.append('feature_configs {\n    raw_feature {\n        feature_name: "ctr_hist"\n    }\n}')
    if sequences:
        lines.append(_sequence_feature_config(embedding_dim))
    return "\n".join(lines)


def _group(name: str, features: list[str], group_type: str) -> str:
    names = "\n".join(f'        feature_names: "{f}"' for f in features)
    return (
        f'    feature_groups {{\n        group_name: "{name}"\n{names}\n'
        f"        group_type: {group_type}\n    }}"
    )


def _render(fields: list[tuple[str, Any]], indent: int) -> str:
    """Text-proto lines of ``(name, value)`` fields; a list value is a nested message."""
    pad = " " * indent
    lines = []
    for name, value in fields:
        if isinstance(value, list):
            inner = _render(value, indent + 4)
            lines.append(f"{pad}{name} {{\n{inner}\n{pad}}}" if inner else f"{pad}{name} {{}}")
        else:
            lines.append(f"{pad}{name}: {value}")
    return "\n".join(lines)


def _mlp(*units: int) -> list[tuple[str, Any]]:
    return [("hidden_units", "[" + ", ".join(str(u) for u in units) + "]")]


def _task_tower(name: str, label: str, *extra: tuple[str, Any]) -> tuple[str, Any]:
    fields: list[tuple[str, Any]] = [
        ("tower_name", f'"{name}"'),
        ("label_name", f'"{label}"'),
        ("mlp", _mlp(32)),
        *extra,
        ("metrics", [("auc", [])]),
        ("losses", [("binary_cross_entropy", [])]),
    ]
    return ("task_towers", fields)


def _multi_task_body(model: str) -> str:
    ctr, cvr = _task_tower("ctr", "label"), _task_tower("cvr", "label_cvr")
    if model == "simple_multi_task":
        fields = [ctr, cvr]
    elif model == "mmoe":
        fields = [("expert_mlp", _mlp(128, 64)), ("num_expert", 3), ctr, cvr]
    elif model == "ple":
        layer = [
            ("network_name", '"layer1"'),
            ("expert_num_per_task", 1),
            ("share_num", 2),
            ("task_expert_net", _mlp(128, 64)),
        ]
        fields = [("extraction_networks", layer), ctr, cvr]
    else:
        relation = (("relation_tower_names", '"ctr"'), ("relation_mlp", _mlp(32)))
        cvr = _task_tower("cvr", "label_cvr", *relation)
        fields = [("bottom_mlp", _mlp(128)), ("expert_mlp", _mlp(64)), ("num_expert", 3)]
        fields += [ctr, cvr]
    return _render([(model, fields)], 4)


def _model_config(model: str) -> str:
    sparse = [name for name, _ in _SPARSE] + ["age"]
    if model in MULTI_TASK_DEMO_MODELS:
        group = _group("all", sparse + ["price", "ctr_hist"], "DEEP")
        return "model_config {\n" + group + "\n" + _multi_task_body(model) + "\n}"
    if model == "deepfm":
        groups = [
            _group("wide", sparse, "WIDE"),
            _group("fm", sparse, "DEEP"),
            _group("deep", sparse + ["price", "ctr_hist"], "DEEP"),
        ]
        body = (
            "    deepfm {\n        deep {\n            hidden_units: [128, 64]\n        }\n"
            "        final {\n            hidden_units: [32]\n        }\n    }"
        )
    elif model in ("multi_tower", "multi_tower_din"):
        groups = [_group("user", _USER_FEATURES, "DEEP"), _group("item", _ITEM_FEATURES, "DEEP")]
        towers = [
            ("towers", [("input", f'"{name}"'), ("mlp", _mlp(64, 32))]) for name in ("user", "item")
        ]
        fields = [*towers, ("final", _mlp(32))]
        if model == "multi_tower_din":
            # the candidate (query) and the behaviour sequence of its attention
            seq = ["item_id", "category", *SEQUENCE_COLUMNS]
            groups.append(_group("click_seq", seq, "SEQUENCE"))
            din = ("din_towers", [("input", '"click_seq"'), ("attn_mlp", _mlp(32))])
            fields = [*towers, din, ("final", _mlp(32))]
        body = _render([(model, fields)], 4)
    else:
        known = DEMO_MODELS + MULTI_TASK_DEMO_MODELS
        raise ValueError(f"demo model must be one of {known}, found '{model}'")
    return (
        "model_config {\n"
        + "\n".join(groups)
        + "\n"
        + body
        + "\n    metrics {\n        auc {}\n    }\n"
        + "    losses {\n        binary_cross_entropy {}\n    }\n}"
    )


def demo_config_text(model: str = "deepfm", data_dir: Optional[str] = None) -> str:
    """Return a runnable text-format ``EasyRecConfig`` over the demo data.

    ``examples/<model>_demo.config`` is exactly ``demo_config_text("<model>")`` for every
    model of ``DEMO_MODELS`` and ``MULTI_TASK_DEMO_MODELS``. Multi-task configs have the
    label fields ``label`` and ``label_cvr`` and the tasks ``ctr`` and ``cvr``.

    Args:
        model: one of ``DEMO_MODELS`` (``"deepfm"``, ``"multi_tower"``,
            ``"multi_tower_din"``) or
            ``MULTI_TASK_DEMO_MODELS`` (``"simple_multi_task"``, ``"mmoe"``, ``"ple"``,
            ``"dbmtl"``).
        data_dir: where :func:`generate_demo_data` wrote the files (relative paths are
            relative to the directory the pipeline runs in); default ``data/demo``, and
            ``SEQUENCE_DEMO_DIR`` (the sequence demo data) for ``multi_tower_din``.

    Returns:
        The config text (parse with ``google.protobuf.text_format``).

    Raises:
        ValueError: unknown model.

    """
    sequence_demo = model == "multi_tower_din"
    if data_dir is None:
        data_dir = SEQUENCE_DEMO_DIR if sequence_demo else "data/demo"
    effect = f", sequence_effect={SEQUENCE_DEMO_EFFECT}" if sequence_demo else ""
    header = (
        f"# {model} on the synthetic {'sequence ' if sequence_demo else ''}demo data: write it"
        " with\n"
        f'#   python -c "from recforge.datasets import generate_demo_data; '
        f"generate_demo_data('{data_dir}'{effect})\"\n"
    )
    model_text = _model_config(model)
    labels = '    label_fields: "label"\n'
    if model in MULTI_TASK_DEMO_MODELS:
        labels += '    label_fields: "label_cvr"\n'
    return (
        header
        + f'train_input_path: "{data_dir}/train_*.parquet"\n'
        + f'eval_input_path: "{data_dir}/eval.parquet"\n'
        + f'model_dir: "experiments/{model}_demo"\n'
        + "train_config {\n"
        + "    sparse_optimizer {\n        adagrad_optimizer {\n            lr: 0.05\n        }\n"
        + "        constant_learning_rate {}\n    }\n"
        + "    dense_optimizer {\n        adam_optimizer {\n            lr: 0.002\n        }\n"
        + "        constant_learning_rate {}\n    }\n"
        + "    num_epochs: 3\n}\n"
        + "eval_config {\n}\n"
        + "data_config {\n"
        + "    fg_mode: FG_DAG\n"
        + "    batch_size: 512\n    eval_batch_size: 4096\n    dataset_type: ParquetDataset\n"
        + labels
        + "    num_workers: 1\n    shuffle: true\n}\n"
        + _feature_configs(16, sequences=sequence_demo)
        + "\n"
        + model_text
        + "\n"
    )
