"""Vectorised helpers shared by the feature kinds (pyarrow / numpy, no per-row Python loops)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def as_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Return one contiguous ``pa.Array`` (chunks combined, dictionaries decoded)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column


def is_string_type(dtype: pa.DataType) -> bool:
    """Whether ``dtype`` holds text (string, large_string, string_view)."""
    return (
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
    )


def is_list_type(dtype: pa.DataType) -> bool:
    """Whether ``dtype`` is any kind of arrow list."""
    return (
        pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
        or pa.types.is_list_view(dtype)
        or pa.types.is_large_list_view(dtype)
    )


def is_number_type(dtype: pa.DataType) -> bool:
    """Whether ``dtype`` is an integer, floating point, decimal or boolean type."""
    return (
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_boolean(dtype)
    )


def split_cells(column: pa.Array, separator: str) -> pa.Array:
    """Split string cells on ``separator`` into a list array when any cell contains it.

    Args:
        column: a string array ``[B]``.
        separator: the multi-value separator; empty means never split.

    Returns:
        ``list<string>`` ``[B]`` when some cell contains the separator, else ``column`` itself.

    """
    if not separator or len(column) == 0:
        return column
    if pc.any(pc.match_substring(column, separator)).as_py():
        return pc.split_pattern(column, separator)
    return column


def flatten_cells(column: pa.Array, drop_empty: bool = True) -> tuple[pa.Array, np.ndarray]:
    """Flatten a scalar or list column into values plus per-row lengths.

    Null cells, null list items and (with ``drop_empty``) empty strings are dropped, so their
    row contributes fewer (possibly zero) values.

    Args:
        column: scalar ``[B]`` or list ``[B]`` array.
        drop_empty: also drop empty strings.

    Returns:
        ``(values [N], lengths int32 [B])``.

    """
    num_rows = len(column)
    if is_list_type(column.type):
        values = pc.list_flatten(column)
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    else:
        values = column
        lengths = np.ones(num_rows, dtype=np.int32)
    if values.null_count == 0 and not (drop_empty and is_string_type(values.type)):
        return values, np.ascontiguousarray(lengths, dtype=np.int32)
    keep = values.is_valid()
    if drop_empty and is_string_type(values.type):
        keep = pc.and_kleene(keep, pc.not_equal(values, ""))
    if keep.false_count:
        mask = keep.to_numpy(zero_copy_only=False)
        if is_list_type(column.type):
            parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
            lengths = np.bincount(parents[mask], minlength=num_rows)
        else:
            lengths = mask
        values = values.filter(keep)
    return values, np.ascontiguousarray(lengths, dtype=np.int32)


def truncate_rows(
    values: pa.Array | np.ndarray, lengths: np.ndarray, limit: int
) -> tuple[pa.Array | np.ndarray, np.ndarray]:
    """Keep the first ``limit`` values of each row.

    Args:
        values: ``[N]`` flat values, row after row (an Arrow or numpy array).
        lengths: ``int [B]`` values per row.
        limit: the most values a row keeps.

    Returns:
        ``(values [M], lengths [B])``: the inputs themselves when no row is longer.

    """
    if not lengths.size or lengths.max() <= limit:
        return values, lengths
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    keep = (np.arange(len(values)) - starts) < limit
    kept = values.filter(pa.array(keep)) if isinstance(values, pa.Array) else values[keep]
    return kept, np.minimum(lengths, limit).astype(np.int32)


def fill_empty_bags(
    ids: np.ndarray, lengths: np.ndarray, default_ids: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Put ``default_ids`` into every empty bag (vectorised).

    Args:
        ids: ``int64 [N]`` flat ids (or any per-id values, e.g. ``float32`` weights).
        lengths: ``int32 [B]`` ids per row.
        default_ids: ``[K]`` the ids (values) of an empty row; ``None`` leaves it empty.

    Returns:
        ``(ids [N + K * empty rows], lengths int32 [B])``.

    """
    empty = lengths == 0
    if default_ids is None or not empty.any():
        return ids, lengths
    new_lengths = np.where(empty, len(default_ids), lengths).astype(np.int32)
    slot_is_default = np.repeat(empty, new_lengths)
    out = np.empty(int(new_lengths.sum()), dtype=ids.dtype)
    out[~slot_is_default] = ids
    out[slot_is_default] = np.tile(default_ids, int(empty.sum()))
    return out, new_lengths


def row_of_value(lengths: np.ndarray, index: int) -> int:
    """Return the row whose bag holds flat value ``index`` (for error messages)."""
    return int(np.searchsorted(np.cumsum(lengths), index, side="right"))


def to_string_array(values: pa.Array) -> pa.Array:
    """Cast values to their canonical string form (integral floats lose their ``.0``)."""
    dtype = values.type
    if pa.types.is_string(dtype):
        return values
    if is_string_type(dtype):
        return pc.cast(values, pa.string())
    if pa.types.is_floating(dtype):
        arr = values.to_numpy(zero_copy_only=False)
        # integral floats print as integers, unless beyond int64 (the cast would wrap)
        integral = np.all(np.isfinite(arr)) and np.all(arr == np.floor(arr))
        if integral and np.all(np.abs(arr) < 2.0**63):
            return pc.cast(pa.array(arr.astype(np.int64)), pa.string())
    return pc.cast(values, pa.string())


def stable_hash(values: pa.Array) -> np.ndarray:
    """Hash the string form of each value with ``pandas.util.hash_array``.

    The hash is deterministic across processes, runs and machines (SipHash with pandas' fixed
    key), and equals ``pandas.util.hash_array(numpy.array(strings, dtype=object))``. Each
    distinct value is hashed once (values are dictionary-encoded first), so low-cardinality
    columns are cheap. Nulls hash like the empty string.

    Args:
        values: any scalar array ``[N]``; integers hash like their decimal string.

    Returns:
        ``uint64 [N]``.

    """
    if len(values) == 0:
        return np.zeros(0, dtype=np.uint64)
    strings = to_string_array(values)
    if strings.null_count:
        strings = strings.fill_null("")
    encoded = strings.dictionary_encode()
    uniques = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
    # imported here: pandas is large, and only string hashing needs it
    import pandas as pd

    hashed = pd.util.hash_array(uniques, categorize=False)
    return hashed[encoded.indices.to_numpy(zero_copy_only=False)]


#: a number written as text (case-insensitive; surrounding whitespace allowed)
FLOAT_PATTERN = r"(?i)^\s*[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|nan|inf|infinity)\s*$"


def to_floats(values: pa.Array) -> tuple[np.ndarray, int]:
    """Numbers, or numbers written as text, as ``float64``.

    Args:
        values: ``[N]`` numbers or strings.

    Returns:
        ``(float64 [N], bad)``: nulls are NaN; ``bad`` is the index of the first value that
        is no number (then the numbers are not computed), -1 when all are.

    """
    if is_number_type(values.type):
        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), -1
    strings = pc.utf8_trim_whitespace(to_string_array(values))
    try:
        return pc.cast(strings, pa.float64()).to_numpy(zero_copy_only=False), -1
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ok = pc.match_substring_regex(strings, FLOAT_PATTERN).fill_null(True)
        bad = first_true(~ok.to_numpy(zero_copy_only=False))
        if bad >= 0:
            return np.zeros(len(values)), bad
        # spellings Arrow's cast refuses but Python's float takes ("infinity", ...)
        texts = strings.to_pylist()
        return np.array([np.nan if t is None else float(t) for t in texts], np.float64), -1


def first_true(mask: np.ndarray) -> int:
    """Index of the first ``True`` in ``mask`` (-1 when none)."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else -1


def ensure_writable(array: np.ndarray) -> np.ndarray:
    """Return ``array`` when writable, else a copy (``torch.from_numpy`` wants writable)."""
    return array if array.flags.writeable else array.copy()


def first_beyond_int64(values: pa.Array) -> int:
    """Index of the first integer string beyond int64 in ``values`` (-1 when none)."""
    digits = pc.utf8_length(pc.utf8_trim_whitespace(values)).to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(digits >= 19):  # shorter ones always fit
        try:
            if not -(2**63) <= int(values[int(i)].as_py()) < 2**63:
                return int(i)
        except ValueError:
            continue
    return -1
