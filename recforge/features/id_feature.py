"""``IdFeature``: categorical ids (integers or strings, single or multi-value)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import BaseFeature
from recforge.features.utils import (
    first_true,
    flatten_cells,
    is_list_type,
    is_string_type,
    row_of_value,
    split_cells,
    stable_hash,
    to_string_array,
)

_INT_PATTERN = r"^\s*[+-]?\d+\s*$"


class IdFeature(BaseFeature):
    r"""A sparse feature of categorical ids, looked up in an embedding bag.

    Exactly one way of turning values into table rows must be configured:

    * ``num_buckets``: values are already integer ids in ``[0, num_buckets)`` (digit strings
      are cast); anything else is an error, unless ``default_bucketize_value`` is set, which
      then replaces out-of-range ids.
    * ``hash_bucket_size``: ``pandas.util.hash_array`` of the value's string form (integers
      hash like their decimal string, so ``123`` and ``"123"`` agree) modulo the size;
      deterministic across processes and runs.
    * ``vocab_list``: ``vocab_list[i] -> i + 2``; out-of-vocabulary -> 1 (or
      ``default_bucketize_value``); the default value when it is not in the list -> 0;
      ``num_embeddings = len(vocab_list) + 2``.
    * ``vocab_dict``: ids as given by the dict; out-of-vocabulary -> 1 (or
      ``default_bucketize_value``), a default value that is no key -> 0, so the dict's ids
      should start at 2; ``num_embeddings = max(max id, default_bucketize_value) + 1``
      (at least 2).

    Multi-value: string cells are split on ``separator`` (default ``"\\x1d"``); list columns
    are multi-value natively. Nulls, empty strings and empty lists give an empty bag (length
    0), unless ``fg_encoded_default_value`` or a non-empty ``default_value`` is set, in which
    case the default (itself split on ``separator``) fills the bag.

    Example:
        >>> from recforge.protos import feature_pb2
        >>> cfg = feature_pb2.IdFeature(feature_name="cat", num_buckets=10, embedding_dim=4)
        >>> out = IdFeature(cfg).parse({"cat": pa.array([3, None, 7])})
        >>> out["cat.values"].tolist(), out["cat.lengths"].tolist()
        ([3, 7], [1, 0, 1])

    """

    def __init__(self, feature_config: Any) -> None:
        super().__init__(feature_config)
        cfg = self.config
        self._check_embedding_dim()
        if cfg.weighted:
            raise self._error("weighted id features are not supported yet (set weighted: false)")
        kinds = [
            name
            for name, is_set in (
                ("num_buckets", cfg.num_buckets > 0),
                ("hash_bucket_size", cfg.hash_bucket_size > 0),
                ("vocab_list", len(cfg.vocab_list) > 0),
                ("vocab_dict", len(cfg.vocab_dict) > 0),
            )
            if is_set
        ]
        if len(kinds) != 1:
            raise self._error(
                "expected exactly one of num_buckets, hash_bucket_size, vocab_list, vocab_dict; "
                f"found {kinds or 'none'}"
            )
        self._kind: str = kinds[0]
        self._vocab_keys: Optional[pa.Array] = None
        self._vocab_ids: Optional[np.ndarray] = None
        if self._kind == "vocab_list":
            self._vocab_keys = pa.array(list(cfg.vocab_list), pa.string())
            self._vocab_ids = np.arange(2, len(cfg.vocab_list) + 2, dtype=np.int64)
        elif self._kind == "vocab_dict":
            keys = sorted(cfg.vocab_dict)
            self._vocab_keys = pa.array(keys, pa.string())
            self._vocab_ids = np.array([cfg.vocab_dict[k] for k in keys], dtype=np.int64)
        self._oov: Optional[int] = None
        if cfg.HasField("default_bucketize_value"):
            self._oov = int(cfg.default_bucketize_value)
            if self._oov >= self.num_embeddings:
                raise self._error(
                    f"default_bucketize_value {self._oov} out of range "
                    f"[0, {self.num_embeddings}) (num_embeddings)"
                )
        self._default_ids: Optional[np.ndarray] = self._parse_default()

    # ------------------------------------------------------------------ description
    @property
    def is_sparse(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def num_embeddings(self) -> int:
        """Rows of the embedding table (see the class docstring per id kind)."""
        cfg = self.config
        if self._kind == "num_buckets":
            return int(cfg.num_buckets)
        if self._kind == "hash_bucket_size":
            return int(cfg.hash_bucket_size)
        if self._kind == "vocab_list":
            return len(cfg.vocab_list) + 2
        top = max(cfg.vocab_dict.values())
        if cfg.HasField("default_bucketize_value"):
            top = max(top, cfg.default_bucketize_value)
        return max(int(top) + 1, 2)

    # ------------------------------------------------------------------ parsing
    def _default_string(self) -> Optional[str]:
        cfg = self.config
        if cfg.HasField("fg_encoded_default_value"):
            return cfg.fg_encoded_default_value
        return cfg.default_value or None

    def _parse_default(self) -> Optional[np.ndarray]:
        text = self._default_string()
        if text is None:
            return None
        sep = self.config.separator
        tokens = [t for t in (text.split(sep) if sep else [text]) if t != ""]
        if not tokens:
            return None
        values = pa.array(tokens, pa.string())
        lengths = np.array([len(tokens)], dtype=np.int32)
        if self._kind in ("vocab_list", "vocab_dict"):
            index = pc.index_in(values, value_set=self._vocab_keys)
            found = index.is_valid().to_numpy(zero_copy_only=False)
            ids = np.zeros(len(tokens), dtype=np.int64)
            ids[found] = self._vocab_ids[index.drop_null().to_numpy(zero_copy_only=False)]
            return ids
        return self._to_ids(values, lengths, what="default value")

    def _flatten(self, column: pa.Array) -> tuple[pa.Array, np.ndarray]:
        if pa.types.is_null(column.type):
            return pa.array([], pa.int64()), np.zeros(len(column), dtype=np.int32)
        if pa.types.is_string_view(column.type):
            column = pc.cast(column, pa.string())
        if is_string_type(column.type):
            column = split_cells(column, self.config.separator)
        elif not (is_list_type(column.type) or pa.types.is_integer(column.type)):
            if not (pa.types.is_floating(column.type) or pa.types.is_boolean(column.type)):
                raise self._error(
                    f"expected integer, string or list ids, found column type {column.type}"
                )
        return flatten_cells(column)

    def _bad_value(self, values: pa.Array, lengths: np.ndarray, index: int, message: str):
        value = values[index].as_py()
        row = row_of_value(lengths, index)
        return self._error(message.format(value=repr(value)) + f" at row {row}")

    def _to_int(self, values: pa.Array, lengths: np.ndarray, what: str) -> np.ndarray:
        dtype = values.type
        beyond = f"expected integer ids within int64, found {what} {{value}}"
        if pa.types.is_integer(dtype) or pa.types.is_boolean(dtype):
            ints = values.to_numpy(zero_copy_only=False)
            if pa.types.is_uint64(dtype):
                bad = first_true(ints > np.iinfo(np.int64).max)
                if bad >= 0:
                    raise self._bad_value(values, lengths, bad, beyond)
            return ints.astype(np.int64, copy=False)
        if pa.types.is_floating(dtype):
            floats = values.to_numpy(zero_copy_only=False)
            bad = first_true(~np.isfinite(floats) | (floats != np.floor(floats)))
            if bad >= 0:
                raise self._bad_value(
                    values, lengths, bad, f"expected integer ids, found {what} {{value}}"
                )
            bad = first_true(np.abs(floats) >= 2.0**63)
            if bad >= 0:
                raise self._bad_value(values, lengths, bad, beyond)
            return floats.astype(np.int64)
        if is_string_type(dtype):
            try:
                return pc.cast(pc.utf8_trim_whitespace(values), pa.int64()).to_numpy(
                    zero_copy_only=False
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                ok = pc.match_substring_regex(values, _INT_PATTERN).to_numpy(zero_copy_only=False)
                bad = first_true(~ok)
                if bad < 0:  # every value is an integer: one is beyond int64
                    digits = pc.utf8_length(pc.utf8_trim_whitespace(values))
                    long = np.flatnonzero(digits.to_numpy(zero_copy_only=False) >= 19)
                    bad = next(
                        (
                            int(i)
                            for i in long
                            if not -(2**63) <= int(values[int(i)].as_py()) < 2**63
                        ),
                        0,
                    )
                    raise self._bad_value(values, lengths, bad, beyond) from None
                raise self._bad_value(
                    values,
                    lengths,
                    bad,
                    f"expected integer ids (num_buckets), found non-integer {what} {{value}}",
                ) from None
        raise self._error(f"expected integer ids, found values of type {dtype}")

    def _to_ids(self, values: pa.Array, lengths: np.ndarray, what: str = "value") -> np.ndarray:
        """Map flat values ``[N]`` to table rows ``int64 [N]``."""
        if self._kind == "num_buckets":
            ids = self._to_int(values, lengths, what)
            size = int(self.config.num_buckets)
            bad_mask = (ids < 0) | (ids >= size)
            if bad_mask.any():
                if self._oov is not None:
                    ids = np.where(bad_mask, self._oov, ids)
                else:
                    bad = first_true(bad_mask)
                    sign = "negative " if ids[bad] < 0 else ""
                    raise self._error(
                        f"{sign}id {ids[bad]} out of range [0, {size}) (num_buckets) "
                        f"at row {row_of_value(lengths, bad)}"
                    )
            return ids
        if self._kind == "hash_bucket_size":
            hashed = stable_hash(values)
            return (hashed % np.uint64(self.config.hash_bucket_size)).astype(np.int64)
        strings = to_string_array(values)
        index = pc.index_in(strings, value_set=self._vocab_keys)
        found = index.is_valid().to_numpy(zero_copy_only=False)
        ids = np.full(len(strings), 1 if self._oov is None else self._oov, dtype=np.int64)
        ids[found] = self._vocab_ids[index.drop_null().to_numpy(zero_copy_only=False)]
        return ids

    def _fill_default(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Put the default ids into every empty bag (vectorised)."""
        empty = lengths == 0
        if self._default_ids is None or not empty.any():
            return ids, lengths
        k = len(self._default_ids)
        new_lengths = np.where(empty, k, lengths).astype(np.int32)
        slot_is_default = np.repeat(empty, new_lengths)
        out = np.empty(int(new_lengths.sum()), dtype=np.int64)
        out[~slot_is_default] = ids
        out[slot_is_default] = np.tile(self._default_ids, int(empty.sum()))
        return out, new_lengths

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse ids of one batch.

        Args:
            columns: column name -> array of ``B`` rows; the feature reads ``self.column``.

        Returns:
            ``{"{name}.values": int64 [N], "{name}.lengths": int32 [B]}``.

        Raises:
            FeatureError: missing column, non-integer or out-of-range ids (``num_buckets``).

        """
        values, lengths = self._flatten(self._get_column(columns))
        ids = self._to_ids(values, lengths) if len(values) else np.zeros(0, dtype=np.int64)
        ids, lengths = self._fill_default(ids, lengths)
        return {f"{self.name}.values": ids, f"{self.name}.lengths": lengths}

    @property
    def vocab(self) -> list[str]:
        """The vocabulary keys (empty unless ``vocab_list`` / ``vocab_dict``)."""
        return [] if self._vocab_keys is None else self._vocab_keys.to_pylist()
