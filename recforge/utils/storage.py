"""Paths and fsspec URLs (``s3://``, ``gs://``, ``hdfs://``, ``file://``, ``memory://``) alike.

A path without a scheme (or ``file://``) is local and handled with ``os`` as before; a URL
goes through the fsspec filesystem of its scheme. :func:`check_url` refuses an unknown scheme,
or one whose package is not installed, with one line naming the extra to install
(``pip install recforge[s3]``), before any work starts.

Inputs are read straight from the store (:func:`arrow_source`, :func:`glob`,
:func:`files_in`). Everything written under a remote ``model_dir`` or export directory is
written to a local working copy first and then uploaded:

* ``model_dir`` (:func:`stage_model_dir`): the run works in a local folder (under
  ``$RECFORGE_STAGING_DIR``, else the system temp dir; deleted at exit once uploaded) holding
  the remote directory's top-level files and its newest complete checkpoint (older ones are
  fetched when one is read, :func:`ensure_local`); each checkpoint is uploaded
  as soon as it is saved (its ``train_state.json``, the mark of a complete checkpoint, last),
  and everything else new or changed (``pipeline.config``, ``eval_result.json``, TensorBoard
  event files, ...) after each checkpoint and when the process exits. Checkpoints stay in
  ``torch.distributed.checkpoint``'s file format and are verified against their checksums by
  :mod:`recforge.utils.checkpoint_format` on the local copy, before anything is unpickled.
  A run killed without a chance to upload (SIGKILL) loses only what came after its last
  checkpoint, as on a local disk. (Not DCP's own fsspec writer: recforge's checkpoint
  checksums are computed over, and verified on, local files before anything is unpickled.)
* an export or predict output (:func:`publish_dir`, :func:`publish_file`): written locally,
  uploaded under ``<dest>.tmp-<pid>`` and then moved to ``<dest>``. Object stores have no
  atomic rename of a directory: the move copies object by object, so a reader that looks
  during the move may see part of it; it never sees a half-uploaded file.

* any other command's output (:func:`written_locally`, used by the CLI's path flags,
  ``recforge.cli.PathFlag``): written to a local directory and, when the command succeeds,
  published file by file (:func:`publish_into`).

Limitations: the run lock of a remote ``model_dir`` is a best-effort lock object (see
:mod:`recforge.utils.run_lock`); ``train --overwrite`` cannot move a remote run aside; under
torchrun every rank must run on one host (they share one working copy, which local rank 0
fills and rank 0 uploads: on a second host nobody would upload that host's shards), which
:func:`stage_model_dir` checks.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import posixpath
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any, Optional

logger = logging.getLogger(__name__)

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
#: the recforge extra that installs a scheme's fsspec implementation
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
#: the schemes recforge is tested with or documents (any other fsspec scheme works too)
DOCUMENTED = ("s3://", "gs://", "hdfs://", "file://", "memory://")
STAGE_ROOT_ENV = "RECFORGE_STAGING_DIR"
# the file whose presence marks a complete checkpoint (layout.TRAIN_STATE_FILE): uploaded last
_LAST_FILES = ("train_state.json",)
# written into a working copy once it is ready (the other local ranks wait for it)
_READY_FILE = ".recforge-working-copy"


def scheme(path: str) -> Optional[str]:
    """The URL scheme of ``path`` (lower case), or None for a plain local path."""
    match = _SCHEME_RE.match(path or "")
    return match.group(1).lower() if match else None


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL of a store other than the local disk (``file://``)."""
    return scheme(path) not in (None, "file", "local")


def local_path(path: str) -> str:
    """``path`` without a ``file://`` prefix (a local path as ``os`` takes it)."""
    return path[len("file://") :] if scheme(path) == "file" else path


def check_url(path: str, where: str = "") -> None:
    """Refuses a URL whose scheme fsspec does not know or whose package is missing.

    Args:
        path: a local path or URL.
        where: what names the path in the message (a flag or field), e.g. ``--model_dir``.

    Raises:
        ConfigError: one line naming the scheme and, where one exists, the extra to install.

    """
    name = scheme(path)
    if name is None or not is_remote(path) or name == "odps":  # odps: readers explain it
        return
    import fsspec
    from fsspec.registry import known_implementations, registry

    from recforge.config.errors import ConfigError  # lazily: recforge.config imports readers

    prefix = f"{where}: " if where else ""
    if name not in known_implementations and name not in registry:
        raise ConfigError(
            f"{prefix}expected a local path or a URL of {', '.join(DOCUMENTED)} (any fsspec"
            f" scheme), found the unknown scheme '{name}://' in '{path}'"
        )
    try:
        fsspec.get_filesystem_class(name)
    except ImportError as e:
        extra = EXTRAS.get(name)
        install = (
            f"pip install recforge[{extra}]"
            if extra
            else f"install the package fsspec names: {str(e).strip().splitlines()[0]}"
        )
        raise ConfigError(
            f"{prefix}'{path}' needs support for {name}:// that is not installed: {install}"
        ) from None


def filesystem(path: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` of a URL (checked with :func:`check_url`)."""
    check_url(path)
    from fsspec.core import url_to_fs

    return url_to_fs(path)


def _url(fs: Any, inner: str) -> str:
    """The URL of ``inner`` on ``fs`` (the inverse of :func:`filesystem`)."""
    return fs.unstrip_protocol(inner)


def join(base: str, *parts: str) -> str:
    """``os.path.join`` for local paths, ``/``-joined for URLs."""
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def exists(path: str) -> bool:
    """Whether a file or directory exists at ``path``."""
    if not is_remote(path):
        return os.path.exists(local_path(path))
    fs, inner = filesystem(path)
    return bool(fs.exists(inner))


def isfile(path: str) -> bool:
    """Whether ``path`` is a file."""
    if not is_remote(path):
        return os.path.isfile(local_path(path))
    fs, inner = filesystem(path)
    return bool(fs.isfile(inner))


def isdir(path: str) -> bool:
    """Whether ``path`` is a directory (on an object store: a prefix holding objects)."""
    if not is_remote(path):
        return os.path.isdir(local_path(path))
    fs, inner = filesystem(path)
    return bool(fs.isdir(inner))


def listdir(path: str) -> list[str]:
    """The names directly inside directory ``path`` (empty when it does not exist)."""
    if not is_remote(path):
        path = local_path(path)
        return os.listdir(path) if os.path.isdir(path) else []
    fs, inner = filesystem(path)
    if not fs.isdir(inner):
        return []
    return [posixpath.basename(p.rstrip("/")) for p in fs.ls(inner, detail=False)]


def glob(pattern: str) -> list[str]:
    """The files matching ``pattern`` (URLs for a URL pattern), sorted."""
    if not is_remote(pattern):
        import glob as _glob

        return sorted(p for p in _glob.glob(local_path(pattern)) if os.path.isfile(p))
    fs, inner = filesystem(pattern)
    return sorted(_url(fs, p) for p in fs.glob(inner) if fs.isfile(p))


def files_in(directory: str) -> list[str]:
    """The files directly inside ``directory`` (not ``.``/``_``-prefixed), sorted."""
    if is_remote(directory):
        fs, inner = filesystem(directory)
        return sorted(
            _url(fs, entry["name"])
            for entry in fs.ls(inner, detail=True)
            if entry["type"] == "file"
            and not posixpath.basename(entry["name"]).startswith((".", "_"))
        )
    return sorted(
        join(directory, name)
        for name in listdir(directory)
        if not name.startswith((".", "_")) and isfile(join(directory, name))
    )


def open_file(path: str, mode: str = "rb", **kwargs: Any) -> Any:
    """Opens ``path`` (local or URL) like ``open`` (``kwargs``: ``encoding``, ``errors``)."""
    if not is_remote(path):
        return open(local_path(path), mode, **kwargs)
    fs, inner = filesystem(path)
    return fs.open(inner, mode, **kwargs)


def arrow_source(path: str) -> Any:
    """What pyarrow readers take for ``path``: the local path, or a random-access remote file."""
    if not is_remote(path):
        return local_path(path)
    import pyarrow.fs as pafs

    fs, inner = filesystem(path)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)).open_input_file(inner)


# ---- moving files between the local disk and a store ------------------------------------------
def _ordered(files: list[str]) -> list[str]:
    """``files`` with the completion marks (``train_state.json``) last."""
    return sorted(files, key=lambda f: os.path.basename(f) in _LAST_FILES)


def upload_dir(local_dir: str, url: str, only: Optional[set[str]] = None) -> None:
    """Uploads the files under ``local_dir`` to ``url`` (the completion marks last).

    Args:
        local_dir: the local directory.
        url: the remote directory.
        only: relative paths to upload (default: every file).

    """
    fs, inner = filesystem(url)
    relative = []
    for root, _, names in os.walk(local_dir):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), local_dir)
            if only is None or rel in only:
                relative.append(rel)
    for rel in _ordered(relative):
        fs.put_file(os.path.join(local_dir, rel), posixpath.join(inner, *rel.split(os.sep)))


def download_dir(url: str, local_dir: str) -> None:
    """Downloads every file under ``url`` into ``local_dir``."""
    fs, inner = filesystem(url)
    inner = inner.rstrip("/")
    for remote in fs.find(inner):
        rel = posixpath.relpath(remote, inner)
        target = os.path.join(local_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs.get_file(remote, target)


def remove(url: str) -> None:
    """Deletes a remote file or directory (nothing when absent)."""
    fs, inner = filesystem(url)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


def publish_dir(local_dir: str, url: str) -> None:
    """Uploads ``local_dir`` to ``<url>.tmp-<pid>``, then replaces ``url`` with it.

    An object store moves a directory object by object, so this is as atomic as the store
    allows: a half-uploaded upload never takes the place of ``url``.
    """
    fs, inner = filesystem(url)
    inner = inner.rstrip("/")
    tmp = f"{inner}.tmp-{os.getpid()}"
    if fs.exists(tmp):
        fs.rm(tmp, recursive=True)
    upload_dir(local_dir, _url(fs, tmp))
    if fs.exists(inner):
        fs.rm(inner, recursive=True)
    # object by object (a store's copy is server-side): fsspec's recursive mv of a prefix to
    # a new prefix is not reliable across stores
    for source in _ordered(fs.find(tmp)):
        fs.copy(source, inner + source[len(tmp) :])
    fs.rm(tmp, recursive=True)


def publish_file(local_file: str, url: str) -> None:
    """Uploads ``local_file`` to ``<url>.tmp-<pid>`` and moves it to ``url``."""
    fs, inner = filesystem(url)
    tmp = f"{inner}.tmp-{os.getpid()}"
    fs.put_file(local_file, tmp)
    fs.copy(tmp, inner)
    fs.rm(tmp)


def check_paths(paths: Mapping[str, Optional[str]]) -> None:
    """:func:`check_url` of each flag's value (comma-separated lists part by part).

    Args:
        paths: ``{flag: value}``, e.g. ``{"--output_dir": "s3://b/out"}``; None values skipped.

    Raises:
        ConfigError: one line naming the flag of the first bad URL.

    """
    for flag, value in paths.items():
        for part in (value or "").split(","):
            if part.strip():
                check_url(part.strip(), flag)


def publish_into(local_dir: str, url: str) -> list[str]:
    """Publishes each file under ``local_dir`` to the same relative path under ``url``.

    Each file goes through :func:`publish_file` (uploaded beside its place, then moved): the
    other files already under ``url`` are left as they are, as a local write into an
    existing directory leaves them.

    Returns:
        The URLs written.

    """
    written = []
    for root, _, names in os.walk(local_dir):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), local_dir)
            target = join(url, *rel.split(os.sep))
            publish_file(os.path.join(root, name), target)
            written.append(target)
    return written


@contextlib.contextmanager
def written_locally(path: str, purpose: str, directory: bool = False) -> Iterator[str]:
    """A local path to write ``path`` through; a URL's files are published when it succeeds.

    For a local path (or ``file://``) this yields the path itself. For a URL it yields a
    path in a new local directory (``directory``: a folder named like the URL's last part;
    else a file of that name, with room beside it for what a command writes next to its
    output, e.g. ``assets/``); when the block ends without an exception, every file written
    there is published to the URL's place (:func:`publish_into`, on rank 0 only), and the
    local directory is deleted in any case.

    Args:
        path: the output path or URL a command was given.
        purpose: names the local directory (``recforge-<purpose>-...``).
        directory: whether ``path`` is a directory.

    """
    if not is_remote(path):
        yield local_path(path)
        return
    url = path.rstrip("/")
    work = local_temp_dir(purpose)
    local = os.path.join(work, posixpath.basename(url) or purpose)
    # a message naming the local copy names the URL instead (urls_in); kept after the block,
    # since the error that ends it is shown after this exits
    _FETCHED[local] = url
    try:
        if directory:
            os.makedirs(local)
        yield local
        if os.environ.get("RANK", "0") == "0":
            if directory:
                publish_into(local, url)
            else:
                publish_into(work, posixpath.dirname(url))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def urls_of(value: Any) -> Any:
    """``value`` (a command's summary: dicts, lists, strings) with local copies' paths as URLs."""
    if isinstance(value, str):
        return urls_in(value)
    if isinstance(value, dict):
        return {k: urls_of(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [urls_of(v) for v in value]
    return value


def local_temp_dir(purpose: str) -> str:
    """A new local directory (under ``$RECFORGE_STAGING_DIR`` or the system temp dir)."""
    root = os.environ.get(STAGE_ROOT_ENV) or tempfile.gettempdir()
    os.makedirs(root, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"recforge-{purpose}-", dir=root)


def fetch(path: str, purpose: str = "download") -> str:
    """A local path holding ``path``'s content: ``path`` itself when local.

    A URL under a staged ``model_dir`` maps into its working copy (downloaded there when
    absent); any other URL is downloaded to a new temporary directory.
    """
    if not is_remote(path):
        return local_path(path)
    staged = _in_stage(path)
    if staged is None:
        directory = local_temp_dir(purpose)
        atexit.register(shutil.rmtree, directory, True)
    target = staged or os.path.join(directory, posixpath.basename(path.rstrip("/")))
    if staged is None:
        _FETCHED[target] = path.rstrip("/")
    if not os.path.exists(target):
        fs, inner = filesystem(path)
        if not fs.exists(inner):
            return path  # the caller reports it missing, naming the URL
        if fs.isdir(inner):
            download_dir(path, target)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fs.get_file(inner, target)
    return target


# ---- a remote model_dir's local working copy --------------------------------------------------
class _Stage:
    """A remote ``model_dir`` and its local working copy; remembers what is in sync."""

    def __init__(self, url: str, local: str):
        self.url = url.rstrip("/")
        self.local = local
        self.synced: dict[str, tuple[int, int]] = {}
        # checkpoints of which only the marker file is local (see ensure_local)
        self.partial: set[str] = set()

    def _state(self) -> dict[str, tuple[int, int]]:
        state = {}
        for root, _, names in os.walk(self.local):
            for name in names:
                full = os.path.join(root, name)
                stat = os.stat(full)
                state[os.path.relpath(full, self.local)] = (stat.st_size, stat.st_mtime_ns)
        return state

    def mark_synced(self) -> None:
        self.synced = self._state()

    def sync(self) -> None:
        """Uploads every file new or changed since the last sync."""
        if not os.path.isdir(self.local):
            return
        state = self._state()
        changed = {
            rel
            for rel, key in state.items()
            if self.synced.get(rel) != key
            and ".tmp" not in rel.split(os.sep)[0]
            and rel != _READY_FILE
        }
        if changed:
            upload_dir(self.local, self.url, changed)
        self.synced = {rel: key for rel, key in state.items() if rel not in changed} | {
            rel: state[rel] for rel in changed
        }


_STAGES: dict[str, _Stage] = {}
# local copies made by fetch() outside a working copy: {local path: URL}
_FETCHED: dict[str, str] = {}


def _in_stage(url: str) -> Optional[str]:
    """The working-copy path of ``url`` when it lies under a staged ``model_dir``."""
    for stage in _STAGES.values():
        if url.rstrip("/") == stage.url:
            return stage.local
        if url.startswith(stage.url + "/"):
            return os.path.join(stage.local, *url[len(stage.url) + 1 :].split("/"))
    return None


def remote_of(path: str) -> Optional[str]:
    """The URL a working-copy path stands for, or None when ``path`` is not staged."""
    if not path or not _STAGES:
        return None
    path = os.path.abspath(path)
    for stage in _STAGES.values():
        if path == stage.local:
            return stage.url
        if path.startswith(stage.local + os.sep):
            return posixpath.join(stage.url, *os.path.relpath(path, stage.local).split(os.sep))
    return None


def urls_in(text: str) -> str:
    """``text`` with each local copy's path (working copy or :func:`fetch`) replaced by its URL."""
    for stage in _STAGES.values():
        text = text.replace(stage.local, stage.url)
    for local, url in _FETCHED.items():
        text = text.replace(local, url)
    return text


def stage_model_dir(url: str, checkpoint_prefix: str, marker: str) -> str:
    """Makes a local working copy of the remote ``model_dir`` ``url``; returns its path.

    The copy holds the top-level files, the newest checkpoint and the ``marker`` file
    (``train_state.json``) of every other checkpoint, so that listing and choosing
    checkpoints works as on a local disk; :func:`ensure_local` completes a checkpoint before
    it is read. What the process writes there is uploaded by :func:`sync_model_dir` and at
    exit.

    Args:
        url: the remote ``model_dir``.
        checkpoint_prefix: the checkpoint directories' name prefix (``model.ckpt-``).
        marker: the file that marks a complete checkpoint.

    """
    check_url(url, "model_dir")
    _check_one_host(url)
    url = url.rstrip("/")
    for stage in _STAGES.values():
        if stage.url == url:
            return stage.local
    key = hashlib.sha1(url.encode()).hexdigest()[:12]
    # the ranks of one torchrun share one copy: they have the same parent (the agent)
    torchrun = "LOCAL_RANK" in os.environ
    run = f"{os.getppid()}-torchrun" if torchrun else str(os.getpid())
    root = os.environ.get(STAGE_ROOT_ENV) or tempfile.gettempdir()
    local = os.path.join(root, f"recforge-model_dir-{key}-{run}")
    ready = os.path.join(local, _READY_FILE)
    stage = _Stage(url, local)
    if os.environ.get("LOCAL_RANK", "0") != "0":  # local rank 0 downloads; wait for it
        deadline = time.monotonic() + 600
        while not os.path.exists(ready):
            if time.monotonic() > deadline:
                raise RuntimeError(f"local rank 0 did not prepare {local} in 10 minutes")
            time.sleep(0.2)
        stage.mark_synced()
        _STAGES[local] = stage
        return local
    os.makedirs(local, exist_ok=True)
    fs, inner = filesystem(url)
    checkpoints = []
    if fs.isdir(inner):
        for entry in fs.ls(inner, detail=True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if entry["type"] == "file":
                fs.get_file(entry["name"], os.path.join(local, name))
            elif name.startswith(checkpoint_prefix) and name[len(checkpoint_prefix) :].isdigit():
                if fs.isfile(posixpath.join(entry["name"], marker)):
                    checkpoints.append((int(name[len(checkpoint_prefix) :]), name))
    for i, (_, name) in enumerate(sorted(checkpoints, reverse=True)):
        target = os.path.join(local, name)
        if i == 0:
            download_dir(posixpath.join(url, name), target)
        else:
            os.makedirs(target, exist_ok=True)
            fs.get_file(posixpath.join(inner, name, marker), os.path.join(target, marker))
            stage.partial.add(target)
    stage.mark_synced()
    with open(ready, "w"):
        pass
    _STAGES[local] = stage
    atexit.register(_sync_at_exit, local)
    logger.info("model_dir %s: working copy in %s", url, local)
    return local


def _check_one_host(url: str) -> None:
    """Refuses torchrun ranks on several hosts: only rank 0's host would upload its shards."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if world > local:
        from recforge.config.errors import ConfigError

        raise ConfigError(
            f"model_dir: expected every torchrun rank on one host with the remote model_dir"
            f" '{url}' (they share its local working copy), found {world} ranks of which"
            f" {local} on this host; give a model_dir on a filesystem all hosts mount"
        )


def ensure_local(path: str) -> None:
    """Downloads the rest of a checkpoint of a working copy that holds only its marker."""
    path = os.path.abspath(path)
    for stage in _STAGES.values():
        if path in stage.partial:
            download_dir(remote_of(path) or "", path)
            stage.partial.discard(path)
            prefix = os.path.relpath(path, stage.local) + os.sep
            stage.synced.update(
                (rel, key) for rel, key in stage._state().items() if rel.startswith(prefix)
            )


def sync_model_dir(local: str, removed: tuple[str, ...] = ()) -> None:
    """Uploads what changed in a staged ``model_dir``; deletes ``removed`` (its paths) remotely.

    Nothing happens for a local ``model_dir`` that is not a working copy, nor on a rank
    other than 0 (rank 0 uploads what all ranks wrote).
    """
    stage = _STAGES.get(os.path.abspath(local))
    if stage is None or os.environ.get("RANK", "0") != "0":
        return
    stage.sync()
    for path in removed:
        url = remote_of(path)
        if url:
            remove(url)


def remove_remote_copy(path: str) -> None:
    """Deletes the remote counterpart of a working-copy path (nothing for other paths)."""
    url = remote_of(path)
    if url and os.environ.get("RANK", "0") == "0":
        remove(url)
        stage = _STAGES.get(os.path.dirname(os.path.abspath(path)))
        if stage is not None:
            stage.synced.pop(os.path.basename(path), None)


def _sync_at_exit(local: str) -> None:
    """Uploads what is left, then deletes the working copy (kept if the upload failed)."""
    stage = _STAGES.get(local)
    if stage is None or os.environ.get("RANK", "0") != "0":
        return
    try:
        sync_model_dir(local)
    except Exception as e:  # at exit nothing can be raised to; say what was not uploaded
        logger.error("could not upload %s to %s: %s (the files stay there)", local, stage.url, e)
        return
    shutil.rmtree(local, ignore_errors=True)
