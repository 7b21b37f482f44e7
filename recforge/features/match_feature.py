r"""``MatchFeature``: a two-level (pkey, skey) lookup in a row's nested map.

``nested_map`` names a nested map column (``"pk1^sk1:v,sk2:v|pk2^sk3:v"`` strings or a
parquet ``MAP<K, string>`` of inner maps ``"sk1:v,sk2:v"``; see
:mod:`recforge.features.kv_parsing`); ``pkey`` and ``skey`` name key columns (multi-values
split on ``separator``: every pkey is paired with every skey) or are ``ALL``: ``pkey: ALL``
matches the skey under every pkey, ``skey: ALL`` takes every skey under the pkey (both:
every entry of the map). Without ``ALL`` a (pkey, skey) pair gives at most one value (the
first entry when the map repeats it); with ``ALL`` it gives every match (TorchEasyRec's
``multihit``).

What the values found become:

* Ids, when ``hash_bucket_size``, ``num_buckets``, ``vocab_list`` or ``vocab_dict`` is set:
  every value found is one id, prefixed by its pkey (``show_pkey``) and skey
  (``show_skey``) joined by ``"_"``; a row without any takes ``default_value`` (default
  ``"0"``; empty: an empty bag). With ``hash_bucket_size`` the string hashed is
  ``"{feature_name}_{value}"``: TorchEasyRec's FG prefixes a hashed match value with the
  feature name (its pinned bucket for value ``"1"`` of feature ``match_feat`` is the
  bucket of ``"match_feat_1"``); the default value is hashed as it is.
* Numbers otherwise (``value_dim`` 1): the values found are summed (one in the usual case),
  a row without any takes ``default_value``; ``normalizer`` and ``boundaries`` apply as for
  a ``raw_feature``.

Example:
    >>> from recforge.features.fg_mode import FG_DAG
    >>> from recforge.protos import feature_pb2
    >>> cfg = feature_pb2.MatchFeature(
    ...     feature_name="m", nested_map="user:kkv", pkey="item:cate", skey="item:brand"
    ... )
    >>> f = MatchFeature(cfg, FG_DAG)
    >>> kkv = pa.array(["ca^ba:1,bb:2|cb^ba:3", "ca^ba:1"])
    >>> cols = {"kkv": kkv, "cate": pa.array(["cb", "ca"]), "brand": pa.array(["ba", "bb"])}
    >>> f.parse(cols)["m.values"].tolist()
    [[3.0], [0.0]]

"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.combo_feature import cross_indices, split_values
from recforge.features.kv_parsing import (
    KvFormatError,
    all_matches,
    first_match,
    parse_nested_map,
    row_keys,
)
from recforge.features.lookup_feature import KEY_JOIN, MapHitsFeature, id_kinds

#: a ``pkey`` / ``skey`` that matches every key
ALL = "ALL"


class MatchFeature(MapHitsFeature):
    """A (pkey, skey) lookup in a nested map (see the module docstring)."""

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        cfg = self.config
        if not self.reads_fg_output and not (cfg.nested_map and cfg.pkey and cfg.skey):
            raise self._error(
                "a match_feature needs nested_map, pkey and skey, found "
                f"nested_map={cfg.nested_map!r}, pkey={cfg.pkey!r}, skey={cfg.skey!r}"
            )
        kinds = id_kinds(cfg)
        if len(kinds) > 1:
            raise self._error(f"expected at most one of {kinds}, found all of them")
        self._discrete = bool(kinds)
        if (cfg.need_discrete or cfg.show_pkey or cfg.show_skey) and not kinds:
            raise self._error(
                "need_discrete / show_pkey / show_skey make the values ids: set "
                "hash_bucket_size, num_buckets, vocab_list or vocab_dict"
            )
        value_dim = int(cfg.value_dim) if cfg.HasField("value_dim") else 1
        if value_dim > 1:
            raise self._error(f"a match_feature takes value_dim 0 or 1, found {value_dim}")
        if self._discrete:
            if len(cfg.boundaries):
                raise self._error(f"boundaries and {kinds[0]} both set; expected one of them")
            self._out = self._id_output()
        else:
            self._out = self._raw_output(value_dim=1)
        self._hash_prefix = f"{self.name}{KEY_JOIN}" if cfg.hash_bucket_size > 0 else ""

    @property
    def raw_inputs(self) -> list[str]:
        """``[nested_map, pkey, skey]`` (``ALL`` is no input)."""
        cfg = self.config
        return [cfg.nested_map] + [k for k in (cfg.pkey, cfg.skey) if k != ALL]

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse one batch (see :meth:`DerivedFeature.parse`)."""
        if self.reads_fg_output:
            return self._out.parse(columns)
        cfg = self.config
        num_rows = self.num_rows(columns, self.raw_inputs)
        map_name = self.inputs[0]
        try:
            entries = parse_nested_map(self.input_column(columns, cfg.nested_map, num_rows))
        except (KvFormatError, TypeError) as e:
            raise self._column_error(map_name, str(e)) from None
        every_row = (pa.array([""] * num_rows, pa.string()), np.ones(num_rows, np.int32))
        pkeys = every_row if cfg.pkey == ALL else self._keys(columns, cfg.pkey, num_rows)
        skeys = every_row if cfg.skey == ALL else self._keys(columns, cfg.skey, num_rows)
        rows, pi, si, _ = cross_indices(pkeys[1], skeys[1])
        pk, sk = pkeys[0].take(pa.array(pi)), skeys[0].take(pa.array(si))
        needle_parts: list[pa.Array] = []
        hay_parts: list[pa.Array] = []
        if cfg.pkey != ALL:
            needle_parts.append(pk)
            hay_parts.append(entries.pkeys)
        if cfg.skey != ALL:
            needle_parts.append(sk)
            hay_parts.append(entries.skeys)
        needles = row_keys(rows, *needle_parts)
        haystack = row_keys(entries.rows, *hay_parts)
        if ALL in (cfg.pkey, cfg.skey):
            found, where = all_matches(needles, haystack)
        else:
            found, where = first_match(needles, haystack)
        take = pa.array(where)
        values = entries.values.take(take)
        prefixes: list[pa.Array] = []
        if cfg.show_pkey:
            prefixes.append(entries.pkeys.take(take))
        if cfg.show_skey:
            prefixes.append(entries.skeys.take(take))
        if self._discrete and self._hash_prefix:
            prefixes.insert(0, pa.array([self.name] * len(values), pa.string()))
        return self._emit_hits(values, rows[found], num_rows, map_name, prefixes)

    def _keys(
        self, columns: dict[str, pa.Array], expression: str, num_rows: int
    ) -> tuple[pa.Array, np.ndarray]:
        column = self.input_column(columns, expression, num_rows)
        keys, lengths = split_values(column, self.config.separator)
        return pc.cast(keys, pa.string()), lengths
