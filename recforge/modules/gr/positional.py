"""HSTU's positional and time encoder (TorchEasyRec's ``HSTUPositionalEncoder``), jagged.

Each event's embedding is scaled by ``sqrt(D)`` and gets a learned position embedding, indexed
by how far the event is from the end of its history (the newest event is 1, the one before 2,
...; candidates at the end share the index 0 of the first one after the history; indices stop
at ``num_position_buckets - 1``), and optionally a time embedding, indexed by the bucket of
``query_time - timestamp`` in units of ``time_bucket_increments`` seconds (``sqrt`` or ``log``
of it, truncated, clipped to ``[0, num_time_buckets]``). Without a query time the anchor is the
sequence's last timestamp. With ``contextual_seq_len`` ``c``, the first ``c`` rows of each
sequence are contextual tokens with positions ``0 .. c - 1`` and the events' indices are shifted
by ``c``.

With ``unit_scale_input`` (the rows come out of a LayerNorm, as ``dlrm_hstu``'s content MLP
makes them) the rows are not multiplied by ``sqrt(D)`` and both tables start at unit scale
(uniform on ``[-sqrt(3), sqrt(3)]``, variance 1), so position and time weigh as much as the
content from the first step. Where we differ from TorchEasyRec: it always multiplies by
``sqrt(D)`` and starts the tables at ``+-sqrt(1 / buckets)``; on layer-normed rows the position
is then a few hundredths of the row and the STU's input LayerNorm all but erases it, so short
trainings do not learn the order of the history (a model ignoring order scores the same).

No ``from __future__ import annotations``: TorchScript compiles ``encode_positions`` (export).
"""

import math
from typing import Optional

import torch
from torch import nn

from recforge.modules.gr.jagged import lengths_of, row_index


class HSTUPositionalEncoder(nn.Module):
    """Adds position (and time) embeddings to jagged sequence rows.

    Args:
        embedding_dim: row width ``D``.
        num_position_buckets: position embeddings.
        num_time_buckets: time buckets (``num_time_buckets + 1`` embeddings).
        use_time_encoding: add the time embedding.
        time_bucket_fn: ``"sqrt"`` or ``"log"``.
        time_bucket_increments: seconds per unit before ``time_bucket_fn``.
        contextual_seq_len: contextual tokens at the start of each sequence.
        unit_scale_input: the rows are layer-normed (see the module docstring).

    """

    def __init__(
        self,
        embedding_dim: int,
        num_position_buckets: int,
        num_time_buckets: int = 0,
        use_time_encoding: bool = False,
        time_bucket_fn: str = "sqrt",
        time_bucket_increments: float = 60.0,
        contextual_seq_len: int = 0,
        unit_scale_input: bool = False,
    ) -> None:
        super().__init__()
        if time_bucket_fn not in ("sqrt", "log"):
            raise ValueError(f"time_bucket_fn must be 'sqrt' or 'log', got {time_bucket_fn!r}")
        self._scale = 1.0 if unit_scale_input else embedding_dim**0.5
        self._contextual = contextual_seq_len
        self._use_time = use_time_encoding
        self._use_log = time_bucket_fn == "log"
        self._increments = time_bucket_increments
        self._num_time_buckets = num_time_buckets
        unit_bound = math.sqrt(3.0)
        bound = unit_bound if unit_scale_input else math.sqrt(1.0 / num_position_buckets)
        self.position_weight = nn.Parameter(
            torch.empty(num_position_buckets, embedding_dim).uniform_(-bound, bound)
        )
        time_rows = num_time_buckets + 1 if use_time_encoding else 1
        bound = unit_bound if unit_scale_input else math.sqrt(1.0 / max(num_time_buckets, 1))
        self.time_weight = nn.Parameter(
            torch.empty(time_rows, embedding_dim).uniform_(-bound, bound)
        )

    def forward(
        self,
        x: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: Optional[torch.Tensor] = None,
        num_targets: Optional[torch.Tensor] = None,
        query_time: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Encodes a jagged batch.

        Args:
            x: rows ``[L, D]``.
            offsets: ``[B + 1]``.
            timestamps: event times in seconds ``[L]`` (needed with time encoding).
            num_targets: ``[B]`` candidates at the end of each sequence, or None.
            query_time: ``[B]`` the time each user is served at, or None (last timestamp).

        Returns:
            ``[L, D]``.

        """
        if self._use_time and timestamps is None:
            raise ValueError("use_time_encoding needs the sequence timestamps")
        return encode_positions(
            x,
            offsets,
            self.position_weight,
            self.time_weight,
            timestamps if self._use_time else None,
            num_targets,
            query_time,
            self._scale,
            self._use_log,
            self._increments,
            self._num_time_buckets,
            self._contextual,
        )


def encode_positions(
    x: torch.Tensor,
    offsets: torch.Tensor,
    position_weight: torch.Tensor,
    time_weight: torch.Tensor,
    timestamps: Optional[torch.Tensor],
    num_targets: Optional[torch.Tensor],
    query_time: Optional[torch.Tensor],
    scale: float,
    use_log: bool,
    increments: float,
    num_time_buckets: int,
    contextual_seq_len: int = 0,
) -> torch.Tensor:
    """``HSTUPositionalEncoder``'s computation (no time embedding when ``timestamps`` is None)."""
    lengths = lengths_of(offsets)
    seq, pos = row_index(offsets, x.shape[0])
    high = lengths if num_targets is None else lengths - num_targets
    index = high[seq] - torch.minimum(pos, high[seq]) + contextual_seq_len
    index = index.clamp(max=position_weight.shape[0] - 1)
    if contextual_seq_len > 0:
        index = torch.where(pos < contextual_seq_len, pos, index)
    out = x * scale + position_weight[index]
    if timestamps is not None and x.shape[0] > 0:
        ts = timestamps.to(torch.float64)
        if query_time is None:
            anchor = ts[(offsets[1:] - 1).clamp(min=0)][seq]
        else:
            anchor = query_time.to(torch.float64)[seq]
        gap = (anchor - ts).clamp(min=1e-6) / increments
        gap = torch.log(gap) if use_log else torch.sqrt(gap)
        bucket = gap.clamp(min=0, max=num_time_buckets).long()
        out = out + time_weight[bucket]
    return out


# traced export graphs call it as one opaque (scripted) function: it depends on the data
torch.fx.wrap("encode_positions")
