"""The served export: a :class:`~recforge.predictor.Predictor` that can be reloaded in place.

An export with an item index (``recforge build-index``) also gets its
:class:`~recforge.index.retriever.Retriever`, reloaded with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from typing import Any, Optional

from recforge.index.files import has_index
from recforge.predictor import Predictor, resolve_export_dir
from recforge.serving.rows import column_needers
from recforge.utils import storage
from recforge.utils.layout import MODEL_FILE

logger = logging.getLogger(__name__)


class ServedModel:
    """The loaded export directory; :meth:`reload` swaps in a fresh load of it.

    A reload loads the directory in a helper thread while requests keep being answered by
    the current model; the new one takes over from the next model call, so no request is
    dropped. A failed reload leaves the current model in service.

    Args:
        export_dir: the directory ``recforge export`` wrote (a local copy of ``source``).
        batch_size: rows per model call inside :meth:`Predictor.predict`.
        source: the URL ``export_dir`` was downloaded from (``s3://...``); a reload
            downloads it again into a new local copy and deletes the one it replaces.

    Raises:
        ExportError: the directory is missing or is not a complete export.
        RetrievalIndexError: it has an item index that cannot be loaded (faiss missing, built
            for another export, damaged).

    """

    def __init__(self, export_dir: str, batch_size: int, source: Optional[str] = None) -> None:
        self.export_dir = export_dir
        self.source = source or export_dir
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
            directory = self.export_dir
            if storage.is_remote(self.source):
                directory = await asyncio.to_thread(fetch_export, self.source)
            try:
                fresh = await asyncio.to_thread(Predictor, directory, self.batch_size)
                retriever = await asyncio.to_thread(load_index, directory, self.batch_size)
            except BaseException:
                if directory != self.export_dir:
                    shutil.rmtree(os.path.dirname(directory), ignore_errors=True)
                raise
            if directory != self.export_dir:
                # requests that hold the old predictor have it loaded in memory already
                shutil.rmtree(os.path.dirname(self.export_dir), ignore_errors=True)
                self.export_dir = directory
            self.predictor, self.needers = fresh, column_needers(fresh.model_info)
            self.retriever = retriever
            self.version += 1
            self.loaded_at = time.time()
            logger.info("serve: reloaded %s (model version %d)", self.source, self.version)
            return self.describe()

    def describe(self) -> dict[str, Any]:
        """The export directory, model version and load time of the model in service."""
        info = self.predictor.model_info
        return {
            "export_dir": self.source,
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


def fetch_export(url: str) -> str:
    """A new local copy of the export directory at ``url`` (checked to be complete).

    Raises:
        ExportError: the URL holds no complete export.

    """
    url = url.rstrip("/")
    if url.endswith("/" + MODEL_FILE):
        url = url[: -len(MODEL_FILE) - 1]
    # the copy is <new temp dir>/<name>: a reload deletes its parent, the temp dir
    return resolve_export_dir(storage.fetch(url, "serve"))


def load_index(export_dir: str, batch_size: int) -> Optional[Any]:
    """The export's :class:`~recforge.index.retriever.Retriever`, or None without an index."""
    if not has_index(export_dir):
        return None
    from recforge.index.retriever import Retriever

    return Retriever(export_dir, batch_size=batch_size)
