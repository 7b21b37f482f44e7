r"""``ComboFeature``: the cross of two or more categorical inputs, as ids.

Each row's values of every input (multi-values split on ``separator``, or list columns) are
crossed (the Cartesian product, the first input varying slowest) and each combination is
joined by ``"_"``: inputs ``"ua\x1dub"`` and ``"ia"`` give ``ua_ia``, ``ub_ia``. A row where
any input is null or empty has no combination and takes ``default_value`` (when set) as
its one value. The strings are then mapped to table rows as an ``id_feature`` maps them:
``hash_bucket_size`` (TorchEasyRec's FG hash, so buckets agree with TorchEasyRec's),
``vocab_list`` or ``vocab_dict`` (rows 0 and 1 reserved for the default and
out-of-vocabulary values unless ``default_bucketize_value`` is set). As in TorchEasyRec a
combo feature has no ``num_buckets``.

Example:
    >>> from recforge.features.fg_mode import FG_DAG
    >>> from recforge.protos import feature_pb2
    >>> cfg = feature_pb2.ComboFeature(
    ...     feature_name="c", expression=["user:u", "item:i"], embedding_dim=4,
    ...     hash_bucket_size=100,
    ... )
    >>> out = ComboFeature(cfg, FG_DAG).parse(
    ...     {"u": pa.array(["ua\x1dub", None]), "i": pa.array(["ia\x1dib", "ic"])}
    ... )
    >>> out["c.values"].tolist(), out["c.lengths"].tolist()
    ([37, 90, 5, 97], [4, 0])

"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.derived_feature import DerivedFeature
from recforge.features.utils import (
    flatten_cells,
    is_string_type,
    split_cells,
    to_string_array,
)

#: joins the values of one combination (TorchEasyRec's FG)
COMBO_JOIN = "_"


def split_values(
    column: pa.Array, separator: str, as_strings: bool = True
) -> tuple[pa.Array, np.ndarray]:
    """Flatten a column of (multi-)values into ``(strings [N], lengths int32 [B])``.

    String cells are split on ``separator``; list columns are multi-value natively; nulls,
    null items and empty strings are dropped. With ``as_strings`` false the values keep
    their type (numbers stay numbers).
    """
    if pa.types.is_null(column.type):
        return pa.array([], pa.string()), np.zeros(len(column), dtype=np.int32)
    if pa.types.is_string_view(column.type) or pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    if is_string_type(column.type):
        column = split_cells(column, separator)
    values, lengths = flatten_cells(column)
    return (to_string_array(values) if as_strings else values), lengths


def cross_indices(
    left_lengths: np.ndarray, right_lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Index every per-row pair of a left and a right value (left varying slowest).

    Args:
        left_lengths: ``int [B]`` left values per row (flat, row after row).
        right_lengths: ``int [B]`` right values per row.

    Returns:
        ``(rows int64 [P], left_index int64 [P], right_index int64 [P], lengths int32 [B])``.

    """
    la, lb = left_lengths.astype(np.int64), right_lengths.astype(np.int64)
    lengths = la * lb
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(la), dtype=np.int64), lengths)
    position = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    width = np.maximum(lb[rows], 1)
    left = (np.cumsum(la) - la)[rows] + position // width
    right = (np.cumsum(lb) - lb)[rows] + position % width
    return rows, left, right, lengths.astype(np.int32)


def cross(
    left: tuple[pa.Array, np.ndarray], right: tuple[pa.Array, np.ndarray]
) -> tuple[pa.Array, np.ndarray]:
    """Per row, every ``left_right`` combination (left varying slowest).

    Args:
        left: ``(strings [N], lengths int32 [B])``.
        right: ``(strings [M], lengths int32 [B])``.

    Returns:
        ``(strings [sum(a * b)], lengths int32 [B])``.

    """
    (a, la), (b, lb) = left, right
    _, ia, ib, lengths = cross_indices(la, lb)
    if len(ia) == 0:
        return pa.array([], pa.string()), lengths
    joined = pc.binary_join_element_wise(a.take(pa.array(ia)), b.take(pa.array(ib)), COMBO_JOIN)
    return joined, lengths


def to_list_array(values: pa.Array, lengths: np.ndarray) -> pa.ListArray:
    """``values [N]`` cut into ``B`` lists of ``lengths`` values."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


class ComboFeature(DerivedFeature):
    """The cross of ``expression`` (>= 2 inputs) as ids (see the module docstring)."""

    @classmethod
    def asset_fields(cls) -> tuple[str, ...]:
        """``vocab_file`` of an id output (copied into an export)."""
        return ("vocab_file",)

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        cfg = self.config
        if not self.reads_fg_output and len(cfg.expression) < 2:
            raise self._error(
                f"a combo_feature crosses 2 or more inputs, found expression {list(cfg.expression)}"
            )
        if cfg.value_dim > 1:
            raise self._error(f"value_dim must be 0 (multi-value) or 1, found {cfg.value_dim}")
        self._out = self._id_output()

    @property
    def raw_inputs(self) -> list[str]:
        """The crossed inputs (``expression``)."""
        return list(self.config.expression)

    def compute(self, columns: dict[str, pa.Array]) -> pa.Array:
        """The combinations of each row as ``list<string>`` ``[B]``."""
        num_rows = self.num_rows(columns, self.raw_inputs)
        result = None
        for expression in self.raw_inputs:
            column = self.input_column(columns, expression, num_rows)
            part = split_values(column, self.config.separator)
            result = part if result is None else cross(result, part)
        assert result is not None
        return to_list_array(*result)
