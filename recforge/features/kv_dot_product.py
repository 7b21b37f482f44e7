"""``KvDotProduct``: the dot product of two key-value maps (or the size of two sets' overlap)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.derived_feature import DerivedFeature
from recforge.features.kv_parsing import KV_SEP, KvFormatError, parse_kv_map
from recforge.features.utils import to_floats

#: the weight of a key without a value (a set item)
_BARE_WEIGHT = "1"


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

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        self._require_inputs("query", "document")
        self._out = self._raw_output(default_value=self.config.default_value or "0")

    @property
    def raw_inputs(self) -> list[str]:
        """``[query, document]`` (both must be set)."""
        cfg = self.config
        if cfg.query and cfg.document:
            return [cfg.query, cfg.document]
        return []

    def _side(self, column: pa.Array, index: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        """``(keys string [N], weights float64 [N], rows int64 [N])`` of one input."""
        name = self.inputs[index]
        try:
            entries = parse_kv_map(column, self.config.separator, bare_value=_BARE_WEIGHT)
        except (KvFormatError, TypeError) as e:
            raise self._column_error(name, str(e)) from None
        weights, bad = to_floats(entries.values)
        if bad >= 0:
            raise self._column_error(
                name,
                f"expected 'key{KV_SEP}number' items, found a value that is no number in "
                f"'{entries.keys[bad].as_py()}{KV_SEP}{entries.values[bad].as_py()}' at row "
                f"{int(entries.rows[bad])}",
            )
        return entries.keys, np.nan_to_num(weights, nan=0.0), entries.rows

    def compute(self, columns: dict[str, pa.Array]) -> pa.Array:
        """The dot product per row; null where either side is empty (-> ``default_value``)."""
        query, document = self.input_columns(columns)
        num_rows = len(query)
        q_keys, q_values, q_rows = self._side(query, 0)
        d_keys, d_values, d_rows = self._side(document, -1)
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
