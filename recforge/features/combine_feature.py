"""``CombineFeature``: the values of a multi-value input mapped to numbers and combined into one."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import FeatureError
from recforge.features.combo_feature import split_values
from recforge.features.derived_feature import DerivedFeature
from recforge.features.lookup_feature import COMBINERS, combine
from recforge.features.utils import first_true, is_number_type, is_string_type, to_floats

#: the combiners (``avg`` is ``mean``)
_COMBINERS = tuple(c for c in COMBINERS if c)
#: documented by TorchEasyRec without a definition of the gap they take
_UNDEFINED_COMBINERS = ("gap_min", "gap_max")


class CombineFeature(DerivedFeature):
    r"""The values of ``expression`` combined into one number per row.

    The input holds several values per row (strings joined by ``separator``, default
    ``"\x1d"``, or lists). With ``value_map`` each value is looked up there (a value that is
    no key is dropped); without it each value must be a number. The numbers of a row are then
    combined by ``combiner``: ``sum`` (default), ``mean`` / ``avg``, ``min``, ``max`` or
    ``count``. A row without numbers takes ``default_value`` (empty means 0). Then, as in
    TorchEasyRec:

    * ``num_buckets``: the number, truncated toward zero, is the id (in
      ``[0, num_buckets)``; another id is an error naming the row);
    * ``boundaries``: ``normalizer`` then bucketization into ``len(boundaries) + 1`` ids;
    * neither: a dense number (after ``normalizer``).

    ``gap_min`` / ``gap_max`` are refused: TorchEasyRec lists them without saying which gap
    they take.
    """

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        self._require_inputs("expression")
        combiner = self.config.combiner.lower()
        if combiner in _UNDEFINED_COMBINERS:
            raise FeatureError(
                f"feature '{self.name}': combiner '{combiner}' is not supported (TorchEasyRec "
                f"does not define its gap); supported: {list(_COMBINERS)}"
            )
        if combiner not in _COMBINERS:
            raise FeatureError(
                f"feature '{self.name}': combiner must be one of {list(_COMBINERS)}, found "
                f"'{self.config.combiner}'"
            )
        self._combiner = COMBINERS[combiner]
        default = self.config.default_value or "0"
        try:
            self._default = float(default)
        except ValueError:
            raise FeatureError(
                f"feature '{self.name}': default_value must be a number, found '{default}'"
            ) from None
        if self.config.value_map:
            keys = sorted(self.config.value_map)
            self._map_keys = pa.array(keys, pa.string())
            self._map_values = np.array([self.config.value_map[k] for k in keys], np.float64)
        self._build_output()

    @property
    def raw_inputs(self) -> list[str]:
        """``[expression]``."""
        return [self.config.expression] if self.config.expression else []

    def _build_output(self) -> None:
        """An id output (``num_buckets``) or a number output (``boundaries`` / dense)."""
        cfg = self.config
        if cfg.HasField("num_buckets"):
            if cfg.boundaries:
                raise FeatureError(
                    f"feature '{self.name}': set num_buckets or boundaries, found both"
                )
            # default_value is the combined number of a row without values, not an id
            self._out = self._id_output(skip=("default_value",), value_dim=1)
        else:
            self._out = self._raw_output(default_value=cfg.default_value or "0")

    def _numbers(self, values: pa.Array, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(numbers float64 [M], rows [M])`` of the flat values."""
        column = self.inputs[0]
        if self.config.value_map:
            strings = values if is_string_type(values.type) else pc.cast(values, pa.string())
            index = pc.index_in(strings, value_set=self._map_keys)
            found = index.is_valid().to_numpy(zero_copy_only=False)
            positions = index.drop_null().to_numpy(zero_copy_only=False)
            return self._map_values[positions], rows[found]
        if not (is_number_type(values.type) or is_string_type(values.type)):
            raise self._column_error(
                column, f"expected numbers or strings, found values of type {values.type}"
            )
        numbers, bad = to_floats(values)
        if bad >= 0:
            raise self._column_error(
                column,
                f"expected numbers (or set value_map), found {values[bad].as_py()!r} at row "
                f"{int(rows[bad])}",
            )
        return numbers, rows

    def compute(self, columns: dict[str, pa.Array]) -> pa.Array:
        """One combined number per row (an int64 id with ``num_buckets``)."""
        (column,) = self.input_columns(columns)
        num_rows = len(column)
        values, lengths = split_values(column, self.config.separator, as_strings=False)
        rows = np.repeat(np.arange(num_rows, dtype=np.int64), lengths)
        numbers, rows = self._numbers(values, rows)
        out, found = combine(numbers, rows, num_rows, self._combiner)
        out = np.where(found, out, self._default)
        if self.config.HasField("num_buckets"):
            ids = np.trunc(out)
            bad = first_true(~np.isfinite(ids) | (ids < 0) | (ids >= self.config.num_buckets))
            if bad >= 0:
                raise self._column_error(
                    self.inputs[0],
                    f"combined value {out[bad]:g} is no id in [0, {self.config.num_buckets}) "
                    f"(num_buckets) at row {bad}",
                )
            return pa.array(ids.astype(np.int64))
        return pa.array(out)
