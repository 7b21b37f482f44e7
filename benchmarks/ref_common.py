"""Helpers shared by the reference implementations (torch + numpy only, no recforge import).

The references run as scripts (``python benchmarks/ref_hand.py ...``), some of them in the
DeepCTR-Torch virtualenv, which has neither recforge nor pyarrow: this module only needs numpy
and torch.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FRAPPE_FIELDS = (
    "user",
    "item",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
)
FRAPPE_BUCKETS = 5382  # ids are global indices 0..5381; recforge gives every field such a table


def load_frappe(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ids int64 [N, 10], labels float32 [N])`` of a Frappe CSV (header: label + fields)."""
    with open(path) as f:
        header = f.readline().strip().split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64)
    columns = [header.index(name) for name in FRAPPE_FIELDS]
    return data[:, columns], data[:, header.index("label")].astype(np.float32)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (ties get half credit), as ``sklearn.metrics.roc_auc_score``."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank of each group of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    positives = labels > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def time_inference(run: Callable[[], object], repeats: int = 3) -> float:
    """Median seconds of ``repeats`` calls of ``run`` (after one warm-up call)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_result(path: str, **values: object) -> None:
    """Writes the reference's measurements as JSON for the harness."""
    Path(path).write_text(json.dumps(values, indent=1))
