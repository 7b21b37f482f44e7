"""``DataParser``: record batch -> flat dict of tensors -> :class:`Batch`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recforge.datasets.batch import Batch
from recforge.datasets.batch_builder import (
    build_dense_features,
    build_sparse_features,
    infer_batch_size,
)
from recforge.datasets.errors import DataError
from recforge.datasets.sample_mask import mask_inputs
from recforge.features.base_feature import BaseFeature
from recforge.features.fg_dag import compute_features, produced_columns
from recforge.features.utils import as_array, ensure_writable, stable_hash


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(ensure_writable(np.ascontiguousarray(array)))


class DataParser:
    """Parse record batches into the flat tensor dict and the :class:`Batch` models consume.

    The flat dict (what :meth:`parse` returns and what an exported model takes as input) holds:

    * ``"{feature}.values"`` / ``"{feature}.lengths"``: sparse ids ``int64 [N]`` and bag
      lengths ``int32 [B]``; ``"{feature}.weights"`` ``float32 [N]``: the ids' weights of a
      weighted id feature;
    * ``"{feature}.elements.values"`` / ``"{feature}.elements.lengths"``: ids per element
      ``int64 [E]`` and elements per row ``int32 [B]`` of a sequence whose elements hold
      several ids (see :mod:`recforge.features.sequence_tokenize`), one more sparse key;
    * ``"{feature}.values"``: dense values ``float32 [B, value_dim]``;
    * ``"label.{column}"``, ``"weight.{column}"``: ``float32 [B]``; for a jagged label
      (one value per candidate, ``dlrm_hstu``) ``"label.{column}"`` is ``float32 [T]`` and
      ``"label.{column}.lengths"`` ``int32 [B]`` the values of each row;
    * ``"extra.{column}"``: ``int64 [B]``, a stable hash of the column's string values (a
      grouping key for grouped AUC; equal values give equal ids across batches and runs).

    Reserved columns are passed through untouched (see :meth:`select_reserves`).

    Args:
        features: the features, in config order (the order of keys in the batch).
        labels: label columns (empty in predict mode).
        sample_weights: sample-weight columns.
        reserved_columns: columns copied to ``Batch.reserves``.
        extra_id_columns: columns hashed into ``Batch.extras``.
        binary_labels: label columns that must hold 0 or 1 (the labels of binary losses).
        jagged_labels: label columns holding a list of values per row, each to its
            delimiter: a string column is split at it, a list column read as is, a number
            is one value.

    Example:
        >>> from recforge.features import create_features
        >>> parser = DataParser(create_features(configs), labels=["label"])  # doctest: +SKIP
        >>> batch = parser.parse_batch(record_batch)  # doctest: +SKIP

    """

    def __init__(
        self,
        features: Sequence[BaseFeature],
        labels: Sequence[str] = (),
        sample_weights: Sequence[str] = (),
        reserved_columns: Sequence[str] = (),
        extra_id_columns: Sequence[str] = (),
        binary_labels: Sequence[str] = (),
        jagged_labels: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.features = list(features)
        #: the features handed to the model (stub_type ones only feed other features)
        self.model_features = [f for f in self.features if not f.stub_type]
        # FG output modes read each feature's own column: stubs have nothing to do there
        self._computed = [f for f in self.features if not (f.stub_type and f.reads_fg_output)]
        produced = produced_columns(self._computed)
        self.binary_labels = set(binary_labels)
        self.labels = list(labels)
        self.jagged_labels = dict(jagged_labels or {})
        self.sample_weights = list(sample_weights)
        self.reserved_columns = list(reserved_columns)
        self.extra_id_columns = list(extra_id_columns)
        model = self.model_features
        #: sparse keys: the sparse features, each followed by its element lengths key when
        #: its sequence elements hold several ids (a sequence_tokenize_feature)
        self.sparse_keys: list[str] = []
        for f in model:
            if f.is_sparse:
                self.sparse_keys.append(f.name)
                if f.element_lengths_key is not None:
                    self.sparse_keys.append(f.element_lengths_key)
        #: weighted id features (``"{feature}.weights"`` in the flat dict), and those of them
        #: pooled by mean
        self.weighted_keys: list[str] = [f.name for f in model if f.is_weighted]
        self.mean_weighted_keys: list[str] = [
            f.name for f in model if f.is_weighted and f.pooling == "mean"
        ]
        self.dense_keys: list[str] = [f.name for f in model if not f.is_sparse]
        self.dense_dims: list[int] = [f.dense_width for f in model if not f.is_sparse]
        self._needed: dict[str, str] = {}
        for feature in self._computed:
            for column in feature.inputs:
                if column in produced:
                    continue  # another feature's FG output (feature:<name>)
                self._needed.setdefault(
                    column, f"feature '{feature.name}' ({type(feature).__name__})"
                )
        for what, columns in (
            ("label column (data_config.label_fields)", self.labels),
            ("sample weight column (data_config.sample_weight_fields)", self.sample_weights),
            ("reserved column", self.reserved_columns),
            ("extra id column", self.extra_id_columns),
        ):
            for column in columns:
                self._needed.setdefault(column, what)

    @property
    def input_columns(self) -> list[str]:
        """Every column the parser reads, without duplicates, in a stable order."""
        return list(self._needed)

    def check_columns(self, available: Sequence[str]) -> None:
        """Raise :class:`DataError` when a needed column is missing.

        Args:
            available: the columns present in the data.

        Raises:
            DataError: naming the missing column, what needs it and the available columns.

        """
        present = set(available)
        for column, needer in self._needed.items():
            if column not in present:
                hint = next(
                    (
                        f.missing_column_hint(present)
                        for f in self.features
                        if column in f.inputs and f.missing_column_hint(present)
                    ),
                    "",
                )
                raise DataError(
                    f"column '{column}' needed by {needer} not found in the input data; "
                    f"available columns: {sorted(present)}{hint}"
                )

    def _float_column(self, rb: pa.RecordBatch, column: str, kind: str) -> torch.Tensor:
        array = as_array(rb.column(column))
        return _to_tensor(self._numbers(array, column, kind, np.arange(len(array))))

    def _numbers(self, array: pa.Array, column: str, kind: str, rows: np.ndarray) -> np.ndarray:
        """``array`` as checked float32 numbers; ``rows[i]`` is the row of value ``i``."""
        try:
            values = pc.cast(array, pa.float32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise DataError(
                f"{kind} column '{column}': expected numbers, found type {array.type}: {err}"
            ) from None
        numbers = values.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~np.isfinite(numbers))  # nulls become NaN in to_numpy
        if bad.size:
            index = int(bad[0])
            value = float(numbers[index])
            found = "null" if array[index].as_py() is None else "NaN" if value != value else value
            raise DataError(
                f"{kind} column '{column}': expected a finite number, found {found} at row"
                f" {int(rows[index])}"
            )
        if kind == "label" and column in self.binary_labels:
            bad = np.flatnonzero((numbers != 0) & (numbers != 1))
            if bad.size:
                raise DataError(
                    f"label column '{column}': a binary loss needs labels 0 or 1, found "
                    f"{numbers[bad[0]]:g} at row {int(rows[bad[0]])}"
                )
        return numbers

    def _jagged_label(self, rb: pa.RecordBatch, column: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A jagged label column: its values ``float32 [T]`` and lengths ``int32 [B]``."""
        array = as_array(rb.column(column))
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            if array.null_count:
                row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
                raise DataError(
                    f"label column '{column}': expected values, found null at row {row}"
                )
            # an empty cell is a row without candidates (as an empty candidate sequence)
            empty = pc.equal(array, "")
            array = pc.split_pattern(array, self.jagged_labels[column])
            array = pc.if_else(empty, pa.scalar([], array.type), array)
        if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
            lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False)
            flat = pc.list_flatten(array)
            if pa.types.is_string(flat.type) or pa.types.is_large_string(flat.type):
                flat = pc.utf8_trim_whitespace(flat)
        else:
            lengths = np.ones(len(array), dtype=np.int64)
            flat = array
        rows = np.repeat(np.arange(len(lengths)), lengths)
        numbers = self._numbers(flat, column, "label", rows)
        return _to_tensor(numbers), _to_tensor(lengths.astype(np.int32))

    def parse(
        self,
        rb: pa.RecordBatch,
        masked_rows: Optional[np.ndarray] = None,
        masked_features: Sequence[str] = (),
    ) -> dict[str, torch.Tensor]:
        """Parse one record batch into the flat tensor dict (see the class docstring).

        Args:
            rb: a record batch with ``B`` rows holding :attr:`input_columns`.
            masked_rows: bool ``[B]``: rows where ``masked_features`` read a null
                (training with ``use_mask``, see :mod:`recforge.datasets.sample_mask`).
            masked_features: names of the features to mask.

        Returns:
            The flat dict of CPU tensors.

        Raises:
            DataError: a missing column, or a null / NaN label or sample weight.
            recforge.features.FeatureError: a feature value cannot be parsed.

        """
        self.check_columns(rb.schema.names)
        columns = {name: rb.column(name) for name in self._needed}

        def parse_one(feature: BaseFeature, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
            if masked_rows is not None and feature.name in masked_features:
                inputs = mask_inputs(inputs, feature, masked_rows)
            return feature.parse(inputs)

        parsed = compute_features(self._computed, columns, parse_one)
        out: dict[str, torch.Tensor] = {}
        for feature in self.model_features:
            for key, array in parsed[feature.name].items():
                out[key] = _to_tensor(array)
        for column in self.labels:
            if column in self.jagged_labels:
                values, lengths = self._jagged_label(rb, column)
                out[f"label.{column}"] = values
                out[f"label.{column}.lengths"] = lengths
            else:
                out[f"label.{column}"] = self._float_column(rb, column, "label")
        for column in self.sample_weights:
            out[f"weight.{column}"] = self._float_column(rb, column, "sample weight")
        for column in self.extra_id_columns:
            hashed = stable_hash(as_array(rb.column(column)))
            out[f"extra.{column}"] = _to_tensor(hashed.view(np.int64))
        return out

    def select_reserves(self, rb: pa.RecordBatch) -> Optional[pa.RecordBatch]:
        """Return the reserved columns of ``rb`` (``None`` when there are none)."""
        if not self.reserved_columns:
            return None
        return rb.select(self.reserved_columns)

    def to_batch(
        self, parsed: dict[str, torch.Tensor], reserves: Optional[pa.RecordBatch] = None
    ) -> Batch:
        """Assemble a :class:`Batch` from the flat tensor dict.

        The tensor work is done by the TorchScript-compatible functions of
        :mod:`recforge.datasets.batch_builder` over :attr:`sparse_keys`, :attr:`dense_keys`
        and :attr:`dense_dims`, so an export wrapper can script the same logic.

        Args:
            parsed: the output of :meth:`parse` (or the same keys from a serving request).
            reserves: pass-through columns (see :meth:`select_reserves`).

        Returns:
            The batch: ``sparse_features`` a ``KeyedJaggedTensor`` over :attr:`sparse_keys`
            (stride ``B``), ``dense_features`` a ``KeyedTensor`` ``[B, sum(dense_dims)]``.

        """
        batch_size = infer_batch_size(parsed, self.sparse_keys, self.dense_keys, self.labels)
        return Batch(
            sparse_features=build_sparse_features(
                parsed,
                self.sparse_keys,
                batch_size,
                self.weighted_keys,
                self.mean_weighted_keys,
            ),
            dense_features=build_dense_features(
                parsed, self.dense_keys, self.dense_dims, batch_size
            ),
            labels={k: parsed[f"label.{k}"] for k in self.labels if f"label.{k}" in parsed},
            label_lengths={
                k: parsed[f"label.{k}.lengths"]
                for k in self.labels
                if f"label.{k}.lengths" in parsed
            },
            sample_weights={
                k: parsed[f"weight.{k}"] for k in self.sample_weights if f"weight.{k}" in parsed
            },
            extras={
                k: parsed[f"extra.{k}"] for k in self.extra_id_columns if f"extra.{k}" in parsed
            },
            reserves=reserves,
        )

    def parse_batch(
        self,
        rb: pa.RecordBatch,
        masked_rows: Optional[np.ndarray] = None,
        masked_features: Sequence[str] = (),
    ) -> Batch:
        """Parse ``rb`` straight into a :class:`Batch` (:meth:`parse` + :meth:`to_batch`)."""
        parsed = self.parse(rb, masked_rows, masked_features)
        return self.to_batch(parsed, self.select_reserves(rb))

    def __repr__(self) -> str:
        return (
            f"DataParser(sparse={self.sparse_keys}, dense={self.dense_keys}, "
            f"labels={self.labels}, sample_weights={self.sample_weights})"
        )
