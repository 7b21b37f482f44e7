r"""Vectorised parsing of key-value cells (lookup maps, nested match maps) and key matching.

Map columns come as parquet ``MAP`` columns or in TorchEasyRec's string encodings:

* a kv map: ``"k1:v1\x1dk2:v2"`` (entries joined by ``\x1d``, key and value by the first
  ``:``), a ``list<string>`` of ``"k:v"`` entries, or ``MAP<K, V>``;
* a nested (kkv) map: ``"pk1^sk1:0.2,sk2:0.3|pk2^sk4:0.1"`` (outer entries joined by ``|``,
  primary key and inner map by ``^``, inner entries by ``,``, key and value by ``:``), or
  ``MAP<K, string>`` whose values are inner maps ``"sk1:0.2,sk2:0.3"``.

Every function works on whole columns (pyarrow compute / numpy), never row by row. A
malformed entry raises :class:`KvFormatError` with its row; features turn it into a
``FeatureError`` naming feature and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.errors import RecforgeError
from recforge.features.utils import as_array, is_list_type, is_string_type, to_string_array

#: entry separator of a string kv map (fixed by TorchEasyRec's FG)
MAP_ENTRY_SEP = "\x1d"
#: key / value separator of a map entry
KV_SEP = ":"
#: nested maps: outer entries, primary key / inner map, inner entries
NESTED_OUTER_SEP = "|"
NESTED_KEY_SEP = "^"
NESTED_INNER_SEP = ","
#: joins a row number and keys into one lookup key (a byte no text key holds)
_JOIN = "\x1f"


class KvFormatError(RecforgeError):
    """A map cell that is no ``key:value`` list.

    Attributes:
        row: the row of the bad cell.
        value: the bad entry.
        expected: what the entry should look like.

    """

    def __init__(self, row: int, value: str, expected: str) -> None:
        super().__init__(f"expected {expected}, found {value!r} at row {row}")
        self.row, self.value, self.expected = row, value, expected


@dataclass
class KvEntries:
    """The entries of a map column, flattened.

    Attributes:
        rows: ``int64 [M]`` the row of each entry.
        keys: ``string [M]`` its key (string form).
        values: ``[M]`` its value (strings for string maps, the map's value type otherwise).

    """

    rows: np.ndarray
    keys: pa.Array
    values: pa.Array


def _flatten(column: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """``(rows int64 [N], items [N])`` of a list column (null lists have no items)."""
    rows = pc.list_parent_indices(column).to_numpy(zero_copy_only=False).astype(np.int64)
    return rows, pc.list_flatten(column)


def _map_entries(column: pa.MapArray) -> tuple[np.ndarray, pa.StructArray]:
    """``(rows int64 [N], entry structs [N])`` of a map column (list kernels take no maps)."""
    offsets = column.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    lengths = np.diff(offsets)
    entries = column.values.slice(offsets[0], offsets[-1] - offsets[0])
    rows = np.repeat(np.arange(len(column), dtype=np.int64), lengths)
    if column.null_count:  # a null map's offsets may still span entries
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        keep = np.repeat(valid, lengths)
        rows, entries = rows[keep], entries.filter(pa.array(keep))
    return rows, entries


def _split_pairs(
    rows: np.ndarray, items: pa.Array, sep: str, expected: str, bare_value: Optional[str] = None
) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """Split ``"k<sep>v"`` items on the first ``sep``; empty and null items are dropped.

    A bare key (no ``sep``) takes ``bare_value``; with ``None`` it is a :class:`KvFormatError`.
    """
    keep = pc.and_kleene(pc.is_valid(items), pc.not_equal(items.fill_null(""), ""))
    if keep.false_count:
        mask = keep.to_numpy(zero_copy_only=False)
        rows, items = rows[mask], items.filter(keep)
    if len(items) == 0:
        empty = pa.array([], pa.string())
        return rows, empty, empty
    if bare_value is not None:
        bare = pc.invert(pc.match_substring(items, sep))
        items = pc.if_else(bare, pc.binary_join_element_wise(items, bare_value, sep), items)
    parts = pc.split_pattern(items, sep, max_splits=1)
    bad = np.flatnonzero(pc.list_value_length(parts).to_numpy(zero_copy_only=False) != 2)
    if bad.size:
        raise KvFormatError(int(rows[bad[0]]), items[int(bad[0])].as_py(), expected)
    return rows, pc.list_element(parts, 0), pc.list_element(parts, 1)


def _strings(column: pa.Array) -> pa.Array:
    if pa.types.is_string_view(column.type) or pa.types.is_large_string(column.type):
        return pc.cast(column, pa.string())
    return column


def parse_kv_map(
    column: pa.Array | pa.ChunkedArray,
    entry_sep: str = MAP_ENTRY_SEP,
    bare_value: Optional[str] = None,
) -> KvEntries:
    r"""Flatten a kv map column into its entries.

    Args:
        column: ``MAP<K, V>``, ``list<string>`` of ``"k:v"`` or strings ``"k1:v1\x1dk2:v2"``
            (``[B]``); null and empty cells have no entries.
        entry_sep: the entry separator of string cells (empty: one entry per cell).
        bare_value: the value of an entry without ``:`` (a bare key); ``None``: an error.

    Returns:
        The entries in row order, keys in their string form.

    Raises:
        KvFormatError: an entry without ``:``.
        TypeError: a column of another type.

    """
    column = as_array(column)
    if pa.types.is_map(column.type):
        rows, entries = _map_entries(column)
        keys = to_string_array(entries.field(0))
        return KvEntries(rows, keys, entries.field(1))
    if pa.types.is_null(column.type):
        empty = pa.array([], pa.string())
        return KvEntries(np.zeros(0, np.int64), empty, empty)
    if is_string_type(column.type):
        column = _strings(column)
        if entry_sep:
            column = pc.split_pattern(column, entry_sep)
        else:
            column = pa.ListArray.from_arrays(
                pa.array(np.arange(len(column) + 1, dtype=np.int32)), column
            )
    elif not (is_list_type(column.type) and is_string_type(column.type.value_type)):
        raise TypeError(f"expected a MAP, list<string> or string column, found {column.type}")
    rows, items = _flatten(column)
    rows, keys, values = _split_pairs(
        rows, _strings(items), KV_SEP, "key:value entries", bare_value
    )
    return KvEntries(rows, keys, values)


@dataclass
class NestedEntries:
    """The entries of a nested (kkv) map column, flattened.

    Attributes:
        rows: ``int64 [M]`` the row of each entry.
        pkeys: ``string [M]`` its primary key.
        skeys: ``string [M]`` its secondary key.
        values: ``string [M]`` its value.

    """

    rows: np.ndarray
    pkeys: pa.Array
    skeys: pa.Array
    values: pa.Array


def parse_nested_map(column: pa.Array | pa.ChunkedArray) -> NestedEntries:
    """Flatten a nested map column into ``(row, pkey, skey, value)`` entries.

    Args:
        column: ``MAP<K, string>`` of inner maps ``"sk:v,sk:v"``, or strings
            ``"pk^sk:v,sk:v|pk2^sk:v"`` (``[B]``); null and empty cells have no entries.

    Returns:
        The entries in row order.

    Raises:
        KvFormatError: an outer entry without ``^`` or an inner entry without ``:``.
        TypeError: a column of another type.

    """
    column = as_array(column)
    if pa.types.is_map(column.type):
        rows, entries = _map_entries(column)
        pkeys, inner = to_string_array(entries.field(0)), _strings(entries.field(1))
    elif pa.types.is_null(column.type):
        empty = pa.array([], pa.string())
        return NestedEntries(np.zeros(0, np.int64), empty, empty, empty)
    elif is_string_type(column.type):
        rows, items = _flatten(pc.split_pattern(_strings(column), NESTED_OUTER_SEP))
        rows, pkeys, inner = _split_pairs(rows, items, NESTED_KEY_SEP, "pkey^skey:value entries")
    else:
        raise TypeError(f"expected a MAP or string column, found {column.type}")
    if not is_string_type(inner.type):
        raise TypeError(f"expected inner maps as strings 'skey:value,...', found {inner.type}")
    inner_rows, inner_items = _flatten(pc.split_pattern(inner, NESTED_INNER_SEP))
    outer_rows = rows
    try:
        outer_index, skeys, values = _split_pairs(
            inner_rows, inner_items, KV_SEP, "skey:value entries in the inner map"
        )
    except KvFormatError as e:  # its row is an outer entry's index
        raise KvFormatError(int(outer_rows[e.row]), e.value, e.expected) from None
    # the inner parse tracked outer-entry indices; map them back to rows, keep their pkeys
    index = pa.array(outer_index)
    return NestedEntries(outer_rows[outer_index], pkeys.take(index), skeys, values)


def row_keys(rows: np.ndarray, *parts: pa.Array) -> pa.Array:
    """One string per entry joining its row and keys, for matching across columns."""
    row_strings = pc.cast(pa.array(rows, pa.int64()), pa.string())
    return pc.binary_join_element_wise(row_strings, *(to_string_array(p) for p in parts), _JOIN)


def first_match(needles: pa.Array, haystack: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """For each needle, the first equal haystack entry.

    Args:
        needles: ``string [K]``.
        haystack: ``string [M]``.

    Returns:
        ``(needle_index int64 [H], haystack_index int64 [H])`` of the ``H`` needles found, in
        needle order.

    """
    if len(needles) == 0 or len(haystack) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    index = pc.index_in(needles, value_set=haystack)
    found = index.is_valid().to_numpy(zero_copy_only=False)
    where = index.drop_null().to_numpy(zero_copy_only=False).astype(np.int64)
    return np.flatnonzero(found).astype(np.int64), where


def all_matches(needles: pa.Array, haystack: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of equal needle and haystack entries (a hash join).

    Args:
        needles: ``string [K]``.
        haystack: ``string [M]``.

    Returns:
        ``(needle_index int64 [H], haystack_index int64 [H])``, sorted by needle, then by
        haystack position.

    """
    if len(needles) == 0 or len(haystack) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    left = pa.table({"k": needles, "li": pa.array(np.arange(len(needles), dtype=np.int64))})
    right = pa.table({"k": haystack, "ri": pa.array(np.arange(len(haystack), dtype=np.int64))})
    joined = left.join(right, "k", join_type="inner")
    li = joined.column("li").to_numpy().astype(np.int64)
    ri = joined.column("ri").to_numpy().astype(np.int64)
    order = np.lexsort((ri, li))
    return li[order], ri[order]
