"""``sequence_`` variants of the overlap, kv_dot_product and custom features.

A ``sequence_overlap_feature`` (``sequence_kv_dot_product``, ``sequence_custom_feature``)
computes its kind's value once per element of a sequence: its sequence inputs hold elements
joined by ``sequence_delim`` (or lists of elements), its other inputs one value per row that
every element of the row sees. Which inputs are sequences follows TorchEasyRec's rule:
the inputs named in ``sequence_fields`` when it is set, else the ``item:`` side inputs.
Each element gives one id (``boundaries`` or an id kind are needed: dense number sequences
are not supported, as for ``sequence_raw_feature``), each row keeps its first
``sequence_length`` elements, and a null or empty sequence is one element computed from an
empty value (as TorchEasyRec's sequence features give one default element).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import BaseFeature, FeatureError
from recforge.features.custom_feature import CustomFeature
from recforge.features.derived_feature import input_column
from recforge.features.kv_dot_product import KvDotProduct
from recforge.features.overlap_feature import OverlapFeature
from recforge.features.sequence_feature import SequenceIdFeature, SequenceRawFeature
from recforge.features.utils import first_true, is_list_type, is_string_type


def sequence_elements(column: pa.Array, delim: str) -> tuple[pa.Array, np.ndarray]:
    """Split sequence cells into elements.

    Args:
        column: ``B`` cells: strings of elements joined by ``delim``, or lists of elements.
        delim: the element delimiter of string cells.

    Returns:
        ``(elements [N], lengths int64 [B])``; a null or empty cell is one null element.

    Raises:
        ValueError: a column that is neither strings nor lists.

    """
    if pa.types.is_string_view(column.type) or pa.types.is_null(column.type):
        column = pc.cast(column, pa.string())
    if is_string_type(column.type):
        column = pc.split_pattern(column, delim) if delim else column
    if not is_list_type(column.type):
        raise ValueError(
            f"expected sequences joined by sequence_delim or lists, found {column.type}"
        )
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    elements = pc.list_flatten(column)
    empty = lengths == 0
    if empty.any():
        parents = np.concatenate(
            [pc.list_parent_indices(column).to_numpy(zero_copy_only=False), np.flatnonzero(empty)]
        )
        padded = pa.concat_arrays([elements, pa.nulls(int(empty.sum()), elements.type)])
        elements = padded.take(pa.array(np.argsort(parents, kind="stable")))
        lengths = np.where(empty, 1, lengths)
    return elements, lengths.astype(np.int64)


class _SequenceDerived:
    """Mixin over a :class:`~recforge.features.derived_feature.DerivedFeature` kind."""

    name: str
    config: Any
    fg_mode: int
    multival_sep: str
    expressions: list[str]

    def make_inner(self, message: Any) -> BaseFeature:
        """The sequence id / raw feature of ``message`` with this feature's sequence fields."""
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

    def is_sequence_input(self, expression: str) -> bool:
        """TorchEasyRec's rule: listed in ``sequence_fields``, else an ``item:`` input."""
        if self.config.sequence_fields:
            return input_column(expression) in self.config.sequence_fields
        return expression.split(":", 1)[0] == "item" if ":" in expression else False

    def derive(self, inputs: list[pa.Array]) -> pa.Array:
        """``list [B]`` of the kind's value per element."""
        flags = [self.is_sequence_input(e) for e in self.expressions]
        if not any(flags):
            raise FeatureError(
                f"feature '{self.name}': none of its inputs {self.expressions} is a sequence; "
                "sequence inputs are the item: ones, or those named in sequence_fields"
            )
        counts = None
        element_inputs: list = []
        for expression, column, is_seq in zip(self.expressions, inputs, flags):
            if not is_seq:
                element_inputs.append(column)
                continue
            try:
                elements, lengths = sequence_elements(column, self.config.sequence_delim)
            except ValueError as e:
                raise FeatureError(
                    f"feature '{self.name}' (column '{input_column(expression)}'): {e}"
                ) from None
            if counts is not None:
                bad = first_true(lengths != counts)
                if bad >= 0:
                    raise FeatureError(
                        f"feature '{self.name}' (column '{input_column(expression)}'): expected "
                        f"{int(counts[bad])} sequence elements as in the other sequence input, "
                        f"found {int(lengths[bad])} at row {bad}"
                    )
            counts = lengths
            element_inputs.append(elements)
        assert counts is not None
        rows = pa.array(np.repeat(np.arange(len(counts)), counts))
        element_inputs = [
            column if is_seq else column.take(rows) for column, is_seq in zip(element_inputs, flags)
        ]
        values = super().derive(element_inputs)  # type: ignore[misc]
        inner = self.inner  # type: ignore[attr-defined]
        if values.null_count and isinstance(inner, SequenceRawFeature):
            # a sequence drops null elements; here a null is the kind's default value
            values = values.fill_null(float(inner._default[0]))
        offsets = np.zeros(len(counts) + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), values)


class SequenceOverlapFeature(_SequenceDerived, OverlapFeature):
    """``sequence_overlap_feature``: an overlap per element (see the module docstring)."""


class SequenceKvDotProduct(_SequenceDerived, KvDotProduct):
    """``sequence_kv_dot_product``: a dot product per element (see the module docstring)."""


class SequenceCustomFeature(_SequenceDerived, CustomFeature):
    """``sequence_custom_feature``: the operator per element (see the module docstring)."""
