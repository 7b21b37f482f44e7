"""Sequence variants of the derived features (combo, lookup, match, expr, overlap, ...).

A ``sequence_combo_feature`` (``sequence_lookup_feature``, ``sequence_overlap_feature``,
...), or such an element of a ``sequence_feature``, computes its kind once per sequence
element. Which inputs are sequences follows TorchEasyRec: the columns listed in
``sequence_fields`` when it is set; otherwise, with one input, that input (unless its side is
``feature``), and with several, the ``item:`` inputs; a ``sequence_bool_mask_feature``'s
values and mask are both sequences (an element's values masked by its mask items).
Sequence cells are split on ``sequence_delim`` (list columns are sequences natively) and
cut to their first ``sequence_length`` elements; a null or empty cell is one empty element
(TorchEasyRec's sequences give one default element); every sequence input of a row must have as many
elements; the other inputs (e.g. the user's kv map) are the same for every element of the
row. Inside a ``sequence_feature`` named ``s`` the sequence inputs read the columns
``s__<column>`` and the feature is named ``s__<feature_name>``; the other inputs keep their
columns.

Each element gives one id (a sequence feature is a sequence of single ids in recforge): the
first id the kind gives for it (TorchEasyRec's ``value_dim: 1``); an element that gives none
(e.g. a key missing from the map, without ``default_value``) is left out of the sequence.
Only id outputs are supported: the kind must have ``boundaries`` or an id field
(``hash_bucket_size``, ``num_buckets``, ``vocab_list``, ``vocab_dict``) as it has them (dense
number sequences are not built yet). With FG output (``FG_NONE`` / ``FG_BUCKETIZE``) the
column named by ``feature_name`` holds the sequence as a ``sequence_id_feature`` /
``sequence_raw_feature`` would read it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import BaseFeature
from recforge.features.bool_mask_feature import BoolMaskFeature
from recforge.features.combine_feature import CombineFeature
from recforge.features.combo_feature import ComboFeature
from recforge.features.custom_feature import CustomFeature
from recforge.features.derived_feature import DerivedFeature, copy_fields, split_expression
from recforge.features.expr_feature import ExprFeature
from recforge.features.kv_dot_product import KvDotProduct
from recforge.features.lookup_feature import LookupFeature
from recforge.features.match_feature import ALL, MatchFeature
from recforge.features.overlap_feature import OverlapFeature
from recforge.features.sequence_feature import (
    SEQUENCE_NAME_SEPARATOR,
    SequenceIdFeature,
    SequenceRawFeature,
)
from recforge.features.utils import (
    as_array,
    flatten_cells,
    is_list_type,
    is_string_type,
    truncate_rows,
)
from recforge.protos import feature_pb2

#: message fields holding the inputs of each kind (one expression, or a repeated field)
INPUT_FIELDS: dict[str, tuple[str, ...]] = {
    "combo_feature": ("expression",),
    "lookup_feature": ("map", "key"),
    "match_feature": ("nested_map", "pkey", "skey"),
    "expr_feature": ("variables",),
    "overlap_feature": ("query", "title"),
    "kv_dot_product": ("query", "document"),
    "combine_feature": ("expression",),
    "custom_feature": ("expression",),
    "bool_mask_feature": ("expression",),
}
#: the fields that make a kind's output ids, in the order error messages name them
_ID_FIELDS = ("boundaries", "hash_bucket_size", "num_buckets", "vocab_list", "vocab_dict")


def sequence_inputs(config: Any, expressions: list[str]) -> set[str]:
    """The expressions among ``expressions`` that are sequences (TorchEasyRec's rule)."""
    fields = list(config.sequence_fields)
    if fields:
        return {e for e in expressions if split_expression(e)[1] in fields}
    if config.DESCRIPTOR.name == "BoolMaskFeature":  # values and mask pair up per element
        return {e for e in expressions if split_expression(e)[0] not in ("feature", "const")}
    if len(expressions) == 1:
        return {e for e in expressions if split_expression(e)[0] != "feature"}
    return {e for e in expressions if split_expression(e)[0] == "item"}


def _expressions(kind: str, message: Any) -> list[str]:
    out: list[str] = []
    for field in INPUT_FIELDS[kind]:
        value = getattr(message, field)
        out += [value] if isinstance(value, str) else list(value)
    return [e for e in out if e and e != ALL]


def element_config(
    sequence: feature_pb2.SequenceFeature, kind: str, element: Any
) -> tuple[str, Any]:
    """A combo / lookup / match / expr element of a ``sequence_feature`` as a standalone config.

    Args:
        sequence: the ``SequenceFeature`` message.
        kind: the element's kind (``"combo_feature"``, ...).
        element: its message (not changed).

    Returns:
        ``("sequence_<kind>", message)``: named ``s__<feature_name>``, its sequence inputs
        reading ``s__<column>``, with the sequence's length and delimiter.

    """
    message = type(element)()
    message.CopyFrom(element)
    prefix = sequence.sequence_name + SEQUENCE_NAME_SEPARATOR
    is_sequence = sequence_inputs(message, _expressions(kind, message))
    # non-sequence inputs keep their column; sequence inputs read the sequence's column

    def rename(expression: str) -> str:
        if expression not in is_sequence:
            return expression
        side, name = split_expression(expression)
        return f"{side}:{prefix}{name}" if side else prefix + name

    for field in INPUT_FIELDS[kind]:
        value = getattr(message, field)
        if isinstance(value, str):
            setattr(message, field, rename(value))
        else:
            renamed = [rename(v) for v in value]
            del value[:]
            value.extend(renamed)
    if not message.sequence_fields:  # keep which inputs are sequences after renaming
        message.sequence_fields.extend(split_expression(rename(e))[1] for e in sorted(is_sequence))
    message.feature_name = prefix + message.feature_name
    message.sequence_length = sequence.sequence_length
    message.sequence_delim = sequence.sequence_delim
    return f"sequence_{kind}", message


class _SequenceDerived:
    """Computes a derived kind per sequence element (mixed into the kind's class)."""

    name: str
    config: Any
    reads_fg_output: bool
    multival_sep: str
    fg_mode: int
    raw_inputs: list[str]

    def _init_sequence(self, kind: str) -> None:
        cfg = self.config
        if cfg.sequence_length <= 0:
            raise self._error(  # type: ignore[attr-defined]
                "a sequence feature needs sequence_length > 0 (the longest sequence kept), "
                f"found {cfg.sequence_length}"
            )
        if not self._out.is_sparse:  # type: ignore[attr-defined]
            fields = [f for f in _ID_FIELDS if f in cfg.DESCRIPTOR.fields_by_name]
            raise self._error(  # type: ignore[attr-defined]
                f"a sequence_{kind} needs {' or '.join(fields)} (one id per element); dense "
                "number sequences are not built yet"
            )
        self._kind = kind
        self._sequence_exprs = sequence_inputs(cfg, self.raw_inputs)
        if not self._sequence_exprs and not self.reads_fg_output:
            raise self._error(  # type: ignore[attr-defined]
                "no input is a sequence: list them in sequence_fields (or give the sequence "
                "inputs the item: side)"
            )
        self._sequence_out: BaseFeature = self._fg_output_sequence()

    def _fg_output_sequence(self) -> BaseFeature:
        """The feature reading FG output (the sequence of ids under ``feature_name``)."""
        inner = self._out  # type: ignore[attr-defined]
        if isinstance(inner.config, feature_pb2.RawFeature):
            message = copy_fields(inner.config, feature_pb2.RawFeature(), skip=set())
            cls: type = SequenceRawFeature
        else:
            message = copy_fields(inner.config, feature_pb2.IdFeature(), skip=set())
            cls = SequenceIdFeature
        message.sequence_length = self.config.sequence_length
        message.sequence_delim = self.config.sequence_delim
        return cls(message, self.fg_mode, self.multival_sep)

    @property
    def is_sequence(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def sequence_length(self) -> int:
        """The most elements kept per row."""
        return int(self.config.sequence_length)

    def _split(self, column: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """``(elements [N], lengths int32 [B])`` of a sequence column, cut to the length.

        A null or empty cell is one null element.
        """
        if pa.types.is_string_view(column.type) or pa.types.is_large_string(column.type):
            column = pc.cast(column, pa.string())
        if is_string_type(column.type):
            delim = self.config.sequence_delim
            if delim:
                column = pc.split_pattern(column, delim)
        elif not is_list_type(column.type):
            column = pa.ListArray.from_arrays(
                pa.array(np.arange(len(column) + 1, dtype=np.int32)), column
            )
        values, lengths = flatten_cells(column, drop_empty=False)
        empty = lengths == 0
        if empty.any():
            # the null element goes after the (no) elements of its row: a stable sort by row
            rows = np.concatenate(
                [np.repeat(np.arange(len(lengths)), lengths), np.flatnonzero(empty)]
            )
            padded = pa.concat_arrays([values, pa.nulls(int(empty.sum()), values.type)])
            values = padded.take(pa.array(np.argsort(rows, kind="stable")))
            lengths = np.where(empty, 1, lengths).astype(np.int32)
        return truncate_rows(values, lengths, self.sequence_length)

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse one batch of sequences.

        Returns:
            ``{"{name}.values": int64 [N], "{name}.lengths": int32 [B]}`` (one id per kept
            element).

        Raises:
            FeatureError: see the kind's ``parse``; also sequence inputs of one row with
                different lengths.

        """
        if self.reads_fg_output:
            return self._sequence_out.parse(columns)
        num_rows = DerivedFeature.num_rows(columns, self.raw_inputs)
        lengths = None
        exploded: dict[str, pa.Array] = {}
        first_name = ""
        for expression in sorted(self._sequence_exprs):
            name = split_expression(expression)[1]
            if name not in columns:
                continue  # the kind's parse names the missing column
            values, counts = self._split(as_array(columns[name]))
            if lengths is None:
                lengths, first_name = counts, name
            elif not np.array_equal(lengths, counts):
                row = int(np.flatnonzero(lengths != counts)[0])
                raise self._error(  # type: ignore[attr-defined]
                    f"sequence inputs '{first_name}' and '{name}' have {int(lengths[row])} and "
                    f"{int(counts[row])} elements at row {row}; expected as many"
                )
            exploded[name] = values
        if lengths is None:
            lengths = np.zeros(num_rows, dtype=np.int32)
        parents = pa.array(np.repeat(np.arange(num_rows, dtype=np.int64), lengths))
        for expression in self.raw_inputs:
            side, name = split_expression(expression)
            if expression not in self._sequence_exprs and name in columns and side != "const":
                exploded[name] = as_array(columns[name]).take(parents)
        out = super().parse(exploded)  # type: ignore[misc]
        ids, counts = out[f"{self.name}.values"], out[f"{self.name}.lengths"]
        has = counts > 0
        first = (np.cumsum(counts) - counts)[has]
        rows = np.repeat(np.arange(num_rows), lengths)[has]
        return {
            f"{self.name}.values": ids[first].astype(np.int64),
            f"{self.name}.lengths": np.bincount(rows, minlength=num_rows).astype(np.int32),
        }


def _make(base: type[BaseFeature], kind: str) -> type:
    class Sequence(_SequenceDerived, base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            base.setup(self)
            self._init_sequence(kind)

    Sequence.__name__ = Sequence.__qualname__ = f"Sequence{base.__name__}"
    Sequence.__doc__ = f"A sequence of {kind}s, one id per element (see the module docstring)."
    return Sequence


SequenceComboFeature = _make(ComboFeature, "combo_feature")
SequenceLookupFeature = _make(LookupFeature, "lookup_feature")
SequenceMatchFeature = _make(MatchFeature, "match_feature")
SequenceExprFeature = _make(ExprFeature, "expr_feature")
SequenceOverlapFeature = _make(OverlapFeature, "overlap_feature")
SequenceKvDotProduct = _make(KvDotProduct, "kv_dot_product")
SequenceCombineFeature = _make(CombineFeature, "combine_feature")
SequenceCustomFeature = _make(CustomFeature, "custom_feature")
SequenceBoolMaskFeature = _make(BoolMaskFeature, "bool_mask_feature")
