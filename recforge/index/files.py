"""The item index directory of an export: written atomically, read back with its checks.

``<export_dir>/item_index/`` holds ``faiss_index`` and ``id_mapping`` (TorchEasyRec's names
and format: the faiss index, and the item id of each index row, one a line) and
``index_info.json`` (type, metric, dim, count, item table, the checksum of the export's
``model_info.json``). The directory is written under a temporary name and renamed into place;
an earlier index is moved aside first and removed only after the new one took its place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from types import ModuleType
from typing import Any

import numpy as np

from recforge.export.files import temp_dir_beside
from recforge.index.errors import RetrievalIndexError
from recforge.utils.layout import (
    INDEX_DIR,
    INDEX_FILE,
    INDEX_IDS_FILE,
    INDEX_INFO_FILE,
    MODEL_INFO_FILE,
)

FORMAT_VERSION = 1
ID_TYPES = ("int64", "string")
_REBUILD = "rebuild it with recforge build-index"


def index_dir(export_dir: str) -> str:
    """The item index directory of an export directory."""
    return os.path.join(export_dir, INDEX_DIR)


def has_index(export_dir: str) -> bool:
    """Whether the export directory holds an item index (``index_info.json`` written)."""
    return os.path.isfile(os.path.join(index_dir(export_dir), INDEX_INFO_FILE))


def export_checksum(export_dir: str) -> str:
    """``sha256:<hex>`` of the export's ``model_info.json`` (changes with every export)."""
    with open(os.path.join(export_dir, MODEL_INFO_FILE), "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def _write_ids(path: str, ids: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for item in ids.tolist():
            f.write(f"{item}\n")


def write_index_dir(
    faiss: ModuleType, export_dir: str, index: Any, ids: np.ndarray, info: dict[str, Any]
) -> str:
    """Writes ``export_dir/item_index`` atomically, replacing an earlier index there.

    Args:
        faiss: the faiss module.
        export_dir: the export directory.
        index: the filled faiss index; row r is item ``ids[r]``.
        ids: the item ids ``[count]`` (int64, or str without line breaks).
        info: the fields of ``index_info.json``.

    Returns:
        The index directory.

    Raises:
        RetrievalIndexError: ``item_index`` exists and is not an index directory.

    """
    final = index_dir(export_dir)
    if os.path.exists(final) and not (
        os.path.isdir(final)
        and (not os.listdir(final) or os.path.isfile(os.path.join(final, INDEX_INFO_FILE)))
    ):
        raise RetrievalIndexError(
            f"{final}: expected an item index directory (with {INDEX_INFO_FILE}) or nothing,"
            " found something else; move it away"
        )
    tmp = temp_dir_beside(final, "tmp")
    try:
        faiss.write_index(index, os.path.join(tmp, INDEX_FILE))
        _write_ids(os.path.join(tmp, INDEX_IDS_FILE), ids)
        with open(os.path.join(tmp, INDEX_INFO_FILE), "w") as f:
            json.dump({"format_version": FORMAT_VERSION, **info}, f, indent=1)
        if not os.path.exists(final):
            os.replace(tmp, final)
            return final
        holder = temp_dir_beside(final, "old")
        previous = os.path.join(holder, "previous")
        os.replace(final, previous)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(previous, final)
            raise
        finally:
            shutil.rmtree(holder, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_index_info(export_dir: str) -> dict[str, Any]:
    """``index_info.json`` of the export's index, checked against the export itself.

    Raises:
        RetrievalIndexError: no index, a file that is not what ``build-index`` writes, or an
            index built for another export (its ``model_info.json`` checksum differs).

    """
    path = os.path.join(index_dir(export_dir), INDEX_INFO_FILE)
    if not os.path.isfile(path):
        raise RetrievalIndexError(
            f"{export_dir}: expected an item index in {INDEX_DIR}/, found none; build it with"
            f" recforge build-index --export_dir {export_dir} --item_input_path ..."
        )
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RetrievalIndexError(
            f"{path}: expected the JSON object build-index writes, found invalid JSON ({e});"
            f" {_REBUILD}"
        ) from None
    needed = {"index_type": str, "metric": str, "dim": int, "count": int}
    needed.update({"id_type": str, "export_checksum": str})
    for key, kind in needed.items():
        if not isinstance(info, dict) or not isinstance(info.get(key), kind):
            found = type(info).__name__ if not isinstance(info, dict) else repr(info.get(key))
            raise RetrievalIndexError(
                f"{path}: expected '{key}' ({kind.__name__}), found {found}; {_REBUILD}"
            )
    if info["id_type"] not in ID_TYPES:
        raise RetrievalIndexError(
            f"{path}: expected id_type {' or '.join(ID_TYPES)}, found {info['id_type']!r};"
            f" {_REBUILD}"
        )
    current = export_checksum(export_dir)
    if info["export_checksum"] != current:
        raise RetrievalIndexError(
            f"{path}: built for another export ({MODEL_INFO_FILE} {info['export_checksum']}),"
            f" this export's is {current}; {_REBUILD} --export_dir {export_dir}"
        )
    return info


def read_index(faiss: ModuleType, export_dir: str, info: dict[str, Any]) -> tuple[Any, np.ndarray]:
    """The faiss index and the item id of each of its rows, checked against ``info``.

    Raises:
        RetrievalIndexError: a missing or unreadable file, or counts and dims that disagree
            with ``index_info.json``.

    """
    directory = index_dir(export_dir)
    index_path = os.path.join(directory, INDEX_FILE)
    ids_path = os.path.join(directory, INDEX_IDS_FILE)
    for path in (index_path, ids_path):
        if not os.path.isfile(path):
            raise RetrievalIndexError(f"{path}: expected the file build-index writes, found none")
    try:
        index = faiss.read_index(index_path)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RetrievalIndexError(
            f"{index_path}: cannot be read by faiss ({first}); {_REBUILD}"
        ) from None
    with open(ids_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if info["id_type"] == "int64":
        try:
            ids = np.array([int(line) for line in lines], dtype=np.int64)
        except ValueError:
            bad = next(i for i, line in enumerate(lines) if not line.lstrip("-").isdigit())
            raise RetrievalIndexError(
                f"{ids_path}: line {bad + 1}: expected an integer item id, found {lines[bad]!r};"
                f" {_REBUILD}"
            ) from None
    else:
        ids = np.array(lines, dtype=object)
    found = {"rows of the index": int(index.ntotal), "ids": len(ids)}
    for what, n in found.items():
        if n != info["count"]:
            raise RetrievalIndexError(
                f"{directory}: expected {info['count']} {what} (index_info.json count), found"
                f" {n}; {_REBUILD}"
            )
    if index.d != info["dim"]:
        raise RetrievalIndexError(
            f"{index_path}: expected dimension {info['dim']} (index_info.json), found {index.d};"
            f" {_REBUILD}"
        )
    return index, ids
