"""The string hash of TorchEasyRec's feature generator, vectorised with numpy.

TorchEasyRec's FG (pyfg) buckets a value with ``hash_bucket_size`` by hashing its string form
with C++'s ``std::hash<std::string>`` as libstdc++ implements it (``std::_Hash_bytes``: a
64-bit MurmurHash2 variant with seed ``0xc70f6907``) and taking the unsigned result modulo
the size. pyfg is a closed binary, so this was derived from the values TorchEasyRec's own
tests pin (``"abc" -> 33``, ``"1" -> 95``, ``"ua_ia" -> 37``, ``"x" -> 35`` with 100 buckets,
...); ``tests/unit/test_features.py`` and ``tests/unit/test_fg_combo_lookup_match.py`` check
them. (With the environment variable ``USE_FARM_HASH_TO_BUCKETIZE=true`` pyfg uses FarmHash's
Fingerprint64 instead, as TensorFlow does; recforge does not implement that switch and refuses
to run while it is set, :mod:`recforge.utils.tzrec_env`.)

Example:
    >>> import pyarrow as pa
    >>> (std_hash(pa.array(["abc", "1"])) % 100).tolist()
    [33, 95]

"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recforge.features.utils import to_string_array

_SEED = np.uint64(0xC70F6907)
_MUL = np.uint64(0xC6A4A7935BD1E995)
_SHIFT = np.uint64(47)


def _shift_mix(v: np.ndarray) -> np.ndarray:
    return v ^ (v >> _SHIFT)


def hash_bytes(strings: pa.Array) -> np.ndarray:
    """``std::_Hash_bytes`` of each string's UTF-8 bytes, vectorised over the strings.

    Args:
        strings: a string array ``[U]`` without nulls.

    Returns:
        ``uint64 [U]``.

    """
    if len(strings) == 0:
        return np.zeros(0, dtype=np.uint64)
    if not pa.types.is_string(strings.type):
        strings = strings.cast(pa.string())
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[
        strings.offset : strings.offset + len(strings) + 1
    ]
    data_buffer = strings.buffers()[2]
    data = (
        np.frombuffer(data_buffer, dtype=np.uint8)
        if data_buffer is not None
        else np.zeros(0, np.uint8)
    )
    lengths = (offsets[1:] - offsets[:-1]).astype(np.int64)
    words = int((lengths.max() + 7) // 8) if lengths.size else 0
    # each string's bytes zero-padded to a whole number of 8-byte little-endian words
    padded = np.zeros((len(strings), words * 8), dtype=np.uint8)
    starts = np.repeat(offsets[:-1].astype(np.int64), lengths)
    rows = np.repeat(np.arange(len(strings)), lengths)
    columns = np.arange(len(rows), dtype=np.int64) - np.repeat(
        np.cumsum(lengths) - lengths, lengths
    )
    padded[rows, columns] = data[starts + columns]
    blocks = padded.view("<u8").astype(np.uint64, copy=False).reshape(len(strings), words)
    length64 = lengths.astype(np.uint64)
    h = _SEED ^ (length64 * _MUL)
    for j in range(words):
        word = blocks[:, j]
        whole = (j + 1) * 8 <= lengths
        mixed = (h ^ (_shift_mix(word * _MUL) * _MUL)) * _MUL
        # the last, partial word enters unmixed (its missing high bytes are the zero padding)
        tail = (h ^ word) * _MUL
        partial = (j * 8 < lengths) & ~whole
        h = np.where(whole, mixed, np.where(partial, tail, h))
    h = _shift_mix(h) * _MUL
    return _shift_mix(h)


def std_hash(values: pa.Array) -> np.ndarray:
    """TorchEasyRec's FG hash of the string form of each value.

    Integers hash like their decimal string (``1`` like ``"1"``) and integral floats like
    integers (see :func:`~recforge.features.utils.to_string_array`); nulls hash like ``""``.
    Each distinct value is hashed once.

    Args:
        values: any scalar array ``[N]``.

    Returns:
        ``uint64 [N]``; ``% hash_bucket_size`` gives the bucket TorchEasyRec's FG gives.

    """
    if len(values) == 0:
        return np.zeros(0, dtype=np.uint64)
    strings = to_string_array(values)
    if strings.null_count:
        strings = strings.fill_null("")
    encoded = strings.dictionary_encode()
    hashed = hash_bytes(encoded.dictionary)
    return hashed[encoded.indices.to_numpy(zero_copy_only=False)]
