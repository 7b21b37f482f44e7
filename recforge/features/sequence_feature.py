"""Sequence features: a list of ids (or bucketized numbers) per row, e.g. a user's last clicks.

A sequence feature parses like a multi-value id feature (``"{name}.values"`` /
``"{name}.lengths"``), but its cells are split on ``sequence_delim`` and cut to the first
``sequence_length`` elements. Each element is one value: FG output (``fg_mode`` FG_NONE or
FG_BUCKETIZE) whose element holds several values joined by ``fg_encoded_multival_sep`` is
refused (TorchEasyRec's multi-value sequence elements are not supported yet). In FG_NONE the
elements are final table rows (bucket ids for a ``sequence_raw_feature``), checked to lie in
``[0, num_embeddings)``, and an empty sequence takes ``fg_encoded_default_value`` (one id)
when set. In a ``SEQUENCE`` feature group its embeddings are not pooled
(torchrec ``EmbeddingCollection``, padded to ``[B, sequence_length, dim]``); in a ``DEEP`` or
``WIDE`` group they are sum / mean pooled like any bag of ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.id_feature import IdFeature
from recforge.features.raw_feature import RawFeature
from recforge.features.utils import (
    fill_empty_bags,
    first_true,
    flatten_cells,
    is_list_type,
    is_string_type,
    row_of_value,
    truncate_rows,
)

if TYPE_CHECKING:
    from recforge.protos import feature_pb2

#: separates a sequence's name from its element feature's name: ``click_seq__item_id``
SEQUENCE_NAME_SEPARATOR = "__"


class _SequenceMixin:
    """Splits a column into per-row sequences and truncates them to ``sequence_length``."""

    name: str
    config: Any
    multival_sep: str
    reads_fg_output: bool
    fg_encoded: bool
    _default_ids: Optional[np.ndarray]

    def _init_sequence(self) -> None:
        if self.config.sequence_length <= 0:
            raise self._error(  # type: ignore[attr-defined]
                "a sequence feature needs sequence_length > 0 (the longest sequence kept; "
                f"longer ones are cut), found {self.config.sequence_length}"
            )
        if self.fg_encoded and self._default_ids is not None and len(self._default_ids) != 1:
            raise self._error(  # type: ignore[attr-defined]
                f"fg_encoded_default_value {self.config.fg_encoded_default_value!r}: a "
                "sequence's default is one element (one id)"
            )

    def _check_single_elements(self, values: pa.Array, lengths: np.ndarray) -> None:
        """FG output: an element holding several values joined by the separator is an error."""
        if not (self.reads_fg_output and len(values) and is_string_type(values.type)):
            return
        several = pc.match_substring(values, self.multival_sep).to_numpy(zero_copy_only=False)
        bad = first_true(several)
        if bad >= 0:
            raise self._error(  # type: ignore[attr-defined]
                f"sequence element {values[bad].as_py()!r} at row "
                f"{row_of_value(lengths, bad)} holds several values joined by "
                f"fg_encoded_multival_sep ({self.multival_sep!r}); multi-value sequence "
                "elements are not supported yet"
            )

    @property
    def is_sequence(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def sequence_length(self) -> int:
        """The most elements kept per row (``T`` of the padded ``[B, T, dim]`` embeddings)."""
        return int(self.config.sequence_length)

    def split_sequence(self, column: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """``(elements [N], lengths int32 [B])`` of a column, split as the parser splits it."""
        return self._split_sequence(column)

    def _split_sequence(self, column: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """``(elements [N], lengths int32 [B])`` of a string or list column, truncated.

        Strings are split on ``sequence_delim``; nulls and empty elements are dropped; each row
        keeps its first ``sequence_length`` elements.
        """
        if pa.types.is_null(column.type):
            return pa.array([], pa.string()), np.zeros(len(column), dtype=np.int32)
        if pa.types.is_string_view(column.type):
            column = pc.cast(column, pa.string())
        if is_string_type(column.type):
            delim = self.config.sequence_delim
            column = pc.split_pattern(column, delim) if delim else column
        elif not is_list_type(column.type) and not pa.types.is_integer(column.type):
            if not pa.types.is_floating(column.type):
                raise self._error(  # type: ignore[attr-defined]
                    "expected a sequence as a delimited string or a list column, found column "
                    f"type {column.type}"
                )
        values, lengths = flatten_cells(column)
        return truncate_rows(values, lengths, self.sequence_length)


class SequenceIdFeature(_SequenceMixin, IdFeature):
    """A sequence of categorical ids: a ``sequence_id_feature`` or a ``sequence_feature`` element.

    Ids map to table rows exactly as :class:`IdFeature` maps them.

    Example:
        >>> from recforge.protos import feature_pb2
        >>> cfg = feature_pb2.IdFeature(
        ...     feature_name="clicks", num_buckets=100, embedding_dim=4, sequence_length=2
        ... )
        >>> out = SequenceIdFeature(cfg).parse({"clicks": pa.array(["3;9;4", None, "7"])})
        >>> out["clicks.values"].tolist(), out["clicks.lengths"].tolist()
        ([3, 9, 7], [2, 0, 1])

    """

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        super().setup()
        self._init_sequence()

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse one batch of sequences.

        Args:
            columns: column name -> array of ``B`` rows; the feature reads ``self.column``.

        Returns:
            ``{"{name}.values": int64 [N], "{name}.lengths": int32 [B]}`` (``N`` elements
            after truncation; an empty or null cell is an empty sequence).

        Raises:
            FeatureError: missing column, non-integer or out-of-range ids (``num_buckets``;
                any kind in FG_NONE), a multi-value element of FG output.

        """
        values, lengths = self._split_sequence(self._get_column(columns))
        self._check_single_elements(values, lengths)
        ids = self._to_ids(values, lengths) if len(values) else np.zeros(0, dtype=np.int64)
        if self.fg_encoded:
            ids, lengths = fill_empty_bags(ids, lengths, self._default_ids)
        return {f"{self.name}.values": ids, f"{self.name}.lengths": lengths}


class SequenceRawFeature(_SequenceMixin, RawFeature):
    """A sequence of numbers: bucketized by ``boundaries`` into an id sequence, or dense.

    Null and empty elements are dropped; the ``normalizer`` applies before bucketizing. A
    dense sequence (no ``boundaries``; one number per element) parses into one padded row per
    sample, ``"{name}.values"`` ``float32 [B, 1 + sequence_length]``: the sequence's length,
    then its numbers, zero-padded. It can only be read by a sequence group (as an element of
    width 1), not pooled in a DEEP group.
    """

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        super().setup()
        self._init_sequence()
        if self.value_dim != 1:
            raise self._error(f"a sequence_raw_feature needs value_dim 1, found {self.value_dim}")

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse one batch of number sequences into bucket ids.

        Args:
            columns: column name -> array of ``B`` rows; the feature reads ``self.column``.

        Returns:
            ``{"{name}.values": int64 [N], "{name}.lengths": int32 [B]}``; dense:
            ``{"{name}.values": float32 [B, 1 + sequence_length]}`` (see the class).

        Raises:
            FeatureError: missing column, a non-numeric or non-finite element; FG_NONE: a
                bucket id that is no integer or out of range.

        """
        values, lengths = self._split_sequence(self._get_column(columns))
        self._check_single_elements(values, lengths)
        if not self.is_sparse:
            return {f"{self.name}.values": self._padded_dense(values, lengths)}
        if self.fg_encoded:  # the elements are bucket ids already
            ids = (
                self._encoded_ids(values, lengths, "bucket id")
                if len(values)
                else np.zeros(0, dtype=np.int64)
            )
            ids, lengths = fill_empty_bags(ids, lengths, self._default_ids)
            return {f"{self.name}.values": ids, f"{self.name}.lengths": lengths}
        flat = RawFeature.parse(self, {self.column: values})[f"{self.name}.values"]
        return {f"{self.name}.values": flat, f"{self.name}.lengths": lengths}

    @property
    def dense_width(self) -> int:
        """``1 + sequence_length``: the length, then the padded numbers (dense sequences)."""
        return 1 + self.sequence_length

    def _padded_dense(self, values: pa.Array, lengths: np.ndarray) -> np.ndarray:
        """``float32 [B, 1 + T]``: each row's length, then its numbers padded with zeros."""
        numbers = (
            RawFeature.parse(self, {self.column: values})[f"{self.name}.values"].reshape(-1)
            if len(values)
            else np.zeros(0, dtype=np.float32)
        )
        out = np.zeros((len(lengths), 1 + self.sequence_length), dtype=np.float32)
        out[:, 0] = lengths
        rows = np.repeat(np.arange(len(lengths)), lengths)
        positions = np.arange(len(numbers)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[rows, 1 + positions] = numbers
        return out


def sequence_element_configs(sequence: feature_pb2.SequenceFeature) -> list[tuple[str, Any]]:
    """The element features of a ``sequence_feature`` as standalone sequence configs.

    Element ``f`` of sequence ``s`` becomes a ``sequence_id_feature`` /
    ``sequence_raw_feature`` named ``"s__f"`` reading column ``"s__<f's column>"`` (raw
    input, FG_DAG / FG_NORMAL) or ``"s__f"`` (FG output, FG_NONE / FG_BUCKETIZE), with the
    sequence's ``sequence_length`` and ``sequence_delim``. Its ``embedding_name`` is kept, so an
    element can share a table with a non-sequence feature (e.g. the candidate item id).

    Args:
        sequence: a ``SequenceFeature`` message.

    Returns:
        ``[(kind, message)]`` with kind ``"sequence_id_feature"`` or ``"sequence_raw_feature"``
        and an ``IdFeature`` / ``RawFeature`` message (copies; ``sequence`` is unchanged).

    """
    out: list[tuple[str, Any]] = []
    prefix = sequence.sequence_name + SEQUENCE_NAME_SEPARATOR
    for element in sequence.features:
        kind = element.WhichOneof("feature")
        if kind is None:
            continue
        from recforge.features.sequence_derived import INPUT_FIELDS, element_config  # a cycle

        if kind in INPUT_FIELDS:  # a derived kind (combo, lookup, ..., combine)
            out.append(element_config(sequence, kind, getattr(element, kind)))
            continue
        message = type(getattr(element, kind))()
        message.CopyFrom(getattr(element, kind))
        expression = message.expression or message.feature_name
        message.expression = prefix + expression.split(":", 1)[-1]
        message.feature_name = prefix + message.feature_name
        message.sequence_length = sequence.sequence_length
        message.sequence_delim = sequence.sequence_delim
        out.append((f"sequence_{kind}", message))
    return out
