"""``IdFeature``: categorical ids (integers or strings, single or multi-value)."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import INT_PATTERN, BaseFeature, FeatureError
from recforge.features.hashing import std_hash
from recforge.features.utils import (
    fill_empty_bags,
    first_beyond_int64,
    first_true,
    is_list_type,
    is_string_type,
    row_of_value,
    to_string_array,
)
from recforge.protos import feature_pb2


class IdFeature(BaseFeature):
    r"""A sparse feature of categorical ids, looked up in an embedding bag.

    Exactly one way of turning values into table rows must be configured:

    * ``num_buckets``: values are already integer ids in ``[0, num_buckets)`` (digit strings
      are cast); anything else is an error, unless ``default_bucketize_value`` is set, which
      then replaces out-of-range ids.
    * ``hash_bucket_size``: TorchEasyRec's FG hash of the value's string form modulo the size
      (:func:`~recforge.features.hashing.std_hash`; integers hash like their decimal string,
      so ``123`` and ``"123"`` agree), so ids match TorchEasyRec's; deterministic across
      processes and runs.
    * ``vocab_list``: without ``default_bucketize_value`` (as TorchEasyRec): row 0 is the
      ``default_value``, row 1 out-of-vocabulary, ``vocab_list[i] -> i + 2`` (a default value
      that is in the list keeps its ``i + 2``); ``num_embeddings = len(vocab_list) + 2``.
      With ``default_bucketize_value`` the list is the whole table: ``vocab_list[i] -> i``,
      out-of-vocabulary (and a default value not in the list) -> ``default_bucketize_value``
      (which must be ``< len(vocab_list)``); ``num_embeddings = len(vocab_list)``.
    * ``vocab_dict``: ids as given by the dict. Without ``default_bucketize_value``,
      out-of-vocabulary -> 1 and the ``default_value`` -> 0 (even when it is a key, as in
      TorchEasyRec), so the dict's ids should start at 2; with it, out-of-vocabulary ->
      ``default_bucketize_value``. ``num_embeddings = max(max id, default_bucketize_value) + 1``
      (at least 2; TorchEasyRec takes ``max id + 1``, which leaves no row for a larger
      ``default_bucketize_value``).
    * ``zch`` (zero-collision hashing, :mod:`recforge.modules.zch`): the value's FG hash
      modulo ``2**63 - 1`` (TorchEasyRec's FG ``hash_bucket_size`` for zch), no bucketing;
      the model maps these raw ids to ``zch.zch_size`` rows, admitting and evicting ids while
      it trains. fg_mode FG_NONE reads such hashes (any id in ``[0, 2**63 - 1)``).
    * ``vocab_file`` (joined to ``asset_dir`` when relative): the vocabulary in a file, one
      word a line (``vocab_list`` with ``default_bucketize_value``) or ``word id`` a line
      (``vocab_dict`` with it); ``default_bucketize_value`` is required, nothing being
      reserved (see :mod:`recforge.features.vocab_file`).

    Multi-value: string cells are split on ``separator`` (default ``"\\x1d"``); list columns
    are multi-value natively. Nulls, empty strings and empty lists give an empty bag (length
    0), unless a non-empty ``default_value`` is set, in which case the default (itself split
    on ``separator``) fills the bag.

    With ``fg_mode: FG_NONE`` (see :mod:`recforge.features.fg_mode`) the column named by
    ``feature_name`` holds the final table rows: integers in ``[0, num_embeddings)`` whatever
    the id kind, multi-values joined by ``fg_encoded_multival_sep``; a value that is no
    integer or out of range is an error, and so is a multi-value cell when ``value_dim`` is
    1. Empty bags take ``fg_encoded_default_value`` (ids joined by the same separator) when
    set; ``default_value`` is not used (it is a value before bucketization).

    Example:
        >>> from recforge.protos import feature_pb2
        >>> cfg = feature_pb2.IdFeature(feature_name="cat", num_buckets=10, embedding_dim=4)
        >>> out = IdFeature(cfg).parse({"cat": pa.array([3, None, 7])})
        >>> out["cat.values"].tolist(), out["cat.lengths"].tolist()
        ([3, 7], [1, 0, 1])

    """

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        cfg = self.config
        self._check_embedding_dim()
        if cfg.weighted and self.is_sequence:
            raise self._error("weighted: a sequence of ids takes no id weights")
        kinds = [
            name
            for name, is_set in (
                ("num_buckets", cfg.num_buckets > 0),
                ("hash_bucket_size", cfg.hash_bucket_size > 0),
                ("vocab_list", len(cfg.vocab_list) > 0),
                ("vocab_dict", len(cfg.vocab_dict) > 0),
                ("vocab_file", bool(cfg.vocab_file)),
                ("zch", cfg.HasField("zch")),
            )
            if is_set
        ]
        if len(kinds) != 1:
            raise self._error(
                "expected exactly one of num_buckets, hash_bucket_size, vocab_list, vocab_dict, "
                f"vocab_file, zch; found {kinds or 'none'}"
            )
        self._kind: str = kinds[0]
        if self._kind == "zch":
            self._check_zch()
        self._oov: Optional[int] = None
        if cfg.HasField("default_bucketize_value"):
            self._oov = int(cfg.default_bucketize_value)
        self._vocab_keys: Optional[pa.Array] = None
        self._vocab_ids: Optional[np.ndarray] = None
        self._vocab_file_rows = 0
        if self._kind == "vocab_file":
            self._read_vocab_file()
        elif self._kind == "vocab_list":
            self._vocab_keys = pa.array(list(cfg.vocab_list), pa.string())
            first = 0 if self._oov is not None else 2
            self._vocab_ids = np.arange(first, first + len(cfg.vocab_list), dtype=np.int64)
            if self._oov is not None and self._oov >= len(cfg.vocab_list):
                raise self._error(
                    f"default_bucketize_value {self._oov} out of range [0, "
                    f"{len(cfg.vocab_list)}): with it set, vocab_list is the whole table "
                    "(vocab_list[i] -> i) and out-of-vocabulary values take that row"
                )
        elif self._kind == "vocab_dict":
            vocab = dict(cfg.vocab_dict)
            if self._oov is None and cfg.default_value:
                vocab[cfg.default_value] = 0  # row 0 is the default value's (TorchEasyRec)
            keys = sorted(vocab)
            self._vocab_keys = pa.array(keys, pa.string())
            self._vocab_ids = np.array([vocab[k] for k in keys], dtype=np.int64)
        if self._oov is not None and self._oov >= self.num_embeddings:
            raise self._error(
                f"default_bucketize_value {self._oov} out of range "
                f"[0, {self.num_embeddings}) (num_embeddings)"
            )
        #: the weights of the default ids (weighted features; 1 unless default_value says)
        self._default_weights: Optional[np.ndarray] = None
        self._default_ids: Optional[np.ndarray] = (
            self._encoded_default() if self.fg_encoded else self._parse_default()
        )
        if self._default_ids is not None and self._default_weights is None:
            self._default_weights = np.ones(len(self._default_ids), dtype=np.float32)

    def _check_zch(self) -> None:
        """Refuses a ``zch`` message the remapper cannot be built from."""
        from recforge.modules.zch import eviction_policy, parse_threshold_filter

        zch = self.config.zch
        if zch.zch_size < 2:
            raise self._error(
                f"zch.zch_size: expected at least 2 rows (the last row is for ids without a"
                f" row of their own), found {zch.zch_size}"
            )
        if zch.eviction_interval < 1:
            raise self._error(
                f"zch.eviction_interval: expected at least 1 step, found {zch.eviction_interval}"
            )
        if zch.WhichOneof("eviction_policy") is None:
            raise self._error("zch: expected an eviction policy (lfu, lru or distance_lfu)")
        if zch.HasField("threshold_filtering_func"):
            try:
                parse_threshold_filter(zch.threshold_filtering_func)
            except ValueError as e:
                raise self._error(
                    f"zch.threshold_filtering_func {zch.threshold_filtering_func!r}: expected a"
                    f" lambda over the id counts using numbers, torch reductions and the"
                    f" built-in *_threshold_filter functions; {e}"
                ) from None
        eviction_policy(zch)

    @property
    def zch_config(self) -> Optional[feature_pb2.ZeroCollisionHash]:
        """The ``zch`` message when the ids are zero-collision hashed, else None."""
        return self.config.zch if self._kind == "zch" else None

    @property
    def encoded_id_limit(self) -> int:
        """Encoded zch ids are raw hashes; other kinds' are table rows."""
        from recforge.modules.zch import ZCH_HASH_SIZE

        return ZCH_HASH_SIZE if self._kind == "zch" else self.num_embeddings

    # ------------------------------------------------------------------ description
    @property
    def table_size_source(self) -> str:
        """The id kind: ``num_buckets``, ``hash_bucket_size``, ``vocab_list``, ..."""
        return self._kind

    @property
    def is_sparse(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def is_weighted(self) -> bool:
        """``weighted``: values are ``id:weight`` (or a map column of id -> weight)."""
        return bool(self.config.weighted)

    @property
    def num_embeddings(self) -> int:
        """Rows of the embedding table (see the class docstring per id kind)."""
        cfg = self.config
        if self._kind == "num_buckets":
            return int(cfg.num_buckets)
        if self._kind == "hash_bucket_size":
            return int(cfg.hash_bucket_size)
        if self._kind == "zch":
            return int(cfg.zch.zch_size)
        if self._kind == "vocab_list":
            return len(cfg.vocab_list) + (0 if self._oov is not None else 2)
        if self._kind == "vocab_file":
            return self._vocab_file_rows
        top = max(cfg.vocab_dict.values())
        if cfg.HasField("default_bucketize_value"):
            top = max(top, cfg.default_bucketize_value)
        return max(int(top) + 1, 2)

    @classmethod
    def asset_fields(cls) -> tuple[str, ...]:
        """``vocab_file`` (copied into an export)."""
        return ("vocab_file",)

    def _read_vocab_file(self) -> None:
        """``vocab_file``: the words and ids of the file (see :mod:`.vocab_file`).

        A list file is the whole table (``num_embeddings`` its line count), a dict file
        gives ``max(max id, default_bucketize_value) + 1`` rows, as for ``vocab_dict``.
        """
        from recforge.features.vocab_file import read_vocab_file

        cfg = self.config
        if self._oov is None:
            raise self._error(
                "vocab_file reserves no rows: set default_bucketize_value (the id of values"
                " not in the file), as TorchEasyRec requires"
            )
        path = cfg.vocab_file
        if cfg.asset_dir and not os.path.isabs(path):
            path = os.path.join(cfg.asset_dir, path)
        words, ids, is_dict = read_vocab_file(path, f"feature '{self.name}'")
        self._vocab_keys = pa.array(words, pa.string())
        self._vocab_ids = ids
        self._vocab_file_rows = int(max(ids.max(), self._oov)) + 1 if is_dict else len(ids)

    # ------------------------------------------------------------------ parsing
    def _encoded_default(self) -> Optional[np.ndarray]:
        """FG_NONE: ``fg_encoded_default_value`` as table rows (``None`` when unset/empty)."""
        cfg = self.config
        if not cfg.HasField("fg_encoded_default_value") or not cfg.fg_encoded_default_value:
            return None
        tokens = cfg.fg_encoded_default_value.split(self.multival_sep)
        values = pa.array(tokens, pa.string())
        try:
            return self._encoded_ids(values, np.array([len(tokens)], dtype=np.int32))
        except FeatureError:
            raise self._error(
                f"fg_encoded_default_value {cfg.fg_encoded_default_value!r}: expected table "
                f"rows in [0, {self.num_embeddings}) joined by fg_encoded_multival_sep "
                f"({self.multival_sep!r})"
            ) from None

    def _parse_default(self) -> Optional[np.ndarray]:
        """``default_value`` (a value before bucketization) as table rows."""
        text = self.config.default_value
        if not text:
            return None
        sep = self.config.separator
        tokens = [t for t in (text.split(sep) if sep else [text]) if t != ""]
        if not tokens:
            return None
        values = pa.array(tokens, pa.string())
        if self.is_weighted:  # "id:weight" tokens; a bare id weighs 1
            parts = pc.split_pattern(values, ":", max_splits=1, reverse=True).to_pylist()
            try:
                weights = [float(p[1]) if len(p) == 2 else 1.0 for p in parts]
            except ValueError:
                raise self._error(
                    f"default_value {text!r}: expected ids or id:weight pairs joined by"
                    f" separator {sep!r}"
                ) from None
            values = pa.array([p[0] for p in parts], pa.string())
            self._default_weights = np.array(weights, dtype=np.float32)
        lengths = np.array([len(tokens)], dtype=np.int32)
        if self._kind in ("vocab_list", "vocab_dict", "vocab_file"):
            # the FG maps a default value that is no key like any other value when
            # default_bucketize_value is set, else to row 0 (TorchEasyRec)
            index = pc.index_in(values, value_set=self._vocab_keys)
            found = index.is_valid().to_numpy(zero_copy_only=False)
            ids = np.full(len(tokens), 0 if self._oov is None else self._oov, dtype=np.int64)
            assert self._vocab_ids is not None  # a vocab kind
            ids[found] = self._vocab_ids[index.drop_null().to_numpy(zero_copy_only=False)]
            return ids
        return self._to_ids(values, lengths, what="default value")

    def _bad_value(
        self, values: pa.Array, lengths: np.ndarray, index: int, message: str
    ) -> FeatureError:
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
                ok = pc.match_substring_regex(values, INT_PATTERN).to_numpy(zero_copy_only=False)
                bad = first_true(~ok)
                if bad < 0:  # every value is an integer: one is beyond int64
                    bad = max(first_beyond_int64(values), 0)
                    raise self._bad_value(values, lengths, bad, beyond) from None
                raise self._bad_value(
                    values,
                    lengths,
                    bad,
                    f"expected integer ids (num_buckets), found non-integer {what} {{value}}",
                ) from None
        raise self._error(f"expected integer ids, found values of type {dtype}")

    def _to_ids(self, values: pa.Array, lengths: np.ndarray, what: str = "value") -> np.ndarray:
        """Map flat values ``[N]`` to table rows ``int64 [N]`` (FG_NONE: check them)."""
        if self.fg_encoded:
            return self._encoded_ids(values, lengths)
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
            hashed = std_hash(values)
            return (hashed % np.uint64(self.config.hash_bucket_size)).astype(np.int64)
        if self._kind == "zch":
            from recforge.modules.zch import ZCH_HASH_SIZE

            return (std_hash(values) % np.uint64(ZCH_HASH_SIZE)).astype(np.int64)
        strings = to_string_array(values)
        index = pc.index_in(strings, value_set=self._vocab_keys)
        found = index.is_valid().to_numpy(zero_copy_only=False)
        ids = np.full(len(strings), 1 if self._oov is None else self._oov, dtype=np.int64)
        assert self._vocab_ids is not None  # a vocab kind
        ids[found] = self._vocab_ids[index.drop_null().to_numpy(zero_copy_only=False)]
        return ids

    def _fill_default(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Put the default ids into every empty bag (vectorised)."""
        return fill_empty_bags(ids, lengths, self._default_ids)

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse ids of one batch.

        Args:
            columns: column name -> array of ``B`` rows; the feature reads ``self.column``.

        Returns:
            ``{"{name}.values": int64 [N], "{name}.lengths": int32 [B]}``.

        Raises:
            FeatureError: missing column, non-integer or out-of-range ids (``num_buckets``;
                any kind in FG_NONE), several ids in a single-value FG_NONE cell.

        """
        column = self._get_column(columns)
        weights: Optional[np.ndarray] = None
        if self.is_weighted:
            values, weights, lengths = self._flatten_weighted(column)
        else:
            values, lengths = self._flatten_ids(column)
        if self.fg_encoded and self.config.HasField("value_dim") and self.config.value_dim == 1:
            self._check_one_per_row(column, lengths, "value_dim: 1")
        ids = self._to_ids(values, lengths) if len(values) else np.zeros(0, dtype=np.int64)
        out_ids, out_lengths = self._fill_default(ids, lengths)
        out = {f"{self.name}.values": out_ids, f"{self.name}.lengths": out_lengths}
        if weights is not None:
            out[f"{self.name}.weights"], _ = fill_empty_bags(
                weights, lengths, self._default_weights
            )
        return out

    def _flatten_weighted(self, column: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        """Weighted ids: ``(ids [N], weights float32 [N], lengths int32 [B])``.

        A map column holds id -> weight; string (or list of string) cells hold ``id:weight``
        items (split on the last ``:``), multi-values joined as for unweighted ids.
        """
        if pa.types.is_map(column.type):
            kv = pa.list_(pa.struct([column.type.key_field, column.type.item_field]))
            pairs = column.cast(kv)
            flat = pc.list_flatten(pairs)
            lengths = pc.list_value_length(pairs).fill_null(0).to_numpy(zero_copy_only=False)
            ids, weights = flat.field(0), flat.field(1)
            lengths = np.ascontiguousarray(lengths, dtype=np.int32)
        else:
            if pa.types.is_integer(column.type) or (
                is_list_type(column.type) and not is_string_type(column.type.value_type)
            ):
                raise self._error(
                    f"weighted: expected id:weight strings or a map column, found column type"
                    f" {column.type}"
                )
            items, lengths = self._flatten_ids(column)
            if len(items) == 0:
                return items, np.zeros(0, dtype=np.float32), lengths
            parts = pc.split_pattern(items, ":", max_splits=1, reverse=True)
            bad = first_true(pc.list_value_length(parts).to_numpy(zero_copy_only=False) != 2)
            if bad >= 0:
                raise self._bad_value(
                    items, lengths, bad, "weighted: expected id:weight, found {value}"
                )
            ids, weights = pc.list_element(parts, 0), pc.list_element(parts, 1)
        try:
            floats = pc.cast(weights, pa.float32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = weights.to_pylist()
            bad = next(i for i, w in enumerate(values) if w is not None and not _is_float(w))
            raise self._bad_value(
                weights, lengths, bad, "weighted: expected a number after ':', found {value}"
            ) from None
        out = floats.fill_null(1.0).to_numpy(zero_copy_only=False).astype(np.float32)
        return ids, out, lengths

    @property
    def vocab(self) -> list[str]:
        """The vocabulary keys (empty unless ``vocab_list`` / ``vocab_dict`` / ``vocab_file``)."""
        return [] if self._vocab_keys is None else self._vocab_keys.to_pylist()


def _is_float(text: object) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
