"""The FG as a DAG: features reading other features' outputs (``feature:<name>`` inputs).

In TorchEasyRec's ``FG_DAG`` mode an input ``feature:X`` is the FG output of feature ``X``
of the same config (e.g. a lookup keyed by the bucket id of a raw feature), and a feature
with ``stub_type: true`` is such an intermediate result only: computed for the features that
read it, never handed to the model. :func:`compute_features` runs the features of a config
in dependency order, giving each ``feature:X`` input the column ``FG_NONE`` would read for
``X`` (:func:`~recforge.features.fg_offline.fg_output_column`: ids as ``list<int64>``,
numbers as floats).

A ``feature:X`` naming no feature of the config reads the column ``X`` (TorchEasyRec's
``FG_NORMAL`` rule, where such inputs must be in the table). In the FG-output modes
(``FG_NONE`` / ``FG_BUCKETIZE``) every feature reads its own column and stubs are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from recforge.features.base_feature import BaseFeature, FeatureError
from recforge.features.derived_feature import split_expression

#: the input side of another feature's output
FEATURE_SIDE = "feature"

Parsed = dict[str, np.ndarray]


def _expressions(feature: BaseFeature) -> list[str]:
    raw_inputs = getattr(feature, "raw_inputs", None)
    if raw_inputs is not None:
        return list(raw_inputs)
    config = feature.config
    if "expression" in config.DESCRIPTOR.fields_by_name and config.HasField("expression"):
        return [config.expression]
    return []


def feature_refs(feature: BaseFeature, names: Sequence[str]) -> list[str]:
    """The features among ``names`` that ``feature`` reads as ``feature:<name>`` inputs.

    Empty for a feature reading FG output (``FG_NONE`` / ``FG_BUCKETIZE``).
    """
    if feature.reads_fg_output:
        return []
    known = set(names)
    refs = []
    for expression in _expressions(feature):
        side, name = split_expression(expression)
        if side == FEATURE_SIDE and name in known and name not in refs:
            refs.append(name)
    return refs


def dag_order(features: Sequence[BaseFeature]) -> list[BaseFeature]:
    """``features`` ordered so that each comes after the features it reads (stable).

    Raises:
        FeatureError: a feature reading itself, or a cycle (naming its features).

    """
    by_name = {f.name: f for f in features}
    names = list(by_name)
    done: dict[str, bool] = {}  # False while on the current path
    order: list[BaseFeature] = []

    def visit(feature: BaseFeature, path: list[str]) -> None:
        state = done.get(feature.name)
        if state:
            return
        if state is False:
            cycle = path[path.index(feature.name) :] + [feature.name]
            raise FeatureError(
                f"feature '{feature.name}': feature:<name> inputs form a cycle: "
                + " -> ".join(cycle)
            )
        done[feature.name] = False
        for ref in feature_refs(feature, names):
            visit(by_name[ref], [*path, feature.name])
        done[feature.name] = True
        order.append(feature)

    for feature in features:
        visit(feature, [])
    return order


def produced_columns(features: Sequence[BaseFeature]) -> set[str]:
    """The ``feature:<name>`` inputs the DAG computes (not read from the data)."""
    names = [f.name for f in features]
    return {ref for f in features for ref in feature_refs(f, names)}


def compute_features(
    features: Sequence[BaseFeature],
    columns: dict[str, Any],
    parse: Callable[[BaseFeature, dict[str, Any]], Parsed] = lambda f, c: f.parse(c),
) -> dict[str, Parsed]:
    """Every feature's parsed output, ``feature:<name>`` inputs fed from the DAG.

    Args:
        features: the config's features (stubs included).
        columns: the input columns of one batch.
        parse: how one feature parses its columns (e.g. with sample masking).

    Returns:
        feature name -> its ``parse`` output, for every feature.

    """
    from recforge.features.fg_offline import fg_output_column

    names = [f.name for f in features]
    produced = produced_columns(features)
    outputs: dict[str, pa.Array] = {}
    parsed: dict[str, Parsed] = {}
    for feature in dag_order(features):
        refs = feature_refs(feature, names)
        inputs = columns if not refs else {**columns, **{r: outputs[r] for r in refs}}
        parsed[feature.name] = parse(feature, inputs)
        if feature.name in produced:
            outputs[feature.name] = fg_output_column(feature, parsed[feature.name])
    return parsed
