"""Appending candidate rows (targets) at the end of jagged sequences, and reading them back.

No ``from __future__ import annotations``: TorchScript compiles these functions (export).
"""

import torch

from recforge.modules.gr.jagged import lengths_of, offsets_of, row_index


def append_rows(
    values: torch.Tensor, offsets: torch.Tensor, tail: torch.Tensor, tail_offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Puts each sequence's tail rows after its rows.

    Args:
        values: ``[L, *S]`` rows of ``B`` sequences.
        offsets: ``[B + 1]``.
        tail: ``[T, *S]`` rows to append (``tail_offsets[b]:tail_offsets[b + 1]`` go to ``b``).
        tail_offsets: ``[B + 1]``.

    Returns:
        The rows ``[L + T, *S]``, their offsets ``[B + 1]`` and where each tail row now is
        ``[T]`` (see :func:`take_rows`).

    """
    lengths = lengths_of(offsets)
    tail_lengths = lengths_of(tail_offsets)
    out_offsets = offsets_of(lengths + tail_lengths)
    seq, pos = row_index(offsets, values.shape[0])
    tail_seq, tail_pos = row_index(tail_offsets, tail.shape[0])
    head_index = out_offsets[:-1][seq] + pos
    tail_index = out_offsets[:-1][tail_seq] + lengths[tail_seq] + tail_pos
    out = values.new_zeros([values.shape[0] + tail.shape[0]] + list(values.shape[1:]))
    out = out.index_put([head_index], values)
    out = out.index_put([tail_index], tail)
    return out, out_offsets, tail_index


def take_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The rows ``values[index]`` ``[T, *S]`` (the tail rows of :func:`append_rows`)."""
    return values.index_select(0, index)


def shift_rows(index: torch.Tensor, offsets: torch.Tensor, prefix: int) -> torch.Tensor:
    """Where the rows ``index`` ``[T]`` of :func:`append_rows` are after a prefix is added.

    Putting ``prefix`` rows before each sequence moves the rows of sequence ``b`` by
    ``(b + 1) * prefix``.

    Args:
        index: ``[T]`` the rows' positions.
        offsets: ``[B + 1]`` which sequence each of the ``T`` rows belongs to.
        prefix: rows put before each sequence.

    """
    seq, _ = row_index(offsets, index.shape[0])
    return index + (seq + 1) * prefix


def reversed_rows(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """The permutation ``[total]`` that reverses the rows of each jagged sequence.

    ``values.index_select(0, reversed_rows(offsets, L))`` puts each sequence's rows in the
    opposite order; applied twice it restores them.
    """
    lengths = lengths_of(offsets)
    seq, pos = row_index(offsets, total)
    return offsets[:-1][seq] + lengths[seq] - 1 - pos


def last_rows_index(offsets: torch.Tensor, tail_offsets: torch.Tensor) -> torch.Tensor:
    """Where the last rows of each sequence are: ``[T]`` for offsets ``[B + 1]``.

    Sequence ``b`` ends with ``tail_offsets[b + 1] - tail_offsets[b]`` rows (its candidates,
    wherever the rows before them came from: a prefix, a truncated history).
    """
    tail_lengths = lengths_of(tail_offsets)
    total = int(tail_offsets[-1].item()) if tail_offsets.numel() > 0 else 0
    seq, pos = row_index(tail_offsets, total)
    return offsets[1:][seq] - tail_lengths[seq] + pos


def interleave_rows(
    values: torch.Tensor, offsets: torch.Tensor, extra: torch.Tensor, extra_offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Puts each extra row right after the row of the same position in its sequence.

    Sequence ``b``'s ``e_b`` extra rows (``extra_offsets[b]:extra_offsets[b + 1]``, at most
    as many as its rows) follow its first ``e_b`` rows one by one: rows ``r0 r1 r2 t`` with
    extras ``a0 a1 a2`` become ``r0 a0 r1 a1 r2 a2 t``.

    Args:
        values: ``[L, *S]`` rows of ``B`` sequences.
        offsets: ``[B + 1]``.
        extra: ``[E, *S]`` the extra rows.
        extra_offsets: ``[B + 1]``.

    Returns:
        The rows ``[L + E, *S]`` and their offsets ``[B + 1]``.

    """
    lengths = lengths_of(offsets)
    extra_lengths = lengths_of(extra_offsets)
    out_offsets = offsets_of(lengths + extra_lengths)
    seq, pos = row_index(offsets, values.shape[0])
    extra_seq, extra_pos = row_index(extra_offsets, extra.shape[0])
    # row p has min(p, e_b) extra rows before it; extra row q follows row q
    head_index = out_offsets[:-1][seq] + pos + torch.minimum(pos, extra_lengths[seq])
    extra_index = out_offsets[:-1][extra_seq] + 2 * extra_pos + 1
    out = values.new_zeros([values.shape[0] + extra.shape[0]] + list(values.shape[1:]))
    out = out.index_put([head_index], values)
    out = out.index_put([extra_index], extra)
    return out, out_offsets
