"""Running the FG offline: raw input columns -> the FG output columns ``fg_mode: FG_NONE`` reads.

TorchEasyRec trains FG_NONE models on tables its FG wrote beforehand (one column per feature,
named by ``feature_name``, holding table rows / bucket ids / normalized numbers), and serves
them from raw columns by running the same FG online (``fg.json``). :func:`run_fg` is that
offline step with recforge's features: it computes every feature of a config from raw
columns as ``FG_DAG`` does and writes each as the column ``FG_NONE`` reads, so that parsing
its output with the config's ``FG_NONE`` features gives exactly the tensors ``FG_DAG`` gives
on the raw rows. :func:`with_fg_mode` is the config of the other mode.

Output formats (one column per feature, named by its full name, e.g. ``seq__brand`` for a
``sequence_feature`` element):

* ids (any sparse feature, sequences too): ``list<int64>``, one list per row; a sequence
  whose elements hold several ids (``sequence_tokenize_feature``): ``list<list<int64>>``,
  one list per element;
* dense numbers: ``float32`` (one per row) or ``list<float32>`` (``value_dim`` per row, or
  a dense sequence's elements).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

import numpy as np
import pyarrow as pa

from recforge.features.base_feature import BaseFeature
from recforge.features.fg_mode import FG_BUCKETIZE, FG_DAG, FG_NONE, resolve_fg_mode

if TYPE_CHECKING:
    from recforge.protos import pipeline_pb2


def with_fg_mode(config: pipeline_pb2.EasyRecConfig, fg_mode: int) -> pipeline_pb2.EasyRecConfig:
    """A copy of a pipeline config whose features read data as ``fg_mode`` says.

    The deprecated ``data_config.fg_encoded`` is cleared (it would override ``fg_mode``).
    """
    copy = type(config)()
    copy.CopyFrom(config)
    copy.data_config.ClearField("fg_encoded")
    copy.data_config.fg_mode = fg_mode  # type: ignore[assignment]  # stubs want the enum class
    return copy


def _list_array(values: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=value_type))


def fg_output_column(feature: BaseFeature, parsed: dict[str, np.ndarray]) -> pa.Array:
    """One feature's parsed values (raw mode) as the FG output column FG_NONE reads.

    Args:
        feature: a feature reading raw columns (``FG_DAG`` / ``FG_NORMAL``).
        parsed: its :meth:`~recforge.features.BaseFeature.parse` output for ``B`` rows.

    Returns:
        ``B`` rows (see the module docstring for the types).

    """
    values = parsed[f"{feature.name}.values"]
    elements = feature.element_lengths_key
    if elements is not None:
        per_element = _list_array(values, parsed[f"{elements}.values"], pa.int64())
        lengths = parsed[f"{elements}.lengths"]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), per_element)
    if feature.is_sparse:
        return _list_array(values, parsed[f"{feature.name}.lengths"], pa.int64())
    if feature.is_sequence:  # dense sequence rows: [length, numbers..., zero padding]
        lengths = values[:, 0].astype(np.int32)
        keep = np.arange(values.shape[1] - 1)[None, :] < lengths[:, None]
        return _list_array(values[:, 1:][keep], lengths, pa.float32())
    if values.shape[1] == 1:
        return pa.array(values[:, 0], type=pa.float32())
    lengths = np.full(len(values), values.shape[1], dtype=np.int32)
    return _list_array(values.reshape(-1), lengths, pa.float32())


def run_fg(
    config: pipeline_pb2.EasyRecConfig,
    data: pa.Table | pa.RecordBatch,
    keep_columns: Optional[Sequence[str]] = None,
) -> pa.Table:
    """TorchEasyRec's offline FG: the FG output table of raw rows, for ``fg_mode: FG_NONE``.

    Args:
        config: a pipeline config (its ``fg_mode`` does not matter: the features are built
            in ``FG_DAG`` mode to read ``data``).
        data: raw rows holding the columns the features' expressions name.
        keep_columns: input columns copied to the output first (default: the config's label
            and sample weight columns present in ``data``).

    Returns:
        The kept columns, then one column per feature in config order.

    Raises:
        ConfigError: a feature config its kind refuses.
        DataError, FeatureError: a missing column or a value that cannot be parsed.

    """
    from recforge.datasets.data_parser import DataParser
    from recforge.features.fg_dag import compute_features
    from recforge.utils.pipeline import build_features

    table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
    features = build_features(with_fg_mode(config, FG_DAG))
    if keep_columns is None:
        wanted = [*config.data_config.label_fields, *config.data_config.sample_weight_fields]
        keep_columns = [c for c in wanted if c in table.column_names]
    DataParser(features).check_columns(table.column_names)
    columns = {name: table.column(name).combine_chunks() for name in table.column_names}
    out: dict[str, pa.Array] = {name: columns[name] for name in keep_columns}
    parsed = compute_features(features, columns)
    for feature in features:
        if not feature.stub_type:  # an FG intermediate is no FG output (TorchEasyRec)
            out[feature.name] = fg_output_column(feature, parsed[feature.name])
    return pa.table(out)


def reads_raw_columns(config: pipeline_pb2.EasyRecConfig) -> bool:
    """Whether a config's features compute themselves from raw columns (FG_DAG, FG_NORMAL)."""
    return resolve_fg_mode(config.data_config, warn=False) not in (FG_NONE, FG_BUCKETIZE)
