"""Errors raised by the data pipeline."""

from __future__ import annotations


class DataError(ValueError):
    """Input data does not match the config: the message names the column / file involved."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """An input path or glob pattern matched no file (also a ``FileNotFoundError``)."""
