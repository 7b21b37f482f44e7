"""Reading an id feature's ``vocab_file``: a vocabulary kept in a file instead of the config.

As in TorchEasyRec the file is either a list, one word a line (``word`` on line ``i`` is id
``i``), or a dict, ``word id`` a line (separated by whitespace). Nothing is reserved: a
feature with ``vocab_file`` must set ``default_bucketize_value`` (the id of every other
value). Where we differ: TorchEasyRec maps a line without an id in a dict file to 0 and
lets a repeated word keep its last id; recforge refuses both, and blank lines, naming the
file and line, since the online FG may read such a file otherwise.
"""

from __future__ import annotations

import numpy as np

from recforge.features.base_feature import FeatureError


def read_vocab_file(path: str, where: str) -> tuple[list[str], np.ndarray, bool]:
    """The words of a vocabulary file and their ids.

    Args:
        path: the file (already joined to ``asset_dir``).
        where: what reads it, for errors (e.g. ``feature 'cate'``).

    Returns:
        ``(words, ids int64 [len(words)], whether it is a dict file)``.

    Raises:
        FeatureError: the file cannot be read, is empty, or has a blank line, a repeated
            word, a non-integer or negative id, or a line without an id in a dict file
            (naming file and line).

    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FeatureError(f"{where}: vocab_file '{path}': cannot read it: {e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise FeatureError(f"{where}: vocab_file '{path}': expected one word a line, found none")
    rows = [line.strip().split(maxsplit=1) for line in lines]
    is_dict = any(len(r) == 2 for r in rows)
    words: list[str] = []
    ids: list[int] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        at = f"{where}: vocab_file '{path}' line {number}"
        if not row:
            raise FeatureError(f"{at}: expected a word, found a blank line")
        if is_dict and len(row) != 2:
            raise FeatureError(
                f"{at}: expected 'word id' (other lines have ids), found {lines[number - 1]!r}"
            )
        word = row[0]
        if word in seen:
            raise FeatureError(f"{at}: word {word!r} repeats line {seen[word]}")
        seen[word] = number
        if is_dict:
            try:
                index = int(row[1])
            except ValueError:
                raise FeatureError(f"{at}: expected an integer id, found {row[1]!r}") from None
            if index < 0:
                raise FeatureError(f"{at}: expected an id >= 0, found {index}")
        else:
            index = number - 1
        words.append(word)
        ids.append(index)
    return words, np.array(ids, dtype=np.int64), is_dict
