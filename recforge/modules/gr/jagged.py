"""Moving between jagged rows (values + offsets) and a dense block padded to the batch's longest."""

from __future__ import annotations

import torch


def lengths_of(offsets: torch.Tensor) -> torch.Tensor:
    """Sequence lengths ``[B]`` of offsets ``[B + 1]``."""
    return offsets[1:] - offsets[:-1]


def offsets_of(lengths: torch.Tensor) -> torch.Tensor:
    """Offsets ``[B + 1]`` (starting at 0) of lengths ``[B]``."""
    return torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])


def row_index(offsets: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each of the ``total`` jagged rows: its sequence ``[L]`` and its position in it ``[L]``."""
    lengths = lengths_of(offsets)
    seq = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=offsets.device), lengths, output_size=total
    )
    pos = torch.arange(total, device=offsets.device) - offsets[:-1][seq]
    return seq, pos


def to_padded(
    values: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, batch: int, length: int
) -> torch.Tensor:
    """Jagged ``[L, *S]`` to dense ``[B, N, *S]`` with zeros after each sequence's end."""
    out = values.new_zeros((batch, length) + tuple(values.shape[1:]))
    return out.index_put((seq, pos), values)


def to_jagged(padded: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Dense ``[B, N, *S]`` back to the jagged rows ``[L, *S]`` (the inverse of ``to_padded``)."""
    return padded[seq, pos]
