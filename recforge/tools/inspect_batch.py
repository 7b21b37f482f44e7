"""``recforge inspect-batch --config C``: the first parsed batch, feature by feature.

Shows what the model receives for the first rows of the train (or eval) input: the ids (and
weights) of every sparse feature, the values of every dense feature, the labels, sample
weights and derived columns, so that a parsing setting (separators, bucketizing, hashing,
defaults) can be checked against the raw data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.utils.logging_util import setup_logging
from recforge.utils.pipeline import build_dataset, build_features, prepare_config
from recforge.validate import first_batch


def _rounded(values: list[Any]) -> list[Any]:
    return [round(v, 6) if isinstance(v, float) else v for v in values]


def _rows(tensor: torch.Tensor, num_rows: int) -> list[Any]:
    """The first rows of a ``[B]`` or ``[B, d]`` tensor as lists (``d == 1``: scalars)."""
    rows = tensor[:num_rows]
    if rows.dim() == 2 and rows.shape[1] == 1:
        rows = rows[:, 0]
    return [_rounded(r) if isinstance(r, list) else _rounded([r])[0] for r in rows.tolist()]


def describe_batch(batch: Batch, num_rows: int = 5) -> dict[str, Any]:
    """The first ``num_rows`` rows of ``batch`` per feature, as JSON-ready data.

    Args:
        batch: a parsed batch.
        num_rows: rows shown of each feature.

    Returns:
        ``{"batch_size": B, "sparse": {feature: {"ids": [[...] per row], "weights": ...}},
        "dense": {feature: [values per row]}, "labels": ..., "sample_weights": ...,
        "extras": ...}``.

    """
    sparse: dict[str, Any] = {}
    for name, jagged in batch.sparse_features.to_dict().items():
        lengths = jagged.lengths()[:num_rows].tolist()
        values = jagged.values()[: sum(lengths)]
        entry: dict[str, Any] = {"ids": [r.tolist() for r in torch.split(values, lengths)]}
        weights = jagged.weights_or_none()
        if weights is not None:
            entry["weights"] = [
                _rounded(r.tolist()) for r in torch.split(weights[: sum(lengths)], lengths)
            ]
        sparse[name] = entry
    dense = {name: _rows(t, num_rows) for name, t in batch.dense_features.to_dict().items()}
    return {
        "batch_size": batch.batch_size,
        "rows_shown": min(num_rows, batch.batch_size),
        "sparse": sparse,
        "dense": dense,
        "labels": {k: _rows(v, num_rows) for k, v in batch.labels.items()},
        "sample_weights": {k: _rows(v, num_rows) for k, v in batch.sample_weights.items()},
        "extras": {k: _rows(v, num_rows) for k, v in batch.extras.items()},
    }


def format_batch(described: dict[str, Any]) -> list[str]:
    """:func:`describe_batch`'s result as text lines: one per feature, rows separated by ``|``."""
    entries: list[tuple[str, str, list[Any]]] = []
    for name, entry in described["sparse"].items():
        entries.append(("sparse", name, entry["ids"]))
        if "weights" in entry:
            entries.append(("weights", name, entry["weights"]))
    for kind in ("dense", "labels", "sample_weights", "extras"):
        entries.extend((kind.rstrip("s"), name, rows) for name, rows in described[kind].items())
    width = max((len(name) for _, name, _ in entries), default=0)
    lines = [f"batch of {described['batch_size']} rows, the first {described['rows_shown']}:"]
    for kind, name, rows in entries:
        lines.append(f"{kind:<14} {name:<{width}}  " + " | ".join(str(r) for r in rows))
    return lines


def inspect_batch(
    config_path: str,
    mode: str = "train",
    num_rows: int = 5,
    edits: Optional[dict[str, str]] = None,
    plugins: Sequence[str] = (),
    model_dir: Optional[str] = None,
) -> dict[str, Any]:
    """Reads and describes the first batch of a config's train or eval input.

    Args:
        config_path: the pipeline config file.
        mode: ``train`` or ``eval``: which input, parsed as in that mode.
        num_rows: rows shown of each feature.
        edits: ``{"dotted.field": "value"}`` config overrides.
        plugins: modules to import first.
        model_dir: overrides the config's ``model_dir`` (unused otherwise).

    Returns:
        :func:`describe_batch` of the first batch.

    Raises:
        ConfigError: the config is invalid, or names no input for ``mode``.
        DataError: the input does not parse.

    """
    setup_logging()
    config = prepare_config(config_path, edits, plugins, model_dir)
    field = f"{mode}_input_path"
    if not getattr(config, field):
        raise ConfigError(f"expected the {mode} data's path, found none", config_path, field=field)
    features = build_features(config)
    dataset = build_dataset(config, features, mode)
    return describe_batch(first_batch(dataset, getattr(config, field), field), num_rows)
