r"""``LookupFeature``: a row's key(s) looked up in its kv map column.

``map`` names a kv map column (``"k1:v1\x1dk2:v2"`` strings, ``list<string>`` of ``"k:v"``
or a parquet ``MAP``; see :mod:`recforge.features.kv_parsing`) and ``key`` a column of keys
(multi-values split on ``separator``, or a list column). Keys that are null, empty or not in
the row's map are skipped. What the values found become:

* Ids, when ``hash_bucket_size``, ``num_buckets``, ``vocab_list`` or ``vocab_dict`` is set
  (TorchEasyRec then treats the values as discrete whatever ``need_discrete`` says): every
  value found is one id (no combiner), prefixed by its key and ``"_"`` when ``need_key``;
  a row without any takes ``default_value`` (default ``"0"``; empty: an empty bag). Ids are
  mapped as an ``id_feature`` maps them (TorchEasyRec's hash for ``hash_bucket_size``).
* Numbers otherwise. With ``value_dim`` 1 (the default) the values found are combined by
  ``combiner``: ``sum`` (default), ``mean`` (or ``avg``), ``min``, ``max`` or ``count`` (how
  many keys were found); a row without any takes ``default_value``. Then ``normalizer`` and
  ``boundaries`` apply as for a ``raw_feature``; with ``boundaries`` and
  ``default_value: ""`` a row without values gets no bucket id (an empty bag).
  ``combiner: ""`` with ``boundaries`` keeps every value: a bag of bucket ids (a row
  without any: the default's bucket).
  With ``value_dim`` > 1 each map value is ``value_dim`` numbers joined by
  ``value_separator`` (default ``","``); the row takes the first key found (recforge's
  choice: TorchEasyRec leaves several keys with vector values open), else
  ``default_value`` in every dimension.

``combiner`` ``gap_min`` / ``gap_max`` are not supported. A map key that occurs twice in one
row's map: the first entry wins.

Example:
    >>> from recforge.features.fg_mode import FG_DAG
    >>> from recforge.protos import feature_pb2
    >>> cfg = feature_pb2.LookupFeature(feature_name="l", map="user:kv", key="item:cate")
    >>> f = LookupFeature(cfg, FG_DAG)
    >>> kv = pa.array(["ca:1\x1dcb:2", "ca:1", None])
    >>> f.parse({"kv": kv, "cate": pa.array(["ca\x1dcb", "cd", "ca"])})["l.values"].tolist()
    [[3.0], [0.0], [0.0]]

"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.combo_feature import split_values, to_list_array
from recforge.features.derived_feature import DerivedFeature
from recforge.features.kv_parsing import KvFormatError, first_match, parse_kv_map, row_keys
from recforge.features.raw_feature import RawFeature
from recforge.features.utils import (
    fill_empty_bags,
    to_floats,
    to_string_array,
)

if TYPE_CHECKING:
    from recforge.protos import feature_pb2

#: combiner name -> its canonical name ("" keeps every value)
COMBINERS = {"sum": "sum", "mean": "mean", "avg": "mean", "min": "min", "max": "max"}
COMBINERS.update({"count": "count", "": ""})
#: joins a key and its value when ``need_key`` (TorchEasyRec's FG joins names by "_")
KEY_JOIN = "_"


def id_kinds(config: Union[feature_pb2.LookupFeature, feature_pb2.MatchFeature]) -> list[str]:
    """The id-mapping fields a lookup / match config sets."""
    return [
        name
        for name, is_set in (
            ("hash_bucket_size", config.hash_bucket_size > 0),
            ("num_buckets", config.num_buckets > 0),
            ("vocab_list", len(config.vocab_list) > 0),
            ("vocab_dict", len(config.vocab_dict) > 0),
            ("vocab_file", bool(config.vocab_file)),
        )
        if is_set
    ]


def combine(
    values: np.ndarray, rows: np.ndarray, num_rows: int, combiner: str
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce each row's values to one number.

    Args:
        values: ``float64 [H]`` the values found.
        rows: ``int64 [H]`` the row of each.
        num_rows: ``B``.
        combiner: ``sum``, ``mean``, ``min``, ``max`` or ``count``.

    Returns:
        ``(float64 [B], found bool [B])``; rows without values are 0 and not found.

    """
    counts = np.bincount(rows, minlength=num_rows)
    found = counts > 0
    if combiner == "count":
        return counts.astype(np.float64), found
    if combiner in ("sum", "mean"):
        total = np.bincount(rows, weights=values, minlength=num_rows)
        if combiner == "mean":
            total = np.divide(total, counts, out=np.zeros(num_rows), where=found)
        return total, found
    ufunc = np.minimum if combiner == "min" else np.maximum
    out = np.full(num_rows, np.inf if combiner == "min" else -np.inf)
    ufunc.at(out, rows, values)
    return np.where(found, out, 0.0), found


class MapHitsFeature(DerivedFeature):
    """The output stage lookup and match features share.

    It turns the values found into ids or numbers (see :class:`LookupFeature`).
    """

    @classmethod
    def asset_fields(cls) -> tuple[str, ...]:
        """``vocab_file`` of an id output (copied into an export)."""
        return ("vocab_file",)

    _combiner: str = "sum"
    _discrete: bool = False
    _bag: bool = False

    @property
    def _no_default(self) -> bool:
        """``default_value: ""``: a row without values has no bucket id (an empty bag)."""
        return self.config.HasField("default_value") and self.config.default_value == ""

    def _float_values(self, values: pa.Array, rows: np.ndarray, column: str) -> np.ndarray:
        """The values found as float64; a non-numeric one names its map column and row."""
        floats, bad = to_floats(values)
        if bad >= 0:
            raise self._column_error(
                column,
                f"expected numeric map values (set hash_bucket_size, num_buckets, vocab_list "
                f"or vocab_dict for discrete ones), found {values[bad].as_py()!r} at row "
                f"{int(rows[bad])}",
            )
        return floats

    def _numeric_bag(self, floats: np.ndarray, rows: np.ndarray, num_rows: int) -> dict:
        """``combiner: ""`` with boundaries: every value's bucket, a bag per row."""
        out = self._out
        assert isinstance(out, RawFeature)
        order = np.argsort(rows, kind="stable")
        floats, rows = floats[order], rows[order]
        ids = out.bucket_ids(floats)
        lengths = np.bincount(rows, minlength=num_rows).astype(np.int32)
        if not self._no_default:
            default_ids = out.bucket_ids(out.raw_default[:1])
            ids, lengths = fill_empty_bags(ids, lengths, default_ids)
        return {f"{self.name}.values": ids, f"{self.name}.lengths": lengths}

    def _emit_hits(
        self,
        values: pa.Array,
        rows: np.ndarray,
        num_rows: int,
        column: str,
        prefixes: list[pa.Array] = (),  # type: ignore[assignment]
    ) -> dict[str, np.ndarray]:
        """Turn the values found (in row order) into the feature's output."""
        if self._discrete:
            strings = to_string_array(values)
            if prefixes:
                strings = pc.binary_join_element_wise(
                    *(to_string_array(p) for p in prefixes), strings, KEY_JOIN
                )
            lengths = np.bincount(rows, minlength=num_rows).astype(np.int32)
            return self._emit(to_list_array(strings, lengths))
        if self.value_dim > 1:
            return self._emit(self._first_vectors(values, rows, num_rows))
        floats = self._float_values(values, rows, column)
        if self._bag:
            return self._numeric_bag(floats, rows, num_rows)
        combined, found = combine(floats, rows, num_rows, self._combiner)
        out = self._emit(pa.array(combined, pa.float64(), mask=~found))
        if self.is_sparse and self._no_default:  # default_value "": no bucket without values
            ids = out[f"{self.name}.values"].reshape(num_rows, -1)[found].reshape(-1)
            lengths = np.where(found, out[f"{self.name}.lengths"], 0).astype(np.int32)
            return {f"{self.name}.values": ids, f"{self.name}.lengths": lengths}
        return out

    def _first_vectors(self, values: pa.Array, rows: np.ndarray, num_rows: int) -> pa.Array:
        """Each row's first value split on ``value_separator`` (null when none found)."""
        first_rows, first = np.unique(rows, return_index=True)
        index = np.zeros(num_rows, dtype=np.int64)
        index[first_rows] = first
        missing = np.ones(num_rows, dtype=bool)
        missing[first_rows] = False
        strings = to_string_array(values)
        taken = strings.take(pa.array(index, mask=missing)) if len(strings) else None
        if taken is None:
            return pa.array([None] * num_rows, pa.list_(pa.string()))
        return pc.split_pattern(taken, self.config.value_separator)

    def compute(self, columns: dict[str, pa.Array]) -> pa.Array:
        """Not used: lookup and match features override :meth:`parse`."""
        raise NotImplementedError


class LookupFeature(MapHitsFeature):
    """A row's keys looked up in its kv map (see the module docstring)."""

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        cfg = self.config
        if not self.reads_fg_output and not (cfg.map and cfg.key):
            raise self._error(
                f"a lookup_feature needs map and key, found map={cfg.map!r}, key={cfg.key!r}"
            )
        combiner = cfg.combiner.lower()
        if combiner not in COMBINERS:
            raise self._error(
                f"combiner must be one of {sorted(COMBINERS)}, found {cfg.combiner!r} "
                "(gap_min / gap_max are not supported)"
            )
        self._combiner = COMBINERS[combiner]
        kinds = id_kinds(cfg)
        if len(kinds) > 1:
            raise self._error(f"expected at most one of {kinds}, found all of them")
        self._discrete = bool(kinds)
        if (cfg.need_discrete or cfg.need_key) and not kinds:
            raise self._error(
                "need_discrete / need_key make the values ids: set hash_bucket_size, "
                "num_buckets, vocab_list or vocab_dict"
            )
        value_dim = int(cfg.value_dim) if cfg.HasField("value_dim") else 1
        if self._discrete:
            if value_dim > 1:
                raise self._error(f"ids take value_dim 0 or 1, found {value_dim}")
            if len(cfg.boundaries):
                raise self._error(f"boundaries and {kinds[0]} both set; expected one of them")
            self._out = self._id_output()
            return
        self._bag = bool(len(cfg.boundaries)) and self._combiner == "" and value_dim <= 1
        if self._combiner == "" and not self._bag and value_dim <= 1:
            raise self._error(
                'combiner "" keeps every value: it needs boundaries (a bag of bucket ids) '
                "or value_dim > 1"
            )
        self._out = self._raw_output(value_dim=max(value_dim, 1))

    @property
    def raw_inputs(self) -> list[str]:
        """``[map, key]``."""
        return [self.config.map, self.config.key]

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse one batch (see :meth:`DerivedFeature.parse`)."""
        if self.reads_fg_output:
            return self._out.parse(columns)
        num_rows = self.num_rows(columns, self.raw_inputs)
        map_column = self.input_column(columns, self.config.map, num_rows)
        map_name = self.inputs[0]
        try:
            entries = parse_kv_map(map_column)
        except KvFormatError as e:
            raise self._column_error(map_name, str(e)) from None
        except TypeError as e:
            raise self._column_error(map_name, str(e)) from None
        keys, key_lengths = split_values(
            self.input_column(columns, self.config.key, num_rows), self.config.separator
        )
        key_rows = np.repeat(np.arange(num_rows, dtype=np.int64), key_lengths)
        found, where = first_match(row_keys(key_rows, keys), row_keys(entries.rows, entries.keys))
        values = entries.values.take(pa.array(where))
        prefixes = [keys.take(pa.array(found))] if self.config.need_key else []
        return self._emit_hits(values, key_rows[found], num_rows, map_name, prefixes)
