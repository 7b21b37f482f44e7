"""Masking and masked attention pooling over padded behaviour sequences ``[B, T, D]``.

Shared by the DIN encoder and the other sequence encoders: each cuts the sequence to the
positions it reads, pads a narrow query, and pools the valid positions by a softmax over them.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def effective_length(max_length: int, max_seq_length: int) -> int:
    """Positions an encoder reads: the group's ``T``, cut to ``max_seq_length`` when > 0."""
    return min(max_length, max_seq_length) if max_seq_length > 0 else max_length


def sequence_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """``[B, T]`` bool: True at the first ``lengths[b]`` positions of each row."""
    positions = torch.arange(length, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def clip_sequence(
    sequence: torch.Tensor, lengths: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``length`` positions of ``sequence`` ``[B, T, D]`` and the lengths cut to it."""
    return sequence[:, :length], torch.clamp(lengths, max=length)


def check_query(query_dim: int, sequence_dim: int, kind: str, name: str) -> None:
    """Raises ValueError when the query is wider than the sequence elements.

    Args:
        query_dim: width ``Dq`` of the query.
        sequence_dim: width ``Ds`` of a sequence element.
        kind: the encoder, for the message (``din_encoder``, ...).
        name: the sequence group, for the message.

    """
    if query_dim > sequence_dim:
        raise ValueError(
            f"{kind} over sequence group '{name}' needs query features (the candidate side,"
            f" e.g. item_id) no wider than its sequence features: query dim {query_dim},"
            f" sequence dim {sequence_dim}; list a non-sequence feature for every sequence"
            " element, in the same order and with the same embedding_dim"
        )


def pad_query(query: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pads ``query`` ``[B, Dq]`` on the right by ``pad`` columns (as TorchEasyRec)."""
    return F.pad(query, (0, pad)) if pad > 0 else query


def masked_attention_pool(
    scores: torch.Tensor, sequence: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Softmax of ``scores`` over each row's valid positions, then the weighted sum.

    Args:
        scores: ``[B, T]`` attention scores.
        sequence: ``[B, T, D]`` the elements.
        lengths: ``[B]`` valid positions per row (at most ``T``).

    Returns:
        ``[B, D]``; an empty row pools to zeros.

    """
    mask = sequence_mask(lengths, scores.shape[1])
    # -1e4: exp() underflows to 0 against any real score, and fp16 can hold it
    scores = scores.masked_fill(~mask, -1e4)
    # an all-padding row gets uniform weights from the softmax: the mask zeroes them
    weights = torch.softmax(scores, dim=1) * mask.to(scores.dtype)
    return torch.bmm(weights.unsqueeze(1), sequence).squeeze(1)
