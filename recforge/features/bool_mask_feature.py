"""``BoolMaskFeature``: the values of one input kept where a second input's mask is true."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.derived_feature import DerivedFeature
from recforge.features.utils import first_true, is_string_type

_TRUE = ("true", "1")
_FALSE = ("false", "0")


class BoolMaskFeature(DerivedFeature):
    r"""Values of ``expression[0]`` where ``expression[1]`` is true, as ids (``tf.boolean_mask``).

    Both inputs are multi-value: strings joined by ``separator`` (default ``"\x1d"``) or
    lists. Mask items are booleans, integers 0 / 1, or the strings ``"true"`` / ``"false"`` /
    ``"1"`` / ``"0"`` (any case); a null item is false; anything else is an error. A value
    and its mask item are paired by position, so each row needs as many mask items as
    values; a null or empty cell on either side is an empty row, and a null value item is
    dropped. The kept values are bucketized as an
    :class:`~recforge.features.id_feature.IdFeature` with the same fields (``num_buckets``,
    ``hash_bucket_size``, ``vocab_list``, ``vocab_dict``, ``default_value``, ...).
    """

    @classmethod
    def asset_fields(cls) -> tuple[str, ...]:
        """``vocab_file`` of an id output (copied into an export)."""
        return ("vocab_file",)

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        cfg = self.config
        self._require_inputs("expression")
        if not self.reads_fg_output and len(cfg.expression) != 2:
            raise self._error(
                f"expression must name 2 inputs (values, mask), found {list(cfg.expression)}"
            )
        fields: dict[str, Any] = {}
        if cfg.HasField("separator"):  # it splits a multi-value default_value
            fields["separator"] = cfg.separator
        if cfg.HasField("value_dim"):
            fields["value_dim"] = cfg.value_dim
        self._out = self._id_output(**fields)

    @property
    def raw_inputs(self) -> list[str]:
        """``expression``: values, then mask (exactly two)."""
        return list(self.config.expression)

    def _mask(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray, pa.Array]:
        """``(keep bool [M], rows int64 [M], items [M])`` of the mask input (null: false)."""
        items, rows, _ = _items(column, self.config.separator)
        if pa.types.is_boolean(items.type):
            return items.fill_null(False).to_numpy(zero_copy_only=False), rows, items
        if pa.types.is_integer(items.type) or pa.types.is_floating(items.type):
            numbers = items.fill_null(0).to_numpy(zero_copy_only=False)
            bad = first_true((numbers != 0) & (numbers != 1))
            if bad >= 0:
                raise self._column_error(
                    self.inputs[-1],
                    f"expected mask items true/false or 1/0, found {items[bad].as_py()!r} at row "
                    f"{int(rows[bad])}",
                )
            return numbers == 1, rows, items
        if not is_string_type(items.type):
            raise self._column_error(
                self.inputs[-1],
                f"expected a boolean, integer or string mask, found type {column.type}",
            )
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(items)).fill_null("false")
        is_true = pc.is_in(lowered, value_set=pa.array(_TRUE)).to_numpy(zero_copy_only=False)
        is_false = pc.is_in(lowered, value_set=pa.array(_FALSE)).to_numpy(zero_copy_only=False)
        bad = first_true(~(is_true | is_false))
        if bad >= 0:
            raise self._column_error(
                self.inputs[-1],
                f"expected mask items true/false or 1/0, found {items[bad].as_py()!r} at row "
                f"{int(rows[bad])}",
            )
        return is_true, rows, items

    def compute(self, columns: dict[str, pa.Array]) -> pa.Array:
        """``list [B]`` of the kept values of each row."""
        values_column, mask_column = self.input_columns(columns)
        num_rows = len(values_column)
        # positions matter here: null items are kept until the mask is applied
        values, value_rows, value_lengths = _items(values_column, self.config.separator)
        keep, mask_rows, _ = self._mask(mask_column)
        mask_lengths = np.bincount(mask_rows, minlength=num_rows)
        # a null or empty cell on either side is an empty row
        paired = (value_lengths > 0) & (mask_lengths > 0)
        bad = first_true(paired & (value_lengths != mask_lengths))
        if bad >= 0:
            raise self._column_error(
                self.inputs[-1],
                f"expected one mask item per value of '{self.inputs[0]}' "
                f"({int(value_lengths[bad])}), found {int(mask_lengths[bad])} at row {bad}",
            )
        keep = keep[paired[mask_rows]]
        used = paired[value_rows]
        values, value_rows = values.filter(pa.array(used)), value_rows[used]
        keep = keep & values.is_valid().to_numpy(zero_copy_only=False)
        kept = values.filter(pa.array(keep))
        offsets = np.zeros(num_rows + 1, dtype=np.int32)
        np.cumsum(np.bincount(value_rows[keep], minlength=num_rows), out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), kept)


def _items(column: pa.Array, separator: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Every item of each cell, null and empty ones included (string cells split)."""
    num_rows = len(column)
    if pa.types.is_string_view(column.type):
        column = pc.cast(column, pa.string())
    if pa.types.is_null(column.type):
        return pa.array([], pa.string()), np.zeros(0, np.int64), np.zeros(num_rows, np.int64)
    if is_string_type(column.type):
        empty = pc.equal(column, "").fill_null(True)
        column = pc.if_else(empty, pa.scalar(None, column.type), column)
        column = pc.split_pattern(column, separator) if separator else column
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        items = pc.list_flatten(column)
        rows = pc.list_parent_indices(column).to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        valid = column.is_valid()
        items = column.filter(valid)
        rows = np.flatnonzero(valid.to_numpy(zero_copy_only=False)).astype(np.int64)
    return items, rows, np.bincount(rows, minlength=num_rows)
