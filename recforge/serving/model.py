"""The served export: a :class:`~recforge.predictor.Predictor` that can be reloaded in place.

An export with an item index (``recforge build-index``) also gets its
:class:`~recforge.index.retriever.Retriever`, reloaded with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

from recforge.index.files import has_index
from recforge.predictor import Predictor
from recforge.serving.rows import column_needers

logger = logging.getLogger(__name__)


class ServedModel:
    """The loaded export directory; :meth:`reload` swaps in a fresh load of it.

    A reload loads the directory in a helper thread while requests keep being answered by
    the current model; the new one takes over from the next model call, so no request is
    dropped. A failed reload leaves the current model in service.

    Args:
        export_dir: the directory ``recforge export`` wrote.
        batch_size: rows per model call inside :meth:`Predictor.predict`.

    Raises:
        ExportError: the directory is missing or is not a complete export.
        RetrievalIndexError: it has an item index that cannot be loaded (faiss missing, built
            for another export, damaged).

    """

    def __init__(self, export_dir: str, batch_size: int) -> None:
        self.export_dir = export_dir
        self.batch_size = batch_size
        self.predictor = Predictor(export_dir, batch_size=batch_size)
        self.retriever = load_index(export_dir, batch_size)
        self.version = 1
        self.loaded_at = time.time()
        self.needers = column_needers(self.predictor.model_info)
        self._lock = asyncio.Lock()

    async def reload(self) -> dict[str, Any]:
        """Loads the export directory again and puts it in service.

        Returns:
            :meth:`describe` of the new model.

        Raises:
            RecforgeError: the directory no longer holds a valid export (the current model
                stays in service).

        """
        async with self._lock:
            fresh = await asyncio.to_thread(Predictor, self.export_dir, self.batch_size)
            retriever = await asyncio.to_thread(load_index, self.export_dir, self.batch_size)
            self.predictor, self.needers = fresh, column_needers(fresh.model_info)
            self.retriever = retriever
            self.version += 1
            self.loaded_at = time.time()
            logger.info("serve: reloaded %s (model version %d)", self.export_dir, self.version)
            return self.describe()

    def describe(self) -> dict[str, Any]:
        """The export directory, model version and load time of the model in service."""
        info = self.predictor.model_info
        return {
            "export_dir": self.export_dir,
            "model_class": info.get("model_class"),
            "model_version": self.version,
            "loaded_at": self.loaded_at,
            "checkpoint": info.get("checkpoint"),
            "global_step": info.get("global_step"),
        }

    def metadata(self) -> dict[str, Any]:
        """:meth:`describe` plus the inputs and outputs of ``model_info.json``."""
        info = self.predictor.model_info
        return {
            **self.describe(),
            "input_columns": self.predictor.input_columns,
            "features": info.get("features", []),
            "inputs": info.get("inputs", []),
            "outputs": info["outputs"],
            "index": None if self.retriever is None else self.retriever.info,
        }


def load_index(export_dir: str, batch_size: int) -> Optional[Any]:
    """The export's :class:`~recforge.index.retriever.Retriever`, or None without an index."""
    if not has_index(export_dir):
        return None
    from recforge.index.retriever import Retriever

    return Retriever(export_dir, batch_size=batch_size)
