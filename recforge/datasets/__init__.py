"""The data pipeline: readers, ``DataParser``, ``RecDataset`` and the ``Batch`` they produce.

Names are imported lazily (``from recforge.datasets import RecDataset`` loads only what that
needs), so importing the package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from recforge.datasets.errors import DataError, DataFileNotFoundError

_LAZY = {
    "Batch": "recforge.datasets.batch",
    "DataParser": "recforge.datasets.data_parser",
    "RecDataset": "recforge.datasets.dataset",
    "create_dataloader": "recforge.datasets.dataset",
    "BaseReader": "recforge.datasets.readers",
    "CsvReader": "recforge.datasets.readers",
    "ParquetReader": "recforge.datasets.readers",
    "create_reader": "recforge.datasets.readers",
    "expand_input_path": "recforge.datasets.readers",
    # the demo data generators live in recforge.demo; these names are the documented commands
    "generate_demo_data": "recforge.demo.simulate",
    "generate_retrieval_demo_data": "recforge.demo.retrieval",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recforge.datasets' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["DataError", "DataFileNotFoundError", *_LAZY]
