"""The behaviour sequences of the demo data: each row's earlier clicks, and their overlap.

Half of the sequences are drawn around the candidate's category (1-3 of their items), the
others at random; ``overlap`` (a sequence item shares the candidate's category) is the term
only a model comparing the candidate with the sequence (DIN's target attention) can use. It
moves the label only in the *sequence demo* data (``sequence_effect=SEQUENCE_DEMO_EFFECT``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recforge.demo.world import NUM_CATEGORIES, NUM_ITEMS, DemoWorld, skewed_ids

#: the longest behaviour sequence drawn (the configs' ``sequence_length``)
MAX_SEQUENCE_LENGTH = 20
#: logit gap, in the sequence demo data, between rows whose sequence holds the candidate's
#: category and the others
SEQUENCE_DEMO_EFFECT = 4.0
#: where the sequence demo data goes by default (the multi_tower_din example reads it)
SEQUENCE_DEMO_DIR = "data/demo_sequence"
#: the columns of the behaviour sequence (``sequence_feature`` "click_seq")
SEQUENCE_COLUMNS = ("click_seq__item_id", "click_seq__category")


def behaviour_sequences(
    world: DemoWorld, seed: int, split: int, item: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw each row's earlier clicks, from their own random stream.

    Args:
        world: the world (item categories).
        seed: the world seed.
        split: the split's stream (train and eval draw different rows).
        item: ``int [B]`` the candidate item of each row.

    Returns:
        ``(items int [B, MAX_SEQUENCE_LENGTH], lengths int [B], overlap bool [B])``: the
        clicked items (valid up to ``lengths``; 0 to 20 of them) and whether one of them has
        the candidate ``item``'s category.

    """
    rng = np.random.default_rng([seed, split, 2])
    num_rows, width = len(item), MAX_SEQUENCE_LENGTH
    lengths = rng.integers(1, width + 1, num_rows)
    lengths[rng.random(num_rows) < 0.03] = 0
    items = skewed_ids(rng, NUM_ITEMS, num_rows * width, 1.0).reshape(num_rows, width)
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


def join_sequences(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """Join each row's valid values with ``";"``.

    Args:
        values: ``int [B, T]`` per-row values.
        lengths: ``int [B]`` how many of each row's values are valid.

    Returns:
        ``string [B]``: ``"12;407;3"``, null where the length is 0.

    """
    strings = values.astype(str).astype(object)
    joined = [";".join(row[:n]) for row, n in zip(strings, lengths)]
    return pa.array(joined, pa.string(), mask=lengths == 0)
