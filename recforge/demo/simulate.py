"""A synthetic Criteo-like CTR data set with planted signal.

The configs that train on it are ``examples/*_demo.config`` (see :mod:`recforge.demo.configs`).

Every row is one impression of an item to a user. The click probability follows a known
logistic model (so the best possible AUC is known):

``logit = bias + user + item + category + city + device + mean(tags) + hour + age + price
+ <U[user_group], V[category]> + sequence_effect * (overlap - 0.6)``

with per-id effects drawn once per ``seed`` (the "world", shared by train and eval), a
rank-4 interaction between ``user_group`` and ``category`` that only models crossing the two
can learn, and ``overlap``: whether the user's behaviour sequence of the row (the items
clicked before, ``click_seq__item_id`` with their categories in ``click_seq__category``)
holds an item of the candidate's category (see :mod:`recforge.demo.sequences`).

``sequence_effect`` is 0 in the default demo data (the sequence columns are there, the
labels ignore them) and ``SEQUENCE_DEMO_EFFECT`` (4, :mod:`recforge.demo.sequences`) in the
*sequence demo* data that ``multi_tower_din`` trains on
(``generate_demo_data(..., sequence_effect=4.0)``, by default into ``data/demo_sequence``):
there a model without the sequence reaches ~0.71 AUC and MultiTowerDIN ~0.79.

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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recforge.demo.sequences import behaviour_sequences, join_sequences
from recforge.demo.world import (
    CITIES,
    DEVICES,
    NUM_ITEMS,
    NUM_TAGS,
    NUM_USERS,
    DemoWorld,
    skewed_ids,
)


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
    user = skewed_ids(rng, NUM_USERS, num_rows, 0.8)
    item = skewed_ids(rng, NUM_ITEMS, num_rows, 1.0)
    category = world.item_category[item]
    group = world.user_group[user]
    city = world.user_city[user]
    age = world.user_age[user]
    device = rng.choice(len(DEVICES), num_rows, p=[0.45, 0.4, 0.15])
    hour = rng.integers(0, 24, num_rows)
    log_price = world.item_log_price[item] + rng.normal(0, 0.2, num_rows)
    seq_items, seq_lengths, overlap = behaviour_sequences(world, seed, split, item)
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
            "click_seq__item_id": join_sequences(seq_items, seq_lengths),
            "click_seq__category": join_sequences(world.item_category[seq_items], seq_lengths),
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
        sequence_effect: see :func:`simulate_demo_table`; ``SEQUENCE_DEMO_EFFECT`` (of
            :mod:`recforge.demo.sequences`) writes the sequence demo data.

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
