"""HSTU attention on jagged sequences in plain PyTorch (``model_config.kernel: PYTORCH``).

HSTU attention replaces softmax by a pointwise SiLU: for the events ``i`` (query) and ``j``
(key) of one sequence, ``a[i, j] = silu(alpha * q_i . k_j + bias[i, j]) / scaling_seqlen`` where
the mask allows ``j`` for ``i``, else 0, and ``out_i = sum_j a[i, j] v_j``. The mask is
TorchEasyRec's: causal (``j <= i``), optionally a window (``i - j <= max_attn_len``),
target-aware (the last ``num_targets[b]`` events of a sequence are candidates: each sees the
history and itself, never another candidate), and with ``contextual_seq_len`` ``c`` the first
``c`` rows of each sequence are contextual tokens that share position 0: they see every
non-candidate row (later events too), and every later row sees them.

Semi-local attention (SLA, ``sla_k1`` / ``sla_k2``, ULTRA-HSTU) replaces that mask by
TorchEasyRec's SLA mask (its ``build_sla_func_tensor``): with ``k2 = max(sla_k2,
contextual_seq_len)``, a history row ``i`` (contextual tokens included) sees the keys ``j <= i``
with ``j < k2`` (the global prefix) or ``j > i - sla_k1`` (the local window, itself included);
a candidate row sees every history row and nothing else (not itself, not another candidate).
``causal`` and ``max_attn_len`` do not apply then, as in TorchEasyRec. The scores are still
computed densely here; only the mask changes (TorchEasyRec's CUTLASS kernel skips the masked
blocks, its PyTorch path does not either).

Layout: the sequences stay jagged (values ``[L, H, D]`` + offsets ``[B + 1]``) outside this
function; inside, the batch is scattered into a block padded to its own longest sequence (not
to the configured maximum), multiplied with batched matmuls, masked, and gathered back. On CPU
this was faster than nested tensors (``torch.nested``) and on par with a per-sequence loop,
which a GPU runs poorly; so it is the one path for both. No ``from __future__ import
annotations``: TorchScript compiles these functions (export).
"""

from typing import Optional

import torch
import torch.nn.functional as F

from recforge.modules.gr.jagged import lengths_of, row_index, to_jagged, to_padded


def valid_attention_mask(
    lengths: torch.Tensor,
    length: int,
    causal: bool = True,
    num_targets: Optional[torch.Tensor] = None,
    max_attn_len: int = 0,
    contextual_seq_len: int = 0,
) -> torch.Tensor:
    """Which key each query may attend to, as TorchEasyRec's HSTU mask defines it.

    Args:
        lengths: sequence lengths ``[B]``.
        length: padded length ``N`` (at least ``lengths.max()``).
        causal: only keys at or before the query.
        num_targets: ``[B]`` candidates at the end of each sequence (they share one position:
            each sees the history and itself); None for none.
        max_attn_len: if > 0, only keys at most this many positions back.
        contextual_seq_len: contextual tokens at the start of each sequence (see the module
            docstring).

    Returns:
        bool ``[B, N, N]`` (query, key); False for every padded row and column.

    """
    ids = torch.arange(length, device=lengths.device).view(1, length)
    max_ids = lengths
    if contextual_seq_len > 0:
        ids = torch.clamp(ids - contextual_seq_len + 1, min=0)
        max_ids = lengths - contextual_seq_len + 1
    if num_targets is not None:
        max_ids = max_ids - num_targets
        ids = torch.minimum(ids, max_ids.view(-1, 1))
    else:
        ids = ids.expand(lengths.numel(), length)
    dist = ids.unsqueeze(2) - ids.unsqueeze(1)
    eye = torch.eye(length, dtype=torch.bool, device=lengths.device).unsqueeze(0)
    mask = eye | (dist > 0 if causal else dist != 0)
    if max_attn_len > 0:
        mask = mask & (dist.abs() <= max_attn_len)
    if contextual_seq_len > 0:
        contextual_rows = (ids == 0).unsqueeze(2)
        mask = mask | (contextual_rows & (ids < max_ids.view(-1, 1)).unsqueeze(1))
    inside = torch.arange(length, device=lengths.device).view(1, length) < lengths.view(-1, 1)
    return mask & inside.unsqueeze(2) & inside.unsqueeze(1)


def sla_attention_mask(
    lengths: torch.Tensor,
    length: int,
    num_targets: Optional[torch.Tensor],
    sla_k1: int,
    sla_k2: int,
    contextual_seq_len: int = 0,
) -> torch.Tensor:
    """TorchEasyRec's semi-local attention mask (see the module docstring).

    Args:
        lengths: sequence lengths ``[B]``.
        length: padded length ``N`` (at least ``lengths.max()``).
        num_targets: ``[B]`` candidates at the end of each sequence, or None (all history).
        sla_k1: the local window (keys ``i - sla_k1 < j <= i``); 0 for none.
        sla_k2: the global prefix (keys ``j < max(sla_k2, contextual_seq_len)``).
        contextual_seq_len: contextual tokens at the start of each sequence (always global).

    Returns:
        bool ``[B, N, N]`` (query, key); False for every padded row and column.

    """
    k2 = max(sla_k2, contextual_seq_len)
    pos = torch.arange(length, device=lengths.device)
    rows = pos.view(1, length, 1)
    cols = pos.view(1, 1, length)
    history = lengths
    if num_targets is not None:
        history = torch.clamp(lengths - num_targets, min=0)
    history = history.view(-1, 1, 1)
    history_mask = (cols <= rows) & ((cols < k2) | (cols > rows - sla_k1))
    mask = torch.where(rows < history, history_mask, cols < history)
    inside = pos.view(1, length) < lengths.view(-1, 1)
    return mask & inside.unsqueeze(2) & inside.unsqueeze(1)


def hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    alpha: float,
    scaling_seqlen: int,
    causal: bool = True,
    num_targets: Optional[torch.Tensor] = None,
    max_attn_len: int = 0,
    bias: Optional[torch.Tensor] = None,
    contextual_seq_len: int = 0,
    sla_k1: int = 0,
    sla_k2: int = 0,
) -> torch.Tensor:
    """SiLU attention over jagged sequences.

    Args:
        q: queries ``[L, H, A]``.
        k: keys ``[L, H, A]``.
        v: values ``[L, H, V]``.
        offsets: ``[B + 1]``; rows ``offsets[b]:offsets[b + 1]`` are sequence ``b``.
        alpha: scale of ``q . k`` (TorchEasyRec's default is ``1 / sqrt(A)``).
        scaling_seqlen: divisor of the attention weights (a fixed configured maximum length,
            so that outputs do not depend on the other sequences in the batch).
        causal: see ``valid_attention_mask``.
        num_targets: see ``valid_attention_mask``.
        max_attn_len: see ``valid_attention_mask``.
        bias: optional additive bias ``[B, N, N]`` (query, key) inside the SiLU, ``N`` the
            batch's longest sequence (see ``RelativeBucketedTimeAndPositionBias``).
        contextual_seq_len: see ``valid_attention_mask``.
        sla_k1: semi-local attention's local window; SLA is on when ``sla_k1`` or ``sla_k2``
            is > 0 (see ``sla_attention_mask``; ``causal`` and ``max_attn_len`` then do not
            apply).
        sla_k2: semi-local attention's global prefix.

    Returns:
        ``[L, H, V]``, jagged like ``q``.

    """
    total, heads = q.shape[0], q.shape[1]
    lengths = lengths_of(offsets)
    batch = lengths.numel()
    if total == 0:
        return v.new_zeros((0, heads, v.shape[2]))
    length = int(lengths.max().item())
    seq, pos = row_index(offsets, total)
    pq = to_padded(q, seq, pos, batch, length).transpose(1, 2)  # [B, H, N, A]
    pk = to_padded(k, seq, pos, batch, length).transpose(1, 2)
    pv = to_padded(v, seq, pos, batch, length).transpose(1, 2)  # [B, H, N, V]
    scores = torch.matmul(pq, pk.transpose(2, 3)) * alpha
    if bias is not None:
        scores = scores + bias.unsqueeze(1)
    if sla_k1 > 0 or sla_k2 > 0:
        mask = sla_attention_mask(lengths, length, num_targets, sla_k1, sla_k2, contextual_seq_len)
    else:
        mask = valid_attention_mask(
            lengths, length, causal, num_targets, max_attn_len, contextual_seq_len
        )
    weights = F.silu(scores) / scaling_seqlen * mask.unsqueeze(1).to(scores.dtype)
    out = torch.matmul(weights, pv).transpose(1, 2)  # [B, N, H, V]
    return to_jagged(out, seq, pos)
