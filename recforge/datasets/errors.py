"""Errors raised by the data pipeline."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

import numpy as np

from recforge.errors import DataError

__all__ = ["DataError", "DataFileNotFoundError", "locate_row_error"]

#: how the parser and the features name a row of the batch they parse: "... at row 12"
_AT_ROW = re.compile(r",? at row (\d+)")


class DataFileNotFoundError(DataError, FileNotFoundError):
    """An input path or glob pattern matched no file (also a ``FileNotFoundError``)."""


def locate_row_error(
    error: Exception,
    files: Sequence[str],
    rows: np.ndarray,
    csv_header: Optional[int],
    mode: str,
) -> str:
    """Rewrite an error about row ``i`` of a batch to name that row's file and row in it.

    The parser and the features say which row of the batch they could not parse with
    "at row N"; batches mix files and, when shuffled, rows, so that number alone would not
    help to find the row.

    Args:
        error: the error; its message may say "at row N" (N: the row in the batch).
        files: the file of each row of the batch ``[B]``.
        rows: the 0-based position of each row in its file ``[B]`` (header excluded).
        csv_header: for CSV input, 1 when the files have a header line, else 0 (the message
            then also gives the line number); ``None`` for other formats.
        mode: ``train``, ``eval`` or ``predict``: which input the batch comes from.

    Returns:
        ``FILE: row R: MESSAGE (MODE input)``; ``FILE: MESSAGE (MODE input)`` without a row.

    """
    message = str(error)
    match = _AT_ROW.search(message)
    if match and int(match.group(1)) < len(files):
        i = int(match.group(1))
        where = f"{files[i]}: row {int(rows[i])}"
        if csv_header is not None:
            where += f" (line {int(rows[i]) + 1 + csv_header})"
        message = message[: match.start()] + message[match.end() :]
        return f"{where}: {message} ({mode} input)"
    if match:  # a row the negative sampler appended to the batch
        return f"{message} (a negative item from data_config.negative_sampler; {mode} input)"
    distinct = list(dict.fromkeys(files))
    where = distinct[0] if len(distinct) == 1 else f"{distinct[0]} (or {len(distinct) - 1} more)"
    return f"{where}: {message} ({mode} input)"
