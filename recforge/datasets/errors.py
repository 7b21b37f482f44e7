"""Errors raised by the data pipeline."""

from __future__ import annotations

from recforge.errors import DataError

__all__ = ["DataError", "DataFileNotFoundError"]


class DataFileNotFoundError(DataError, FileNotFoundError):
    """An input path or glob pattern matched no file (also a ``FileNotFoundError``)."""
