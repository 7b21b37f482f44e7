"""The files features read (vocabularies, tokenizers): copied into an export, found again there.

A feature kind names the config fields that hold file paths with
:meth:`~recforge.features.BaseFeature.asset_fields`. At export, :func:`copy_assets` copies
every such file into ``<export_dir>/assets/`` and rewrites the exported config to point at
the copy by a path relative to the export directory; :func:`resolve_assets` turns those
paths back into real ones when the export is loaded, wherever the directory was moved.

Copies are named ``<stem>_<md5 of the content><ext>``, as TorchEasyRec names the assets of
its exports, so two files of the same name never collide and one file used by several
features is copied once. Where we differ: TorchEasyRec copies them beside ``scripted_model.pt``
and writes the export directory's absolute path into the exported config's ``asset_dir``,
which breaks when the directory is moved; recforge keeps them in ``assets/`` and writes
relative paths (and clears ``asset_dir``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

from recforge.config import ConfigError
from recforge.errors import ExportError
from recforge.features import FEATURE_CLASSES, BaseFeature
from recforge.utils.layout import ASSETS_DIR

if TYPE_CHECKING:
    from recforge.protos import pipeline_pb2


def feature_messages(
    config: pipeline_pb2.EasyRecConfig,
) -> Iterator[tuple[str, type[BaseFeature], Any]]:
    """Every feature message of a pipeline config with its field path and feature class.

    A ``sequence_feature`` yields each element (class of its ``sequence_<kind>``); kinds
    recforge does not build are skipped (building the features reports them).

    Yields:
        ``(field path, feature class, the kind's message)``; the message is the config's own
        (editing it edits the config).

    """
    for i, feature_config in enumerate(config.feature_configs):
        kind = feature_config.WhichOneof("feature")
        if kind == "sequence_feature":
            for j, element in enumerate(feature_config.sequence_feature.features):
                element_kind = element.WhichOneof("feature")
                cls = FEATURE_CLASSES.get(f"sequence_{element_kind}")
                if cls is not None:
                    where = f"feature_configs[{i}].sequence_feature.features[{j}].{element_kind}"
                    yield where, cls, getattr(element, element_kind)
        elif kind in FEATURE_CLASSES:
            yield (
                f"feature_configs[{i}].{kind}",
                FEATURE_CLASSES[kind],
                getattr(feature_config, kind),
            )


def _field(message: Any, path: str) -> Optional[tuple[Any, str]]:
    """``(message holding the field, field name)`` of a dotted path when the field is set."""
    *parents, name = path.split(".")
    for parent in parents:
        if not message.HasField(parent):
            return None
        message = getattr(message, parent)
    if not message.HasField(name) or not getattr(message, name):
        return None
    return message, name


def _asset_dir(message: Any) -> str:
    if "asset_dir" in message.DESCRIPTOR.fields_by_name and message.HasField("asset_dir"):
        return message.asset_dir
    return ""


def asset_path(message: Any, path: str) -> Optional[str]:
    """The file a feature message's asset field names (``asset_dir`` joined), or None if unset."""
    found = _field(message, path)
    if found is None:
        return None
    value = getattr(*found)
    return os.path.join(_asset_dir(message), value) if _asset_dir(message) else value


def _copy_name(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    stem, ext = os.path.splitext(os.path.basename(path))
    return f"{stem}_{digest.hexdigest()}{ext}"


def copy_assets(config: pipeline_pb2.EasyRecConfig, directory: str) -> tuple[Any, list[str]]:
    """Copies the files the config's features read into ``directory/assets``.

    Args:
        config: the pipeline config (unchanged).
        directory: the export directory (or the directory of an ``fg.json``).

    Returns:
        ``(a copy of config whose asset fields name the copies relative to directory, the
        copies' paths relative to directory)``.

    Raises:
        ConfigError: an asset field names a file that does not exist (at the field's path).

    """
    exported = type(config)()
    exported.CopyFrom(config)
    copied: list[str] = []
    for where, cls, message in feature_messages(exported):
        rewritten = False
        for path in cls.asset_fields():
            source = asset_path(message, path)
            if source is None:
                continue
            if not os.path.isfile(source):
                raise ConfigError(
                    f"expected a file, found no file at '{source}' (relative paths are read from"
                    f" the current directory '{os.getcwd()}', or from asset_dir when set)",
                    field=f"{where}.{path}",
                )
            relative = f"{ASSETS_DIR}/{_copy_name(source)}"
            target = os.path.join(directory, relative)
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(source, target)
                copied.append(relative)
            holder, name = _field(message, path)  # type: ignore[misc]
            setattr(holder, name, relative)
            rewritten = True
        if rewritten and _asset_dir(message):
            message.ClearField("asset_dir")
    return exported, copied


def resolve_assets(config: pipeline_pb2.EasyRecConfig, export_dir: str) -> None:
    """Points the asset fields of an exported config at the files in ``export_dir``, in place.

    Raises:
        ExportError: a file the config names is not in the export directory.

    """
    for where, cls, message in feature_messages(config):
        for path in cls.asset_fields():
            value = asset_path(message, path)
            if value is None:
                continue
            full = value if os.path.isabs(value) else os.path.join(export_dir, value)
            if not os.path.isfile(full):
                raise ExportError(
                    f"{export_dir}: {where}.{path} names '{value}', which is not in the export"
                    " directory: it is incomplete or was written by an older recforge (re-run"
                    " recforge export)"
                )
            holder, name = _field(message, path)  # type: ignore[misc]
            setattr(holder, name, full)
        if _asset_dir(message):
            message.ClearField("asset_dir")
