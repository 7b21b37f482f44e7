"""``DerivedFeature``: a feature computed from raw inputs, then encoded like an id or raw one.

TorchEasyRec's overlap, kv_dot_product, bool_mask, combine, tokenize and custom features each
compute one value (or a bag of values) per row from their inputs and then bucketize it like an
``IdFeature`` (``num_buckets`` / ``hash_bucket_size`` / vocabularies) or a ``RawFeature``
(``normalizer``, ``boundaries``). :class:`DerivedFeature` holds that second half as an inner
:class:`~recforge.features.id_feature.IdFeature` or
:class:`~recforge.features.raw_feature.RawFeature` built from the kind's own fields, so every
kind only writes its computation (:meth:`DerivedFeature.derive`).

With FG output (``fg_mode`` FG_NONE or FG_BUCKETIZE) nothing is computed: the inner feature
reads the column named by ``feature_name`` as it would for an id or raw feature.
"""

from __future__ import annotations

import abc
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import BaseFeature, FeatureError
from recforge.features.fg_mode import DEFAULT_MULTIVAL_SEP, FG_NONE
from recforge.features.id_feature import IdFeature
from recforge.features.raw_feature import RawFeature
from recforge.features.utils import as_array, is_list_type, is_string_type
from recforge.protos import feature_pb2

#: fields every kind shares with the inner id / raw feature message (copied when set)
_COMMON_FIELDS = (
    "embedding_name",
    "embedding_dim",
    "pooling",
    "init_fn",
    "trainable",
    "data_type",
    "fg_encoded_default_value",
)


def input_column(expression: str) -> str:
    """``"user:query"`` -> ``"query"`` (the raw column an FG input names)."""
    return expression.split(":", 1)[1] if ":" in expression else expression


def copy_fields(source: Any, target: Any, names: tuple[str, ...]) -> None:
    """Copy the set fields ``names`` of ``source`` into ``target`` (both protobuf messages)."""
    target_fields = target.DESCRIPTOR.fields_by_name
    for name in names:
        if name not in source.DESCRIPTOR.fields_by_name or name not in target_fields:
            continue
        fd = source.DESCRIPTOR.fields_by_name[name]
        value = getattr(source, name)
        if fd.is_repeated:
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                getattr(target, name).update(dict(value))
            else:
                getattr(target, name).extend(value)
        elif source.HasField(name):
            setattr(target, name, value)


def split_terms(column: pa.Array, separator: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Split string (or list) cells into flat terms.

    Args:
        column: ``string [B]`` cells joined by ``separator``, or ``list<...> [B]``.
        separator: the multi-value separator of string cells.

    Returns:
        ``(terms [N], rows int64 [N], lengths int64 [B])``: the non-empty, non-null terms in
        row order, the row of each term and the terms per row.

    """
    num_rows = len(column)
    if pa.types.is_null(column.type):
        return pa.array([], pa.string()), np.zeros(0, np.int64), np.zeros(num_rows, np.int64)
    if pa.types.is_string_view(column.type):
        column = pc.cast(column, pa.string())
    if is_string_type(column.type) and separator:
        column = pc.split_pattern(column, separator)
    if is_list_type(column.type):
        values = pc.list_flatten(column)
        rows = pc.list_parent_indices(column).to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        values = column
        rows = np.arange(num_rows, dtype=np.int64)
    keep = values.is_valid()
    if is_string_type(values.type):
        keep = pc.and_kleene(keep, pc.not_equal(values, ""))
    if keep.false_count:
        mask = keep.to_numpy(zero_copy_only=False)
        values, rows = values.filter(keep), rows[mask]
    lengths = np.bincount(rows, minlength=num_rows).astype(np.int64)
    return values, rows, lengths


class DerivedFeature(BaseFeature):
    """Base of the features whose value is computed from several raw inputs.

    Subclasses implement :meth:`build_inner` (the id / raw feature that encodes the computed
    value), :attr:`expressions` (the FG inputs, ``side:name``) and :meth:`derive`.

    Args:
        feature_config: the kind's message, or a ``FeatureConfig`` holding it.
        fg_mode: ``data_config.fg_mode``.
        fg_encoded_multival_sep: ``data_config.fg_encoded_multival_sep``.

    """

    def __init__(
        self,
        feature_config: Any,
        fg_mode: int = FG_NONE,
        fg_encoded_multival_sep: str = DEFAULT_MULTIVAL_SEP,
    ) -> None:
        super().__init__(feature_config, fg_mode, fg_encoded_multival_sep)
        if not self.reads_fg_output and not self.expressions:
            raise FeatureError(
                f"feature '{self.name}': expected its input fields "
                f"({', '.join(self.input_fields)}) to be set, found none"
            )
        self.inner: BaseFeature = self.build_inner()

    # ------------------------------------------------------------------ to implement
    @property
    @abc.abstractmethod
    def expressions(self) -> list[str]:
        """The FG inputs (``side:name``), in the kind's order."""

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The config fields naming the inputs (for messages)."""
        return ("expression",)

    @abc.abstractmethod
    def build_inner(self) -> BaseFeature:
        """The id / raw feature encoding the computed values (same name and ``fg_mode``)."""

    @abc.abstractmethod
    def derive(self, inputs: list[pa.Array]) -> pa.Array:
        """Compute the feature's values (before bucketization) of one batch.

        Args:
            inputs: one array of ``B`` rows per entry of :attr:`expressions`.

        Returns:
            ``B`` rows the inner feature parses (numbers, strings or lists of them; nulls
            take the inner feature's default).

        """

    # ------------------------------------------------------------------ helpers
    def inner_message(self, kind: str) -> Any:
        """A new ``IdFeature`` / ``RawFeature`` message with this feature's shared fields.

        Args:
            kind: ``"IdFeature"`` or ``"RawFeature"``.

        """
        message = getattr(feature_pb2, kind)(feature_name=self.name, expression=self.name)
        copy_fields(self.config, message, _COMMON_FIELDS)
        return message

    def make_inner(self, message: Any) -> BaseFeature:
        """Build the inner feature of ``message`` (an ``IdFeature`` or ``RawFeature``)."""
        cls = IdFeature if message.DESCRIPTOR.name == "IdFeature" else RawFeature
        return cls(message, self.fg_mode, self.multival_sep)

    def data_error(self, column: str, row: int, message: str) -> FeatureError:
        """An error about a value of one input column, naming the feature, column and row."""
        return FeatureError(f"feature '{self.name}' (column '{column}'): {message} at row {row}")

    # ------------------------------------------------------------------ description
    @property
    def expression_column(self) -> str:
        """The raw column of the first input."""
        return input_column(self.expressions[0]) if self.expressions else self.name

    @property
    def inputs(self) -> list[str]:
        """``[feature_name]`` for FG output, else the raw column of every input."""
        if self.reads_fg_output:
            return [self.name]
        return list(dict.fromkeys(input_column(e) for e in self.expressions))

    @property
    def table_size_source(self) -> str:
        """As the inner feature's."""
        return self.inner.table_size_source

    @property
    def is_sparse(self) -> bool:
        """As the inner feature's."""
        return self.inner.is_sparse

    @property
    def num_embeddings(self) -> int:
        """As the inner feature's."""
        return self.inner.num_embeddings

    @property
    def value_dim(self) -> int:
        """As the inner feature's."""
        return self.inner.value_dim

    def missing_column_hint(self, available: Any) -> str:
        """As :meth:`BaseFeature.missing_column_hint`, for the first input."""
        if not self.reads_fg_output or not self.expressions:
            return ""
        return super().missing_column_hint(available)

    # ------------------------------------------------------------------ parsing
    def _inputs(self, columns: dict[str, pa.Array]) -> list[pa.Array]:
        out = []
        for expression in self.expressions:
            column = input_column(expression)
            if column not in columns:
                raise FeatureError(
                    f"feature '{self.name}' (column '{column}'): column not found; available "
                    f"columns: {sorted(columns)}"
                )
            out.append(as_array(columns[column]))
        return out

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse one batch.

        Args:
            columns: column name -> array of ``B`` rows.

        Returns:
            What the inner feature returns: ``{"{name}.values", "{name}.lengths"}`` (sparse)
            or ``{"{name}.values": float32 [B, value_dim]}`` (dense).

        Raises:
            FeatureError: a missing column, or a value the kind or the inner feature refuses
                (naming the column and the row).

        """
        if self.reads_fg_output:
            return self.inner.parse(columns)
        derived: Optional[pa.Array] = self.derive(self._inputs(columns))
        try:
            return self.inner.parse({self.name: derived})
        except FeatureError as e:  # the inner feature names its own, computed column
            inner_column = f"(column '{self.name}')"
            sources = ", ".join(f"'{c}'" for c in self.inputs)
            message = str(e).replace(inner_column, f"(computed from columns {sources})", 1)
            raise FeatureError(message) from None
