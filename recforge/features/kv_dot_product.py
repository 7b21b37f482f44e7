"""``KvDotProduct``: the dot product of two key-value maps (or the size of two sets' overlap)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import BaseFeature
from recforge.features.derived_feature import DerivedFeature, input_column, split_terms
from recforge.features.utils import first_true

#: TorchEasyRec's key-value delimiter (its ``kv_delimiter`` field is a float in the schema,
#: so no other delimiter can be configured)
KV_DELIMITER = ":"


def parse_kv_cells(
    column: pa.Array, separator: str
) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    """Read key-value cells.

    A cell is a map (``map<key, number>``), a list of ``"key:value"`` / ``"key"`` strings, or
    a string of those joined by ``separator``; a key without a value weighs 1. Null cells and
    empty items are empty maps.

    Args:
        column: ``B`` cells.
        separator: the item separator of string cells.

    Returns:
        ``(keys string [N], values float64 [N], rows int64 [N], bad int64 [N])``: ``bad`` is
        the flat index of the first value that is no number (``-1``: none), as a one-element
        array so callers can report its row.

    """
    if pa.types.is_map(column.type):
        entry = pa.struct([column.type.key_field, column.type.item_field])
        column = column.cast(pa.list_(entry))  # list kernels have no map kernels
        keys = pc.cast(pc.list_flatten(column).field(0), pa.string())
        values = pc.cast(pc.list_flatten(column).field(1), pa.float64())
        rows = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
        numbers = values.fill_null(0.0).to_numpy(zero_copy_only=False)
        keep = keys.is_valid()
        mask = keep.to_numpy(zero_copy_only=False)
        return keys.filter(keep), numbers[mask], rows[mask].astype(np.int64), np.array([-1])
    items, rows, _ = split_terms(column, separator)
    items = pc.cast(items, pa.string())
    parts = pc.split_pattern(items, KV_DELIMITER, max_splits=1)
    keys = pc.list_element(parts, 0)
    has_value = pc.greater(pc.list_value_length(parts), 1).to_numpy(zero_copy_only=False)
    numbers = np.ones(len(items), dtype=np.float64)
    if has_value.any():
        texts = pc.list_element(parts.filter(pa.array(has_value)), 1)
        ok = pc.match_substring_regex(
            texts, r"(?i)^\s*[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|nan|inf|infinity)\s*$"
        ).to_numpy(zero_copy_only=False)
        bad = first_true(~ok)
        if bad >= 0:
            return keys, numbers, rows, np.flatnonzero(has_value)[bad : bad + 1]
        numbers[has_value] = pc.cast(pc.utf8_trim_whitespace(texts), pa.float64()).to_numpy(
            zero_copy_only=False
        )
    return keys, numbers, rows, np.array([-1])


class KvDotProduct(DerivedFeature):
    r"""The dot product of the ``query`` and ``document`` key-value maps, a number per row.

    Each input is a ``map<key, number>`` column, a list of ``"key:value"`` strings, or a
    string of those joined by ``separator`` (default ``"\x1d"``); a key without ``":value"``
    weighs 1, so two key sets give the size of their intersection. A key repeated inside one
    cell keeps its last value. Rows where either input is null or empty take
    ``default_value`` (default ``"0"``); two non-empty maps without a shared key give 0. The
    number then goes through ``normalizer`` and, with ``boundaries``, is bucketized into
    ``len(boundaries) + 1`` ids, as a :class:`~recforge.features.raw_feature.RawFeature` with
    ``value_dim`` 1.

    ``kv_delimiter`` is a float in TorchEasyRec's schema, so the delimiter is always ``":"``
    (the documented default); setting the field is refused by the config check.
    """

    @property
    def expressions(self) -> list[str]:
        """``[query, document]`` (both must be set)."""
        cfg = self.config
        if cfg.query and cfg.document:
            return [cfg.query, cfg.document]
        return []

    @property
    def input_fields(self) -> tuple[str, ...]:
        """``query`` and ``document``."""
        return ("query", "document")

    def build_inner(self) -> BaseFeature:
        """A ``RawFeature`` with ``boundaries``, ``normalizer`` and ``default_value``."""
        cfg = self.config
        message = self.inner_message("RawFeature")
        message.boundaries.extend(cfg.boundaries)
        if cfg.normalizer:
            message.normalizer = cfg.normalizer
        message.default_value = cfg.default_value or "0"
        return self.make_inner(message)

    def _side(self, column: pa.Array, index: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        keys, values, rows, bad = parse_kv_cells(column, self.config.separator)
        if bad[0] >= 0:
            raise self.data_error(
                input_column(self.expressions[index]),
                int(rows[bad[0]]),
                f"expected 'key{KV_DELIMITER}number' items, found a value that is no number in "
                f"'{keys[int(bad[0])].as_py()}{KV_DELIMITER}...'",
            )
        return keys, values, rows

    def derive(self, inputs: list[pa.Array]) -> pa.Array:
        """The dot product per row; null where either side is empty (-> ``default_value``)."""
        num_rows = len(inputs[0])
        if len(inputs[1]) != num_rows:
            raise self.data_error(
                input_column(self.expressions[1]), 0, "expected as many rows as the query"
            )
        q_keys, q_values, q_rows = self._side(inputs[0], 0)
        d_keys, d_values, d_rows = self._side(inputs[1], 1)
        codes = pc.dictionary_encode(pa.concat_arrays([q_keys, d_keys])).indices
        codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
        width = int(codes.max(initial=0)) + 1
        q_ids, d_ids = q_rows * width + codes[: len(q_keys)], d_rows * width + codes[len(q_keys) :]
        q_ids, q_values = _last_per_key(q_ids, q_values)
        d_ids, d_values = _last_per_key(d_ids, d_values)
        _, qi, di = np.intersect1d(q_ids, d_ids, assume_unique=True, return_indices=True)
        products = np.bincount(
            q_ids[qi] // width, weights=q_values[qi] * d_values[di], minlength=num_rows
        )
        empty = (np.bincount(q_rows, minlength=num_rows) == 0) | (
            np.bincount(d_rows, minlength=num_rows) == 0
        )
        return pa.array(products, mask=empty)


def _last_per_key(ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique ``ids`` (sorted), each with the value of its last occurrence."""
    reverse = ids[::-1]
    unique, first_in_reverse = np.unique(reverse, return_index=True)
    return unique, values[::-1][first_in_reverse]
