"""Writing an export directory: its files, and the atomic swap into place.

The directory is written under a hidden, uniquely named temporary directory beside
``export_dir`` and renamed when complete; an earlier export is moved aside (also under a
unique name) and deleted only once the new one is in place, so paths a user owns, such as
``<export_dir>.old`` or ``<export_dir>.tmp``, are never touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

import torch

from recforge.errors import ExportError
from recforge.export.assets import copy_assets
from recforge.features import FeatureError
from recforge.features.fg_json import create_fg_json
from recforge.utils.disk import save_scripted
from recforge.utils.layout import EXPORT_CONFIG_FILE, FG_JSON_FILE, MODEL_FILE, MODEL_INFO_FILE

if TYPE_CHECKING:
    from recforge.protos import pipeline_pb2

logger = logging.getLogger(__name__)


def write_feature_files(directory: str, config: pipeline_pb2.EasyRecConfig) -> Any:
    """Copies the features' files into ``directory/assets`` and writes ``fg.json`` there.

    A feature kind without an fg.json writer leaves the export without ``fg.json`` (a
    warning names it): recforge's own predict does not need the file.

    Returns:
        The config to save in the directory: its asset fields name the copies relative to
        ``directory`` (see :func:`recforge.export.assets.copy_assets`).

    """
    exported, _ = copy_assets(config, directory)
    try:
        fg_json = create_fg_json(exported)
    except FeatureError as e:
        logger.warning("the export gets no %s: %s", FG_JSON_FILE, e)
        return exported
    with open(os.path.join(directory, FG_JSON_FILE), "w") as f:
        json.dump(fg_json, f, indent=4)
    return exported


def write_export_files(
    directory: str, scripted: torch.jit.ScriptModule, config_text: str, info: dict[str, Any]
) -> None:
    """Writes ``scripted_model.pt``, ``pipeline.config`` and ``model_info.json``."""
    save_scripted(scripted, os.path.join(directory, MODEL_FILE))
    with open(os.path.join(directory, EXPORT_CONFIG_FILE), "w") as f:
        f.write(config_text)
    with open(os.path.join(directory, MODEL_INFO_FILE), "w") as f:
        json.dump(info, f, indent=1)


def temp_dir_beside(path: str, purpose: str) -> str:
    """A new, uniquely named hidden directory next to ``path`` (same file system)."""
    parent, name = os.path.split(os.path.abspath(path))
    return tempfile.mkdtemp(prefix=f".{name}.{purpose}-", dir=parent)


def replace_dir(tmp: str, final: str) -> None:
    """Moves ``tmp`` to ``final``, replacing an earlier export there.

    The earlier export is first moved into a fresh directory beside ``final`` and removed
    only after ``tmp`` took its place (moved back if that rename fails).

    Raises:
        ExportError: ``final`` exists and is not an export directory.

    """
    if not os.path.exists(final):
        os.replace(tmp, final)
        return
    if not (
        os.path.isdir(final)
        and (not os.listdir(final) or os.path.isfile(os.path.join(final, MODEL_INFO_FILE)))
    ):
        raise ExportError(
            f"export_dir '{final}' exists and is not a recforge export directory (no"
            f" {MODEL_INFO_FILE}); choose another export_dir"
        )
    holder = temp_dir_beside(final, "old")
    previous = os.path.join(holder, "previous")
    os.replace(final, previous)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(previous, final)
        shutil.rmtree(holder, ignore_errors=True)
        raise
    shutil.rmtree(holder, ignore_errors=True)
