"""Relative position and time bias of HSTU attention (TorchEasyRec's ``tzrec/modules/hstu.py``).

For query event ``i`` and key event ``j`` of one sequence the bias is
``pos_w[j - i + max_seq_len - 1] + ts_w[bucket(ts[i + 1] - ts[j])]``: a learned weight per
relative position and one per bucket of the time from the key to the event after the query
(the query's own time for the last event). Buckets: ``"log"`` is
``floor(ln(max(|dt|, 1)) / 0.301)``, ``"sqrt"`` is ``floor(sqrt(max(|dt|, 1e-6)))``, both
clipped to ``[0, num_buckets]``, as in the HSTU paper's code.

Where we differ: TorchEasyRec computes the time bias on a block padded to ``max_seq_len``, so
for a sequence shorter than the block its last event reads the padding's timestamp (0) as the
"next" one; here the last event of every sequence uses its own timestamp, so the bias of a
sequence does not depend on how much it was padded.
"""

from __future__ import annotations

import torch
from torch import nn

from recforge.modules.gr.jagged import to_padded


class RelativeBucketedTimeAndPositionBias(nn.Module):
    """Additive attention bias from relative positions and bucketed time gaps.

    Args:
        max_seq_len: longest sequence; relative positions beyond it share the edge weights.
        num_buckets: time buckets (weights ``num_buckets + 1``).
        bucket_fn: ``"log"`` or ``"sqrt"`` (see the module docstring).

    Example:
        >>> import torch
        >>> bias = RelativeBucketedTimeAndPositionBias(max_seq_len=8, num_buckets=16)
        >>> offsets = torch.tensor([0, 3, 4])
        >>> ts = torch.tensor([10.0, 20.0, 40.0, 5.0])
        >>> seq, pos = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 2, 0])
        >>> bias(ts, offsets, seq, pos, 3).shape
        torch.Size([2, 3, 3])

    """

    def __init__(self, max_seq_len: int, num_buckets: int, bucket_fn: str = "log") -> None:
        super().__init__()
        if bucket_fn not in ("log", "sqrt"):
            raise ValueError(f"bucket_fn must be 'log' or 'sqrt', got {bucket_fn!r}")
        self._max_seq_len = max_seq_len
        self._num_buckets = num_buckets
        self._use_log = bucket_fn == "log"
        self.ts_w = nn.Parameter(torch.empty(num_buckets + 1).normal_(mean=0.0, std=0.02))
        self.pos_w = nn.Parameter(torch.empty(2 * max_seq_len - 1).normal_(mean=0.0, std=0.02))

    def bucketize(self, dt: torch.Tensor) -> torch.Tensor:
        """Time bucket (int64, in ``[0, num_buckets]``) of time gaps ``dt``."""
        dt = dt.abs()
        if self._use_log:
            b = torch.log(dt.clamp(min=1.0)) / 0.301
        else:
            b = torch.sqrt(dt.clamp(min=1e-6))
        return b.long().clamp(min=0, max=self._num_buckets)

    def forward(
        self,
        timestamps: torch.Tensor,
        offsets: torch.Tensor,
        seq: torch.Tensor,
        pos: torch.Tensor,
        length: int,
    ) -> torch.Tensor:
        """The bias of one jagged batch.

        Args:
            timestamps: event times ``[L]`` (jagged like the sequences).
            offsets: ``[B + 1]``.
            seq: sequence of each row ``[L]`` (``jagged.row_index``).
            pos: position of each row in its sequence ``[L]``.
            length: padded length ``N`` (the batch's longest sequence).

        Returns:
            ``[B, N, N]`` (query, key); values at padded places are arbitrary (masked later).

        """
        batch = offsets.numel() - 1
        ts = timestamps.to(torch.float64)
        # the "next" event of each row: itself for the last event of its sequence
        last = offsets[1:][seq] - 1
        nxt = ts[torch.minimum(torch.arange(ts.numel(), device=ts.device) + 1, last)]
        p_ts = to_padded(ts, seq, pos, batch, length)
        p_next = to_padded(nxt, seq, pos, batch, length)
        buckets = self.bucketize(p_next.unsqueeze(2) - p_ts.unsqueeze(1))
        ar = torch.arange(length, device=ts.device)
        rel = (ar.view(1, -1) - ar.view(-1, 1) + self._max_seq_len - 1).clamp(
            min=0, max=2 * self._max_seq_len - 2
        )
        return self.pos_w[rel].unsqueeze(0) + self.ts_w[buckets]
