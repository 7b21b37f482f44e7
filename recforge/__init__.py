"""recforge: config-driven recommendation models on PyTorch + TorchRec.

``import recforge`` is cheap: the names below load their modules on first use.

* ``recforge.load_predictor(export_dir)``: score tables with an exported model
  (:class:`recforge.predictor.Predictor`).
* ``recforge.load_retriever(export_dir)``: top K items of users from a match model's export
  and its item index (:class:`recforge.index.retriever.Retriever`).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_predictor": "recforge.predictor",
    "Predictor": "recforge.predictor",
    "load_retriever": "recforge.index.retriever",
    "Retriever": "recforge.index.retriever",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recforge' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = list(_LAZY)
