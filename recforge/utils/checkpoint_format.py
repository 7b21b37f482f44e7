"""Reading a checkpoint directory as data only, with every file checked against its checksum.

torch.distributed.checkpoint (DCP) stores its index, ``.metadata``, as a pickle and reads it
with ``pickle.load``, and it reads non-tensor items with ``torch.load(weights_only=False)``:
either runs whatever code a crafted file asks for. recforge reads checkpoints only through
:class:`CheckpointFiles`, which

- unpickles ``.metadata`` allowing only the classes DCP itself writes there (its metadata
  dataclasses, ``torch.Size``, dtypes, layouts, paths) and checks that every storage entry
  names a plain file inside the checkpoint directory;
- reads non-tensor items and the RNG files with ``torch.load(weights_only=True)`` and refuses
  a non-tensor item where the model holds a tensor;
- checks each file against ``checksums.json`` (SHA-256 per file, written with the checkpoint)
  before reading it, so a corrupt file is an error naming it, never a silently broken model.

The checksums are an integrity check, not a signature: whoever can write the checkpoint can
rewrite them. Safety against crafted files comes from the data-only reading above.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
from typing import Any, Optional, TypeGuard

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint._traverse import set_element  # DCP's nested-dict setter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, ReadItem

from recforge.errors import CheckpointError
from recforge.utils import storage
from recforge.utils.layout import MANIFEST_FILE

logger = logging.getLogger(__name__)

METADATA_FILE = ".metadata"
# SHA-256 rather than BLAKE2b: OpenSSL's SHA-256 uses the SHA instructions of current x86 and
# ARM CPUs and beats hashlib's BLAKE2b there, and `sha256sum` can check a file by hand
HASH_ALGORITHM = "sha256"
_CHUNK_BYTES = 1 << 20

# what DCP's FileSystemWriter pickles into .metadata (pathlib's classes moved in Python 3.13)
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "MetadataIndex",
        "ChunkStorageMetadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "TensorProperties",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"),
    *(
        (module, name)
        for module in ("pathlib", "pathlib._local")
        for name in ("Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")
    ),
}


def file_digest(path: str) -> str:
    """Hex digest (:data:`HASH_ALGORITHM`) of a file's bytes, read in chunks."""
    digest = hashlib.new(HASH_ALGORITHM)
    buffer = bytearray(_CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def write_manifest(directory: str, digests: dict[str, str]) -> None:
    """Writes ``directory/checksums.json`` for ``{file name: hex digest}``.

    The checkpoint directory is still under its temporary name when this runs, so the
    manifest appears together with the files it describes.
    """
    manifest = {"algorithm": HASH_ALGORITHM, "files": dict(sorted(digests.items()))}
    with open(os.path.join(directory, MANIFEST_FILE), "w") as f:
        json.dump(manifest, f, indent=1)


def _is_plain_name(name: Any) -> TypeGuard[str]:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and os.path.basename(name) == name
        and "\\" not in name
    )


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata``; any other class or function is refused, not called."""

    def __init__(self, file: io.BufferedIOBase, where: str):
        super().__init__(file)
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_CLASSES or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise CheckpointError(
            f"{self._where}: refused to load: it references '{module}.{name}', which is not"
            " part of a checkpoint's metadata (checkpoints are read as data, never code)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self._where}: refused to load: unexpected persistent id")


def _reason(error: Exception) -> str:
    """``Type: first line of the message``: one line for the CLI's error message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _refused_object(error: Exception) -> str:
    """What torch's weights-only unpickler refused (its own message advises unsafe loading)."""
    found = re.search(r"GLOBAL (\S+)", str(error), flags=re.IGNORECASE)
    if found:
        return f"it references '{found.group(1)}'"
    return "it holds a Python object that is not plain data"


def _load_data(source: Any, where: str) -> Any:
    """``torch.load(weights_only=True)``: tensors, numbers, strings and containers only."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{where}: refused to load: {_refused_object(e)} (checkpoints hold tensors and"
            " plain data only)"
        ) from None
    except Exception as e:
        raise CheckpointError(f"{where}: unreadable ({_reason(e)})") from None


class _VerifiedReader(dcp.FileSystemReader):
    """DCP's file reader with the metadata read safely up front and each file verified."""

    def __init__(self, files: CheckpointFiles, metadata: dcp_metadata.Metadata):
        super().__init__(files.directory)
        self._files = files
        self._metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        if self._metadata.storage_meta is None:
            self._metadata.storage_meta = dcp_metadata.StorageMeta()
        self._metadata.storage_meta.load_id = self.load_id
        return self._metadata

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Any:
        names = {self.storage_data[item.storage_index].relative_path for item in plan.items}
        for name in sorted(names):
            self._files.verify(name)
        return super().read_data(plan, planner)


class _DataOnlyPlanner(DefaultLoadPlanner):
    """DCP's default load planner, reading non-tensor items with ``weights_only=True``."""

    def __init__(self, directory: str):
        super().__init__()
        self._directory = directory

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        assert self.metadata is not None  # read before any data
        relative = self.metadata.storage_data[read_item.storage_index].relative_path
        where = os.path.join(self._directory, relative)
        if isinstance(self.state_dict.get(fqn), torch.Tensor):
            raise CheckpointError(
                f"{where}: '{fqn}' is stored as a Python object, the model expects a tensor"
            )
        loaded = _load_data(value, where)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], loaded)
        else:
            self.state_dict[fqn] = loaded


class CheckpointFiles:
    """One checkpoint directory, read as data and checked against its checksums.

    Args:
        directory: the checkpoint directory (``model_dir/model.ckpt-<step>``).

    A directory without ``checksums.json`` (written before recforge recorded checksums) is
    read with a warning and without integrity checks; it is still read as data only.

    Raises:
        CheckpointError: the manifest is unreadable.

    """

    def __init__(self, directory: str):
        storage.ensure_local(directory)  # a checkpoint of a remote model_dir's working copy
        self.directory = directory
        self._verified: set[str] = set()
        self._metadata: Optional[dcp_metadata.Metadata] = None
        self.digests = self._read_manifest()
        if self.digests is None:
            logger.warning(
                "%s has no %s (written by an older recforge): loading it without checksums",
                directory,
                MANIFEST_FILE,
            )

    def path(self, name: str) -> str:
        """The path of a file of this checkpoint."""
        return os.path.join(self.directory, name)

    def _read_manifest(self) -> Optional[dict[str, str]]:
        path = self.path(MANIFEST_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                manifest = json.load(f)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable checksum manifest ({_reason(e)})") from None
        algorithm = manifest.get("algorithm") if isinstance(manifest, dict) else None
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if algorithm != HASH_ALGORITHM or not isinstance(files, dict):
            raise CheckpointError(
                f"{path}: expected {{'algorithm': '{HASH_ALGORITHM}', 'files': {{name: digest}}}},"
                f" found {str(manifest)[:200]}"
            )
        return {str(name): str(digest) for name, digest in files.items()}

    def verify(self, name: str) -> None:
        """Checks one file against the manifest (once); a no-op without a manifest.

        Raises:
            CheckpointError: the file is missing, not listed, or its checksum differs.

        """
        if self.digests is None or name in self._verified:
            return
        path = self.path(name)
        if name not in self.digests:
            raise CheckpointError(
                f"{path}: not listed in {MANIFEST_FILE}: the checkpoint was changed after it was"
                " written"
            )
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: missing (listed in {MANIFEST_FILE})")
        found = file_digest(path)
        if found != self.digests[name]:
            raise CheckpointError(
                f"{path}: checksum mismatch ({HASH_ALGORITHM} {found[:16]}..., {MANIFEST_FILE}"
                f" records {self.digests[name][:16]}...): the file is corrupt or was changed"
                " after it was written"
            )
        self._verified.add(name)

    def read_json(self, name: str) -> Any:
        """A verified JSON file of the checkpoint."""
        self.verify(name)
        path = self.path(name)
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable ({_reason(e)})") from None

    def read_tensor(self, name: str) -> torch.Tensor:
        """A verified file written by ``torch.save(tensor)``, read with ``weights_only=True``."""
        self.verify(name)
        path = self.path(name)
        value = _load_data(path, path)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: expected a tensor, found {type(value).__name__}")
        return value

    def metadata(self) -> dcp_metadata.Metadata:
        """DCP's ``.metadata``, verified, unpickled as data and checked for shape."""
        if self._metadata is not None:
            return self._metadata
        self.verify(METADATA_FILE)
        path = self.path(METADATA_FILE)
        try:
            with open(path, "rb") as f:
                metadata = _MetadataUnpickler(f, path).load()
        except CheckpointError:
            raise
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing (DCP's index of the checkpoint)") from None
        except Exception as e:
            raise CheckpointError(f"{path}: unreadable ({_reason(e)})") from None
        self._check_metadata(metadata, path)
        self._metadata = metadata
        return metadata

    def _check_metadata(self, metadata: Any, path: str) -> None:
        if not isinstance(metadata, dcp_metadata.Metadata):
            raise CheckpointError(f"{path}: expected DCP metadata, found {type(metadata).__name__}")
        storage = metadata.storage_data
        entries = metadata.state_dict_metadata
        if not isinstance(storage, dict) or not isinstance(entries, dict):
            raise CheckpointError(f"{path}: malformed DCP metadata (no storage or item table)")
        for entry in entries.values():
            if not isinstance(
                entry, (dcp_metadata.TensorStorageMetadata, dcp_metadata.BytesStorageMetadata)
            ):
                raise CheckpointError(
                    f"{path}: malformed DCP metadata (an item of type {type(entry).__name__})"
                )
        for info in storage.values():
            name = getattr(info, "relative_path", None)
            if not isinstance(info, _StorageInfo) or not _is_plain_name(name):
                raise CheckpointError(
                    f"{path}: malformed DCP metadata (storage entry {str(info)[:200]}: expected a"
                    " file inside the checkpoint directory)"
                )
            if self.digests is not None and name not in self.digests:
                raise CheckpointError(
                    f"{self.path(name)}: not listed in {MANIFEST_FILE}: the checkpoint was"
                    " changed after it was written"
                )

    def load(self, state_dict: dict[str, Any]) -> None:
        """Fills ``state_dict`` in place from the checkpoint (DCP reshards as needed).

        Raises:
            CheckpointError: a file is corrupt or unsafe (naming it), or the checkpoint does
                not fit ``state_dict``.

        """
        reader = _VerifiedReader(self, self.metadata())
        try:
            dcp.load(state_dict, storage_reader=reader, planner=_DataOnlyPlanner(self.directory))
        except CheckpointException as e:  # a BaseException: every rank's failure, wrapped
            for error, _ in e.failures.values():
                if isinstance(error, CheckpointError):
                    raise error from None
            raise
