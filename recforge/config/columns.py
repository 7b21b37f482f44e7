"""The data columns a config reads, and checking that a data file has them."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Optional

from google.protobuf.message import Message

from recforge.config._schema import named_features
from recforge.config._util import PathLike, did_you_mean, listing
from recforge.config.errors import ConfigError
from recforge.protos import pipeline_pb2


def required_columns(config: pipeline_pb2.EasyRecConfig) -> dict[str, str]:
    """Return the data columns a config reads, mapped to who needs them.

    Args:
        config: the pipeline config.

    Returns:
        column -> ``"label"``, ``"sample weight"`` or ``"feature 'name'"`` (labels first).
        A feature reads the column named by its ``feature_name`` when ``data_config.fg_mode``
        is FG_NONE or FG_BUCKETIZE (FG output), else its ``expression``'s raw column.

    """
    needed: dict[str, str] = {}
    for label in config.data_config.label_fields:
        needed.setdefault(label, "label")
    for weight in config.data_config.sample_weight_fields:
        needed.setdefault(weight, "sample weight")
    from recforge.features.fg_mode import FG_BUCKETIZE, FG_NONE, resolve_fg_mode

    reads_fg_output = resolve_fg_mode(config.data_config, warn=False) in (FG_NONE, FG_BUCKETIZE)
    for feature in named_features(config):
        column = feature.feature_name if reads_fg_output else _feature_column(feature)
        needed.setdefault(column, f"feature {feature.feature_name!r}")
    return needed


def check_data_columns(
    config: Optional[pipeline_pb2.EasyRecConfig],
    available_columns: Sequence[str],
    path: PathLike,
    needed: Optional[Mapping[str, str]] = None,
) -> None:
    """Check that a data file has every column the config needs.

    Args:
        config: the pipeline config; used when ``needed`` is None (see
            :func:`required_columns`: labels, sample weights and feature inputs).
        available_columns: the columns the data file has.
        path: the data file (for the message).
        needed: column -> who needs it, e.g. ``{"click": "label", "uid": "feature 'user'"}``.

    Raises:
        ConfigError: (a ValueError) naming each missing column, e.g. ``label column 'click'
            not found in data/train.parquet (columns: a, b, c); did you mean 'clicks'?``.

    """
    if needed is None:
        needed = required_columns(config) if config is not None else {}
    available = list(available_columns)
    present = set(available)
    errors = [
        ConfigError(
            f"{who} column {column!r} not found in {os.fspath(path)} "
            f"(columns: {listing(available, 30) or 'none'}){did_you_mean(column, available)}"
        )
        for column, who in needed.items()
        if column not in present
    ]
    if errors:
        raise ConfigError.collect(errors, f"{len(errors)} columns missing from {os.fspath(path)}")


def _feature_column(feature: Message) -> str:
    """Return the raw input column of a feature: its expression (``side:column``) or name."""
    expression = getattr(feature, "expression", "") or feature.feature_name
    return expression.split(":", 1)[-1]
