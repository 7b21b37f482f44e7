"""Saving views of large buffers without copying them first.

fbgemm keeps all tables of a group (and their optimizer state) in one flat buffer, so each
table in a state dict is a view of a larger storage. ``torch.save`` writes a tensor's whole
storage, and DCP's file writer therefore clones every such view into a storage of its own
before writing it: one table's size of fresh anonymous memory, read from the page cache and
written out again. For tables in memory-mapped files (``train_config.embedding_file_dir``)
that defeats the point; for tables in RAM it is an avoidable peak. :class:`ViewSavePlanner`
hands the writer a tensor whose storage is exactly the view's bytes (an alias, no copy).
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from torch.distributed.checkpoint import DefaultSavePlanner
from torch.distributed.checkpoint.planner import WriteItem


def exact_view(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself, or an alias of its bytes with a storage of exactly that size.

    Only contiguous, non-empty CPU tensors that are views of a larger storage are aliased; the
    alias borrows the memory (valid while ``tensor``'s storage lives, as during a save).

    Args:
        tensor: any tensor.

    Returns:
        A tensor equal to ``tensor``, sharing its memory, whose storage holds only its bytes.

    """
    nbytes = tensor.numel() * tensor.element_size()
    if (
        tensor.device.type != "cpu"
        or nbytes == 0
        or not tensor.is_contiguous()
        or tensor.untyped_storage().nbytes() == nbytes
        or tensor.is_quantized
        or tensor.is_sparse
    ):
        return tensor
    buffer = (ctypes.c_char * nbytes).from_address(tensor.data_ptr())
    return torch.frombuffer(buffer, dtype=tensor.dtype).view(tensor.shape)


class ViewSavePlanner(DefaultSavePlanner):
    """DCP's default save planner, resolving tensors to :func:`exact_view` aliases."""

    def resolve_data(self, write_item: WriteItem) -> Any:
        """The data of ``write_item``: tensors aliased to storages of their own size."""
        data = super().resolve_data(write_item)
        return exact_view(data.detach()) if isinstance(data, torch.Tensor) else data
