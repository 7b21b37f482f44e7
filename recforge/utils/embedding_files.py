"""Embedding tables in memory-mapped files instead of RAM (``train_config.embedding_file_dir``).

fbgemm's CPU table-batched embedding module (the fused kernel) keeps all tables of a group in
one flat weights buffer and one flat buffer per optimizer state, and takes those buffers
preallocated. While :func:`file_backed_tables` is active, every such module torchrec builds
gets buffers mapped from files (``MAP_SHARED``) instead of anonymous memory: the kernel's
page cache holds the rows in use and writes the rest back to disk, so tables with their
optimizer state may exceed RAM. The files are unlinked as soon as they are mapped; they live
as long as the mapping, take no name in the directory, and vanish when the process ends
(checkpoints hold the tables, as for tables in RAM). Tables off the fused kernel (the
data-parallel dense kernel) stay in RAM.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
import tempfile
import weakref
from collections.abc import Iterator
from typing import Any, Optional

import torch

from recforge.config.errors import ConfigError
from recforge.utils import dist as dist_util

logger = logging.getLogger(__name__)


# every buffer mapped from a file by this process (to switch their access advice)
_MAPPED: weakref.WeakSet[torch.Tensor] = weakref.WeakSet()


def _advise(tensor: torch.Tensor, name: str) -> bool:
    """``madvise(name)`` over ``tensor``'s storage; whether it was taken."""
    advice = getattr(mmap, name, None)
    nbytes = tensor.untyped_storage().nbytes()
    if advice is None or nbytes == 0:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    start = tensor.untyped_storage().data_ptr()
    aligned = start - start % mmap.PAGESIZE  # mappings start on a page boundary; be safe anyway
    result = libc.madvise(
        ctypes.c_void_p(aligned), ctypes.c_size_t(nbytes + start - aligned), ctypes.c_int(advice)
    )
    return bool(result == 0)


def advise_random(tensor: torch.Tensor) -> bool:
    """Tells the kernel that ``tensor``'s mapped pages are read in random order.

    A page fault on a file mapping otherwise reads the pages around it too (the device's
    read-ahead window, often 128 KiB to 8 MiB): a table lookup needs one row, so each cold
    row would cost that much disk read and evict as much of the page cache.

    Returns:
        Whether the advice was taken (False where ``madvise`` is unavailable).

    """
    return _advise(tensor, "MADV_RANDOM")


@contextlib.contextmanager
def sequential_access() -> Iterator[int]:
    """While active, this process's file-backed tables are read ahead as sequential scans.

    For whole-table passes (writing or restoring a checkpoint): under the random-access
    advice training needs, each cold page would be a separate synchronous disk read.

    Yields:
        How many mapped buffers were switched (0 without file-backed tables).

    """
    buffers = [t for t in list(_MAPPED) if _advise(t, "MADV_SEQUENTIAL")]
    try:
        yield len(buffers)
    finally:
        for tensor in buffers:
            advise_random(tensor)


def _mapped(directory: str, numel: int, dtype: torch.dtype, label: str) -> torch.Tensor:
    """A zero-filled 1-D tensor of ``numel`` elements mapped from a new unlinked file."""
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    fd, path = tempfile.mkstemp(prefix=f"{label}-", suffix=".bin", dir=directory)
    try:
        os.ftruncate(fd, nbytes)  # a sparse file: zeros, no disk blocks until written
        os.close(fd)
        tensor = torch.from_file(path, shared=True, size=numel, dtype=dtype)
    finally:
        os.unlink(path)
    # read ahead while the tables are filled; random access once built (file_backed_tables)
    _advise(tensor, "MADV_SEQUENTIAL")
    _MAPPED.add(tensor)
    return tensor


def _host_buffers(
    directory: str, embedding_specs: list[tuple], kwargs: dict[str, Any]
) -> Optional[dict[str, torch.Tensor]]:
    """Mapped buffers for one fbgemm module's host-placed weights and optimizer states.

    The sizes are fbgemm's own (``construct_split_state``, as its constructor calls it);
    ``None`` for settings whose buffers fbgemm lays out otherwise (custom state dtypes).
    """
    from fbgemm_gpu.split_embedding_configs import EmbOptimType as OptimType
    from fbgemm_gpu.split_embedding_configs import SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import construct_split_state

    if kwargs.get("optimizer_state_dtypes"):
        return None
    precision = kwargs.get("weights_precision", SparseType.FP32)
    optimizer = kwargs.get("optimizer", OptimType.EXACT_SGD)
    sizes = {
        "weights": (
            construct_split_state(
                embedding_specs, rowwise=False, cacheable=True, precision=precision
            ).host_size,
            precision.as_dtype(),
        )
    }
    rowwise_m1 = (
        OptimType.EXACT_ROWWISE_ADAGRAD,
        OptimType.ENSEMBLE_ROWWISE_ADAGRAD,
        OptimType.EMAINPLACE_ROWWISE_ADAGRAD,
    )
    if optimizer not in (OptimType.NONE, OptimType.EXACT_SGD):
        split = construct_split_state(
            embedding_specs, rowwise=optimizer in rowwise_m1, cacheable=False
        )
        sizes["momentum1"] = (split.host_size, torch.float32)
    adam_like = (
        OptimType.ADAM,
        OptimType.PARTIAL_ROWWISE_ADAM,
        OptimType.LAMB,
        OptimType.PARTIAL_ROWWISE_LAMB,
        OptimType.ENSEMBLE_ROWWISE_ADAGRAD,
    )
    if optimizer in adam_like:
        rowwise_m2 = optimizer in (OptimType.PARTIAL_ROWWISE_ADAM, OptimType.PARTIAL_ROWWISE_LAMB)
        split = construct_split_state(embedding_specs, rowwise=rowwise_m2, cacheable=False)
        sizes["momentum2"] = (split.host_size, torch.float32)
    return {
        name: _mapped(directory, numel, dtype, name)
        for name, (numel, dtype) in sizes.items()
        if numel > 0
    }


def resolve_dir(directory: str, model_dir: str) -> str:
    """``embedding_file_dir`` made absolute (relative paths are under ``model_dir``), per rank.

    Raises:
        ConfigError: the directory cannot be created or written.

    """
    path = directory if os.path.isabs(directory) else os.path.join(model_dir, directory)
    path = os.path.join(path, f"rank_{dist_util.rank()}")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ConfigError(
            f"expected a directory this process can write embedding files to, found {path}"
            f" ({e.strerror or e})",
            field="train_config.embedding_file_dir",
        ) from None
    return path


@contextlib.contextmanager
def file_backed_tables(directory: Optional[str]) -> Iterator[list[str]]:
    """Maps the fused CPU embedding modules torchrec builds meanwhile from files in ``directory``.

    The mappings are read ahead while the context lasts (the tables are filled and
    initialised in whole-table passes) and advised for random access once it ends (training
    reads scattered rows).

    Args:
        directory: where the (unlinked) files go; ``None`` or "" changes nothing.

    Yields:
        The names of the tables placed in files (filled as modules are built).

    """
    tables: list[str] = []
    if not directory:
        yield tables
        return
    from torchrec.distributed import batched_embedding_kernel as kernels

    root: str = directory
    original = kernels.SplitTableBatchedEmbeddingBagsCodegen

    class _FileBacked(original):  # type: ignore[misc, valid-type]
        def __init__(self, embedding_specs: list[tuple], *args: Any, **kwargs: Any) -> None:
            device = kwargs.get("device")
            on_cpu = device is None or torch.device(device).type == "cpu"
            if on_cpu and not args and kwargs.get("preallocated_host_buffers") is None:
                buffers = _host_buffers(root, embedding_specs, kwargs)
                if buffers is not None:
                    kwargs["preallocated_host_buffers"] = buffers
                    tables.extend(kwargs.get("table_names") or [])
            super().__init__(embedding_specs, *args, **kwargs)

    _FileBacked.__name__ = original.__name__
    _FileBacked.__qualname__ = original.__qualname__
    kernels.SplitTableBatchedEmbeddingBagsCodegen = _FileBacked
    before = set(map(id, _MAPPED))
    try:
        yield tables
    finally:
        kernels.SplitTableBatchedEmbeddingBagsCodegen = original
        for tensor in [t for t in list(_MAPPED) if id(t) not in before]:
            if not advise_random(tensor):
                logger.warning("madvise(MADV_RANDOM) failed: cold rows are read ahead")
