"""Mid-stack attention truncation of HSTU (ULTRA-HSTU): keep a jagged batch's recent history.

A sequence is ``[contextual (c) | history (U_b) | candidates (T_b)]``. Truncation keeps the
contextual prefix, the last ``tail_len`` history rows and every candidate, in order, as
TorchEasyRec's ``compute_stu_truncation_plan`` / ``apply_stu_truncation_plan`` do.

No ``from __future__ import annotations``: TorchScript compiles this function (export).
"""

from typing import Optional

import torch

from recforge.modules.gr.jagged import lengths_of, offsets_of, row_index


def truncate_history(
    x: torch.Tensor,
    offsets: torch.Tensor,
    num_targets: Optional[torch.Tensor],
    contextual_len: int,
    tail_len: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drops all but the last ``tail_len`` history rows of each sequence.

    Args:
        x: rows ``[L, *S]``.
        offsets: ``[B + 1]``.
        num_targets: ``[B]`` candidates at the end of each sequence (kept), or None.
        contextual_len: contextual rows at the start of each sequence (kept).
        tail_len: history rows kept per sequence (the newest ones).

    Returns:
        The kept rows ``[L', *S]`` and their offsets ``[B + 1]``.

    """
    lengths = lengths_of(offsets)
    history = lengths - contextual_len
    if num_targets is not None:
        history = history - num_targets
    drop = torch.clamp(history - tail_len, min=0)
    seq, pos = row_index(offsets, x.shape[0])
    keep = (pos < contextual_len) | (pos >= contextual_len + drop[seq])
    return x[keep], offsets_of(lengths - drop)
