"""``sequence_tokenize_feature``: a sequence of texts, each element tokenized into several ids.

A cell holds texts joined by ``sequence_delim`` (a list column holds them natively), cut to
the first ``sequence_length`` elements; a null or empty cell is one element (its text
``default_value``, as TorchEasyRec's sequences give one default element). Each element is
tokenized as a ``tokenize_feature`` would tokenize it (``text_normalizer``, ``vocab_file``,
``tokenizer_type``; an element without text takes ``default_value``, which is ``"0"`` when
empty, as TorchEasyRec's sequences have it). An element that gives no token (e.g. only
spaces) stays in the sequence, with no ids (its pooled embedding is zeros).

Parsed, the feature is a bag of all the row's tokens plus the tokens per element:

* ``"{name}.values"`` ``int64 [N]`` token ids, row after row, element after element;
* ``"{name}.lengths"`` ``int32 [B]`` tokens per row, so a DEEP group pools every token of
  the row with ``pooling`` (TorchEasyRec's multi-value sequences in DEEP groups);
* ``"{name}.elements.values"`` ``int64 [E]`` tokens per element and
  ``"{name}.elements.lengths"`` ``int32 [B]`` elements per row (the key
  :attr:`~recforge.features.base_feature.BaseFeature.element_lengths_key`), with which a
  SEQUENCE group pools each element's token embeddings with ``pooling`` (sum / mean, an
  element without tokens giving zeros) into one ``[B, L, D]`` sequence, as TorchEasyRec does.

With FG output (``FG_NONE`` / ``FG_BUCKETIZE``) the column named by ``feature_name`` holds the
token ids: elements joined by ``sequence_delim``, the ids of one element by
``fg_encoded_multival_sep`` (TorchEasyRec's encoded multi-value sequences), or a
``list<list<int>>`` column (``list<int>``: one id per element).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.derived_feature import split_expression
from recforge.features.sequence_derived import _SequenceDerived
from recforge.features.tokenize_feature import TokenizeFeature
from recforge.features.utils import as_array, is_list_type, is_string_type

#: suffix of the sparse key holding the tokens per element (values) and elements per row
ELEMENTS_SUFFIX = ".elements"


class SequenceTokenizeFeature(_SequenceDerived, TokenizeFeature):
    """A sequence of texts, several token ids per element (see the module docstring)."""

    def setup(self) -> None:
        """Checks the config (``sequence_length > 0``, no ``tokens_as_sequence``)."""
        cfg = self.config
        if cfg.tokens_as_sequence:
            # as TorchEasyRec: the flag belongs to the tokenize_feature oneof entry only
            raise self._error(
                "tokens_as_sequence is only valid for a tokenize_feature, found it on a "
                "sequence_tokenize_feature (whose elements are texts)"
            )
        TokenizeFeature.setup(self)
        self._default_text = cfg.default_value or "0"
        if cfg.sequence_length <= 0:
            raise self._error(
                "a sequence feature needs sequence_length > 0 (the longest sequence kept), "
                f"found {cfg.sequence_length}"
            )

    @property
    def is_sequence(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def sequence_length(self) -> int:
        """The most elements kept per row."""
        return int(self.config.sequence_length)

    @property
    def element_lengths_key(self) -> Optional[str]:
        """``"{name}.elements"`` (see the module docstring)."""
        return self.name + ELEMENTS_SUFFIX

    def _result(
        self, ids: np.ndarray, tokens: np.ndarray, elements: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The parsed dict from token ids, tokens per element and elements per row."""
        rows = np.repeat(np.arange(len(elements)), elements)
        per_row = np.bincount(rows, weights=tokens, minlength=len(elements))
        key = self.name + ELEMENTS_SUFFIX
        return {
            f"{self.name}.values": np.ascontiguousarray(ids, dtype=np.int64),
            f"{self.name}.lengths": per_row.astype(np.int32),
            f"{key}.values": tokens.astype(np.int64),
            f"{key}.lengths": elements.astype(np.int32),
        }

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse one batch of text sequences (or of FG output token ids).

        Returns:
            ``{"{name}.values": int64 [N], "{name}.lengths": int32 [B],
            "{name}.elements.values": int64 [E], "{name}.elements.lengths": int32 [B]}``.

        Raises:
            FeatureError: a missing column, a value that is no text, or (FG output) no
                token id in the tokenizer's vocabulary (naming column and row).

        """
        if self.reads_fg_output:
            return self._parse_encoded(columns)
        (column,) = self.input_columns(columns)
        texts, elements = self._split(column)
        name = split_expression(self.config.expression)[1]
        tokenized = self.compute({name: texts})
        tokens = pc.list_value_length(tokenized).to_numpy(zero_copy_only=False)
        ids = pc.list_flatten(tokenized).to_numpy(zero_copy_only=False)
        return self._result(ids, tokens.astype(np.int64), elements)

    def _parse_encoded(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        column = as_array(self._get_column(columns))
        num_rows = len(column)
        if pa.types.is_null(column.type):
            column = pa.nulls(num_rows, pa.string())
        if pa.types.is_string_view(column.type) or pa.types.is_large_string(column.type):
            column = pc.cast(column, pa.string())
        if is_string_type(column.type):
            # null and empty cells have no element; each element's ids split on the separator
            column = pc.if_else(pc.equal(column, ""), pa.nulls(num_rows, pa.string()), column)
            column = pc.split_pattern(column, self.config.sequence_delim)
            column = pa.ListArray.from_arrays(
                column.offsets, pc.split_pattern(column.values, self.multival_sep)
            )
        elif not is_list_type(column.type):
            raise self._error(
                f"expected token ids as text or list<list<int>>, found column type {column.type}"
            )
        elif not is_list_type(column.type.value_type):  # one id per element
            column = pa.ListArray.from_arrays(
                column.offsets,
                pa.ListArray.from_arrays(
                    pa.array(np.arange(len(column.values) + 1, dtype=np.int32)), column.values
                ),
            )
        elements = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        inner = pc.list_flatten(column)
        values = pc.list_flatten(inner)
        # an empty string between separators is no id
        keep = values.is_valid()
        if is_string_type(values.type):
            keep = pc.and_kleene(keep, pc.not_equal(values, "")).fill_null(False)
        tokens = pc.list_value_length(inner).fill_null(0).to_numpy(zero_copy_only=False)
        if keep.false_count:
            mask = keep.to_numpy(zero_copy_only=False)
            parents = pc.list_parent_indices(inner).to_numpy(zero_copy_only=False)
            tokens = np.bincount(parents[mask], minlength=len(tokens))
            values = values.filter(keep)
        elements = np.asarray(elements, dtype=np.int32)
        tokens = np.asarray(tokens, dtype=np.int64)
        rows = np.repeat(np.arange(num_rows), elements)
        per_row = np.bincount(rows, weights=tokens, minlength=num_rows).astype(np.int32)
        ids = self._encoded_ids(values, per_row, "token id")
        # keep the first sequence_length elements of each row (and their tokens)
        if elements.size and elements.max() > self.sequence_length:
            starts = np.repeat(np.cumsum(elements) - elements, elements)
            kept = (np.arange(int(elements.sum())) - starts) < self.sequence_length
            ids = ids[np.repeat(kept, tokens)]
            tokens = tokens[kept]
            elements = np.minimum(elements, self.sequence_length).astype(np.int32)
        return self._result(ids, tokens, elements)


__all__ = ["ELEMENTS_SUFFIX", "SequenceTokenizeFeature"]
