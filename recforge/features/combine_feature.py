"""``CombineFeature``: the values of a multi-value input mapped to numbers and combined into one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import BaseFeature, FeatureError
from recforge.features.derived_feature import DerivedFeature, input_column, split_terms
from recforge.features.fg_mode import DEFAULT_MULTIVAL_SEP, FG_NONE
from recforge.features.sequence_feature import SequenceIdFeature, SequenceRawFeature
from recforge.features.utils import first_true, is_list_type, is_number_type, is_string_type

_FLOAT_PATTERN = r"(?i)^\s*[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|nan|inf|infinity)\s*$"
#: combiner -> numpy reduction per row (``count`` is handled apart)
_COMBINERS = ("sum", "mean", "avg", "min", "max", "count")
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

    def __init__(
        self,
        feature_config: Any,
        fg_mode: int = FG_NONE,
        fg_encoded_multival_sep: str = DEFAULT_MULTIVAL_SEP,
    ) -> None:
        super().__init__(feature_config, fg_mode, fg_encoded_multival_sep)
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
        self._combiner = "mean" if combiner == "avg" else combiner
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

    @property
    def expressions(self) -> list[str]:
        """``[expression]``."""
        return [self.config.expression] if self.config.expression else []

    def inner_config(self) -> Any:
        """An ``IdFeature`` (``num_buckets``) or ``RawFeature`` (``boundaries`` / dense) message."""
        cfg = self.config
        if cfg.HasField("num_buckets"):
            if cfg.boundaries:
                raise FeatureError(
                    f"feature '{self.name}': set num_buckets or boundaries, found both"
                )
            message = self.inner_message("IdFeature")
            message.num_buckets = cfg.num_buckets
            message.value_dim = 1
            return message
        message = self.inner_message("RawFeature")
        message.boundaries.extend(cfg.boundaries)
        if cfg.normalizer:
            message.normalizer = cfg.normalizer
        message.default_value = cfg.default_value or "0"
        return message

    def build_inner(self) -> BaseFeature:
        """The id / raw feature of :meth:`inner_config`."""
        return self.make_inner(self.inner_config())

    def _numbers(self, values: pa.Array, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(numbers float64 [M], rows [M])`` of the flat values."""
        column = input_column(self.config.expression)
        if self.config.value_map:
            strings = values if is_string_type(values.type) else pc.cast(values, pa.string())
            index = pc.index_in(strings, value_set=self._map_keys)
            found = index.is_valid().to_numpy(zero_copy_only=False)
            positions = index.drop_null().to_numpy(zero_copy_only=False)
            return self._map_values[positions], rows[found]
        if is_number_type(values.type):
            return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), rows
        if not is_string_type(values.type):
            raise FeatureError(
                f"feature '{self.name}' (column '{column}'): expected numbers or strings, "
                f"found values of type {values.type}"
            )
        ok = pc.match_substring_regex(values, _FLOAT_PATTERN).to_numpy(zero_copy_only=False)
        bad = first_true(~ok)
        if bad >= 0:
            raise self.data_error(
                column,
                int(rows[bad]),
                f"expected numbers (or set value_map), found {values[bad].as_py()!r}",
            )
        numbers = pc.cast(pc.utf8_trim_whitespace(values), pa.float64())
        return numbers.to_numpy(zero_copy_only=False), rows

    def derive(self, inputs: list[pa.Array]) -> pa.Array:
        """One combined number per row (an int64 id with ``num_buckets``)."""
        num_rows = len(inputs[0])
        values, rows, _ = split_terms(inputs[0], self.config.separator)
        numbers, rows = self._numbers(values, rows)
        counts = np.bincount(rows, minlength=num_rows)
        if self._combiner in ("sum", "mean"):
            out = np.bincount(rows, weights=numbers, minlength=num_rows)
            if self._combiner == "mean":
                out = np.divide(out, counts, out=np.zeros(num_rows), where=counts > 0)
        elif self._combiner == "count":
            out = counts.astype(np.float64)
        else:
            fill = np.inf if self._combiner == "min" else -np.inf
            out = np.full(num_rows, fill)
            reduce = np.minimum if self._combiner == "min" else np.maximum
            reduce.at(out, rows, numbers)
        out = np.where(counts > 0, out, self._default)
        if self.config.HasField("num_buckets"):
            ids = np.trunc(out)
            bad = first_true(~np.isfinite(ids) | (ids < 0) | (ids >= self.config.num_buckets))
            if bad >= 0:
                raise self.data_error(
                    input_column(self.config.expression),
                    bad,
                    f"combined value {out[bad]:g} is no id in [0, {self.config.num_buckets}) "
                    "(num_buckets)",
                )
            return pa.array(ids.astype(np.int64))
        return pa.array(out)


class SequenceCombineFeature(CombineFeature):
    r"""``sequence_combine_feature``, or a ``combine_feature`` element of a ``sequence_feature``.

    A cell holds a sequence: elements joined by ``sequence_delim`` (default ``";"``), or a list
    of elements; each element is combined as a ``combine_feature`` cell
    (``"tag1\x1dtag2;tag1"`` is two elements). As in TorchEasyRec, a null or empty cell is a
    sequence of one element, the ``default_value``. Each row keeps its first
    ``sequence_length`` elements. The ids need ``num_buckets`` or ``boundaries``: dense number
    sequences are not supported (as for ``sequence_raw_feature``).
    """

    def build_inner(self) -> BaseFeature:
        """A :class:`SequenceIdFeature` / :class:`SequenceRawFeature` of the element ids."""
        message = self.inner_config()
        message.sequence_length = self.config.sequence_length
        message.sequence_delim = self.config.sequence_delim
        if message.DESCRIPTOR.name == "IdFeature":
            return SequenceIdFeature(message, self.fg_mode, self.multival_sep)
        return SequenceRawFeature(message, self.fg_mode, self.multival_sep)

    @property
    def is_sequence(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def sequence_length(self) -> int:
        """The most elements kept per row."""
        return int(self.config.sequence_length)

    def derive(self, inputs: list[pa.Array]) -> pa.Array:
        """``list [B]`` of one combined value per element."""
        column = inputs[0]
        if pa.types.is_string_view(column.type) or pa.types.is_null(column.type):
            column = pc.cast(column, pa.string())
        delim = self.config.sequence_delim
        if is_string_type(column.type):
            column = pc.split_pattern(column.fill_null(""), delim) if delim else column
        if not is_list_type(column.type):
            raise FeatureError(
                f"feature '{self.name}' (column '{input_column(self.config.expression)}'): "
                f"expected sequences joined by sequence_delim or lists, found type {column.type}"
            )
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        elements = pc.list_flatten(column)
        empty = lengths == 0  # a null or empty sequence: one element taking default_value
        if empty.any():
            lengths = np.where(empty, 1, lengths)
            parents = np.concatenate(
                [
                    pc.list_parent_indices(column).to_numpy(zero_copy_only=False),
                    np.flatnonzero(empty),
                ]
            )
            padded = pa.concat_arrays([elements, pa.nulls(int(empty.sum()), elements.type)])
            elements = padded.take(pa.array(np.argsort(parents, kind="stable")))
        values = CombineFeature.derive(self, [elements])
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), values)
