"""Moving between jagged rows (values + offsets) and a dense block padded to the batch's longest.

No ``from __future__ import annotations``: TorchScript compiles these functions (export).
"""

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
    shape = [batch, length] + list(values.shape[1:])
    out = values.new_zeros(shape)
    return out.index_put([seq, pos], values)


def to_jagged(padded: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Dense ``[B, N, *S]`` back to the jagged rows ``[L, *S]`` (the inverse of ``to_padded``)."""
    return padded[seq, pos]


def last_rows(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The last row of each sequence ``[B, *S]``; zeros for an empty sequence."""
    lengths = lengths_of(offsets)
    if values.shape[0] == 0:
        shape = [lengths.shape[0]] + list(values.shape[1:])
        return values.new_zeros(shape)
    index = (offsets[1:] - 1).clamp(min=0)
    keep = (lengths > 0).to(values.dtype).view([-1] + [1] * (values.dim() - 1))
    return values[index] * keep


def prepend_rows(values: torch.Tensor, offsets: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """Puts ``c`` rows before each sequence: ``[L, *S]`` + ``[B, c, *S]`` -> ``[L + B * c, *S]``.

    The new offsets are ``offsets_of(lengths_of(offsets) + c)``.
    """
    batch, c = prefix.shape[0], prefix.shape[1]
    lengths = lengths_of(offsets)
    starts = offsets_of(lengths + c)[:-1]
    seq, pos = row_index(offsets, values.shape[0])
    out = values.new_zeros([values.shape[0] + batch * c] + list(values.shape[1:]))
    out = out.index_put([starts[seq] + c + pos], values)
    context = (starts.view(-1, 1) + torch.arange(c, device=values.device).view(1, -1)).reshape(-1)
    return out.index_put([context], prefix.reshape([batch * c] + list(values.shape[1:])))


def jagged_bmm_add(
    values: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Each sequence's rows times its own matrix plus its own bias.

    Args:
        values: ``[L, I]`` rows of ``B`` sequences.
        offsets: ``[B + 1]``.
        weights: ``[B, I, O]`` one matrix per sequence.
        bias: ``[B, O]`` one bias per sequence.

    Returns:
        ``[L, O]``: row ``l`` of sequence ``b`` is ``values[l] @ weights[b] + bias[b]``.

    """
    lengths = lengths_of(offsets)
    length = int(lengths.max().item()) if lengths.numel() > 0 else 0
    seq, pos = row_index(offsets, values.shape[0])
    padded = to_padded(values, seq, pos, lengths.shape[0], length)
    return to_jagged(torch.baddbmm(bias.unsqueeze(1), padded, weights), seq, pos)
