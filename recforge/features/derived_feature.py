"""``DerivedFeature``: a feature computed from several raw columns, then bucketized.

The FG kinds combo, lookup, match, expr, overlap, kv_dot_product, bool_mask, combine,
tokenize and custom compute an intermediate value per row (strings for ids, numbers
otherwise) from their raw input columns, and then turn it into model input
exactly as an ``id_feature`` or a ``raw_feature`` would (``hash_bucket_size`` /
``vocab_list`` / ``vocab_dict`` / ``num_buckets``, or ``normalizer`` / ``boundaries`` /
``default_value``). A derived feature therefore holds an *output* feature, an
:class:`IdFeature` or :class:`RawFeature` built from the same-named fields of its config,
and hands it the intermediate column. For FG output (``FG_NONE`` / ``FG_BUCKETIZE``: the
column named by ``feature_name`` holds what the FG wrote) the output feature reads the data
directly, so those modes behave as they do for id and raw features.
"""

from __future__ import annotations

import abc
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from recforge.features.base_feature import BaseFeature, FeatureError
from recforge.features.fg_mode import FG_DAG
from recforge.features.id_feature import IdFeature
from recforge.features.raw_feature import RawFeature
from recforge.features.utils import as_array
from recforge.protos import feature_pb2

#: input side of a constant (``"const:5"``: the value 5 in every row)
CONST_SIDE = "const"
#: fields never copied to the output feature (the derived kind reads them itself)
_OWN_FIELDS = {"expression", "value_dim", "separator"}


def copy_fields(source: Any, target: Any, skip: set[str] = _OWN_FIELDS) -> Any:
    """Copy the fields ``source`` sets into the same-named fields of ``target``.

    Args:
        source: a feature message (e.g. ``LookupFeature``).
        target: a fresh message (``IdFeature`` or ``RawFeature``), changed in place.
        skip: field names left alone.

    Returns:
        ``target``.

    """
    names = {f.name for f in source.DESCRIPTOR.fields}
    for field in target.DESCRIPTOR.fields:
        name = field.name
        if name in skip or name not in names:
            continue
        value = getattr(source, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            getattr(target, name).update(dict(value))
        elif field.is_repeated:
            getattr(target, name).extend(list(value))
        elif source.HasField(name):
            if field.message_type is not None:
                getattr(target, name).CopyFrom(value)
            else:
                setattr(target, name, value)
    return target


def split_expression(expression: str) -> tuple[str, str]:
    """``"side:name"`` -> ``(side, name)``; without a side, ``("", expression)``."""
    if ":" in expression:
        side, name = expression.split(":", 1)
        return side, name
    return "", expression


class DerivedFeature(BaseFeature):
    """Base of the FG kinds computed from raw columns (see the module docstring).

    Subclasses build ``self._out`` (an :class:`IdFeature` or :class:`RawFeature`) with
    :meth:`_id_output` / :meth:`_raw_output`, list their raw inputs in :meth:`raw_inputs`
    and compute the output feature's column in :meth:`compute`.
    """

    _out: BaseFeature

    # ------------------------------------------------------------------ output feature
    def _output_mode(self) -> int:
        # raw modes: the output feature reads the computed column under feature_name
        return self.fg_mode if self.reads_fg_output else FG_DAG

    def _id_output(self, skip: tuple[str, ...] = (), **fields: Any) -> IdFeature:
        """An id output feature from this config's id fields (``fields`` override).

        Args:
            skip: more fields not to copy (a same-named field the kind reads itself).
            **fields: output fields to set.

        """
        message = copy_fields(self.config, feature_pb2.IdFeature(), _OWN_FIELDS | set(skip))
        for name, value in fields.items():
            setattr(message, name, value)
        message.expression = self.name
        return IdFeature(message, self._output_mode(), self.multival_sep)

    def _raw_output(
        self, value_dim: int = 1, skip: tuple[str, ...] = (), **fields: Any
    ) -> RawFeature:
        """A number output feature from this config's raw fields (``fields`` override).

        Args:
            value_dim: numbers per row.
            skip: more fields not to copy (a same-named field the kind reads itself).
            **fields: output fields to set.

        """
        message = copy_fields(self.config, feature_pb2.RawFeature(), _OWN_FIELDS | set(skip))
        message.value_dim = value_dim
        for name, value in fields.items():
            setattr(message, name, value)
        message.expression = self.name
        if self.reads_fg_output and value_dim > 1 and not message.HasField("separator"):
            message.separator = self.multival_sep
        return RawFeature(message, self._output_mode(), self.multival_sep)

    # ------------------------------------------------------------------ description
    @property
    def table_size_source(self) -> str:
        """The output feature's table-size field."""
        return self._out.table_size_source

    @property
    def is_sparse(self) -> bool:
        """Whether the output feature is looked up in an embedding table."""
        return self._out.is_sparse

    @property
    def num_embeddings(self) -> int:
        """The output feature's table rows."""
        return self._out.num_embeddings

    @property
    def zch_config(self) -> Optional[Any]:
        """The id output's ``zch`` (copied from this config), else None."""
        return self._out.zch_config

    @property
    def encoded_id_limit(self) -> int:
        """The id output's bound on encoded ids."""
        return self._out.encoded_id_limit

    @property
    def value_dim(self) -> int:
        """Numbers per sample of a dense output."""
        return self._out.value_dim

    @property
    def dense_embedding(self) -> Optional[Any]:
        """The number output's ``mlp`` / ``autodis`` settings (none for a sequence)."""
        return None if self.is_sequence else self._out.dense_embedding

    @property
    @abc.abstractmethod
    def raw_inputs(self) -> list[str]:
        """The ``side:name`` expressions the feature computes from (raw modes)."""

    @property
    def inputs(self) -> list[str]:
        """Source columns: ``[feature_name]`` for FG output, else the raw input columns."""
        if self.reads_fg_output:
            return [self.name]
        columns = [
            split_expression(e)[1] for e in self.raw_inputs if split_expression(e)[0] != CONST_SIDE
        ]
        return list(dict.fromkeys(columns))

    def missing_column_hint(self, available: Any) -> str:
        """A hint for a missing FG-output column when the data has the raw inputs."""
        if not self.reads_fg_output:
            return ""
        raw = [split_expression(e)[1] for e in self.raw_inputs]
        if raw and all(c in available for c in raw):
            return (
                f"; the data has the raw input columns {raw}; set data_config.fg_mode: FG_DAG "
                "to compute the feature from them"
            )
        return ""

    def _require_inputs(self, *fields: str) -> None:
        """Refuse a config computing from raw columns whose input ``fields`` are all unset."""
        if not self.reads_fg_output and not self.raw_inputs:
            raise FeatureError(
                f"feature '{self.name}': expected its input fields ({', '.join(fields)}) to be "
                "set, found none"
            )

    # ------------------------------------------------------------------ parsing
    def _error(self, message: str) -> FeatureError:
        return FeatureError(f"feature '{self.name}' (columns {self.inputs}): {message}")

    def _column_error(self, column: str, message: str) -> FeatureError:
        return FeatureError(f"feature '{self.name}' (column '{column}'): {message}")

    def input_column(
        self, columns: dict[str, pa.Array], expression: str, num_rows: Optional[int]
    ) -> pa.Array:
        """The raw column of ``expression``; ``"const:v"`` gives ``v`` in every row.

        Raises:
            FeatureError: the column is missing.

        """
        side, name = split_expression(expression)
        if side == CONST_SIDE:
            return pa.repeat(pa.scalar(name, pa.string()), int(num_rows or 0))
        if name not in columns:
            raise self._column_error(
                name, f"column not found; available columns: {sorted(columns)}"
            )
        return as_array(columns[name])

    def input_columns(self, columns: dict[str, pa.Array]) -> list[pa.Array]:
        """The column of each :attr:`raw_inputs` expression, in order (see :meth:`input_column`)."""
        num_rows = self.num_rows(columns, self.raw_inputs)
        return [self.input_column(columns, e, num_rows) for e in self.raw_inputs]

    @staticmethod
    def num_rows(columns: dict[str, pa.Array], expressions: list[str]) -> int:
        """Rows of the batch (from the first non-constant input)."""
        for expression in expressions:
            side, name = split_expression(expression)
            if side != CONST_SIDE and name in columns:
                return len(columns[name])
        return len(next(iter(columns.values()))) if columns else 0

    @abc.abstractmethod
    def compute(self, columns: dict[str, pa.Array]) -> pa.Array:
        """The output feature's input column ``[B]`` computed from the raw columns."""

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse one batch: FG output directly, raw inputs through :meth:`compute`.

        Returns:
            Sparse: ``{"{name}.values": int64 [N], "{name}.lengths": int32 [B]}``.
            Dense: ``{"{name}.values": float32 [B, value_dim]}``.

        Raises:
            FeatureError: a missing column, a malformed value (naming column and row), or
                a computed value the output cannot take (naming the inputs and row).

        """
        if self.reads_fg_output:
            return self._out.parse(columns)
        return self._emit(self.compute(columns))

    def _emit(self, computed: pa.Array) -> dict[str, np.ndarray]:
        """The output feature's parse of the computed column (its errors name the inputs)."""
        try:
            return self._out.parse({self.name: computed})
        except FeatureError as e:  # the output feature names its internal column: name the sources
            sources = ", ".join(f"'{c}'" for c in self.inputs)
            message = str(e).replace(
                f"(column '{self.name}')", f"(computed from columns {sources})", 1
            )
            raise FeatureError(message) from None
