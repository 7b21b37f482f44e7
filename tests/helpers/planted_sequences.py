"""Random user histories for the planted-signal HSTU data (hstu_match and dlrm_hstu tests).

Both helpers draw each row's history the same way and write the history as the "|"-joined
columns ``uih__video_id`` / ``uih__action_timestamp``; what they plant on top differs.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def draw_history(
    rng: np.random.Generator, num_items: int, min_len: int, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """One history: ``min_len..max_len`` random items and their increasing timestamps."""
    n = int(rng.integers(min_len, max_len + 1))
    items = rng.integers(0, num_items, n)
    ts = np.cumsum(rng.integers(1, 600, n)) + 1_000_000
    return items, ts


def joined(rows: list[np.ndarray]) -> pa.Array:
    """Each row's values "|"-joined (a sequence column)."""
    return pa.array(["|".join(map(str, r)) for r in rows])


def history_columns(items: list[np.ndarray], times: list[np.ndarray]) -> dict[str, pa.Array]:
    """The history columns ``uih__video_id`` / ``uih__action_timestamp``."""
    return {"uih__video_id": joined(items), "uih__action_timestamp": joined(times)}


def write_train_eval(
    directory: str, table: Callable[[int, int], pa.Table], train_rows: int, eval_rows: int
) -> None:
    """``train.parquet`` (``table(train_rows, seed 0)``) and ``eval.parquet`` (seed 1)."""
    pq.write_table(table(train_rows, 0), os.path.join(directory, "train.parquet"))
    pq.write_table(table(eval_rows, 1), os.path.join(directory, "eval.parquet"))
