"""STU: the sequential transduction unit of HSTU, and a stack of them (jagged in, jagged out).

One layer, as TorchEasyRec's ``STULayer`` computes it::

    n = layer_norm(x)
    u, v, q, k = split(n @ W_uvqk + b_uvqk);  u = silu(u)       # pointwise projection
    a = hstu_attention(q, k, v)                                 # SiLU attention, no softmax
    y = u * norm(a)                                             # gating (layer or group norm)
    out = x + dropout(concat(u, a, y)) @ W_out                  # residual

The parameters have TorchEasyRec's shapes and names (``_uvqk_weight`` ``[D, (2 * hidden +
2 * attention) * heads]``, ``_output_weight`` ``[3 * hidden * heads, D]``, ...). Mid-stack
truncation, semi-local attention and KV caching are not built (their fields are refused).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from recforge.modules.gr.attention import hstu_attention

# traced export graphs call it as one opaque (scripted) function: its shapes depend on the data
torch.fx.wrap("hstu_attention")


class STULayer(nn.Module):
    """One STU layer over a jagged batch.

    Args:
        embedding_dim: width ``D`` of the input and output rows.
        num_heads: attention heads ``H``.
        hidden_dim: per-head width of ``u`` and ``v``.
        attention_dim: per-head width of ``q`` and ``k``.
        output_dropout_ratio: dropout on ``concat(u, a, y)`` while training.
        causal: events attend only to earlier ones (and themselves).
        target_aware: the last ``num_targets`` events of a sequence do not see each other.
        max_attn_len: if > 0, attention reaches at most this many events back.
        attn_alpha: scale of ``q . k``; 0 means ``1 / sqrt(attention_dim)`` (TorchEasyRec's).
        use_group_norm: normalise the attention output per head instead of over all heads.
        scaling_seqlen: divisor of the attention weights; -1 means the batch's ``max_seq_len``
            argument (TorchEasyRec's fallback).
        contextual_seq_len: contextual tokens at the start of each sequence (see
            ``hstu_attention``).

    Example:
        >>> import torch
        >>> layer = STULayer(embedding_dim=8, num_heads=2, hidden_dim=4, attention_dim=4)
        >>> x, offsets = torch.randn(5, 8), torch.tensor([0, 2, 5])
        >>> layer(x, offsets, max_seq_len=3).shape
        torch.Size([5, 8])

    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        hidden_dim: int,
        attention_dim: int,
        output_dropout_ratio: float = 0.3,
        causal: bool = True,
        target_aware: bool = True,
        max_attn_len: int = 0,
        attn_alpha: float = 0.0,
        use_group_norm: bool = False,
        scaling_seqlen: int = -1,
        contextual_seq_len: int = 0,
    ) -> None:
        super().__init__()
        self._contextual = contextual_seq_len
        self._num_heads = num_heads
        self._hidden_dim = hidden_dim
        self._attention_dim = attention_dim
        self._dropout = output_dropout_ratio
        self._causal = causal
        self._target_aware = target_aware
        self._max_attn_len = max_attn_len
        self._alpha = attn_alpha if attn_alpha > 0 else 1.0 / attention_dim**0.5
        self._use_group_norm = use_group_norm
        self._scaling_seqlen = scaling_seqlen
        width = (hidden_dim * 2 + attention_dim * 2) * num_heads
        self._uvqk_weight = nn.Parameter(torch.empty(embedding_dim, width))
        nn.init.xavier_uniform_(self._uvqk_weight)
        self._uvqk_beta = nn.Parameter(torch.zeros(width))
        self._input_norm_weight = nn.Parameter(torch.ones(embedding_dim))
        self._input_norm_bias = nn.Parameter(torch.zeros(embedding_dim))
        self._output_weight = nn.Parameter(torch.empty(hidden_dim * num_heads * 3, embedding_dim))
        nn.init.xavier_uniform_(self._output_weight)
        norm_width = num_heads if use_group_norm else hidden_dim * num_heads
        self._output_norm_weight = nn.Parameter(torch.ones(norm_width))
        self._output_norm_bias = nn.Parameter(torch.zeros(norm_width))

    def forward(
        self,
        x: torch.Tensor,
        offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Transforms a jagged batch.

        Args:
            x: rows ``[L, D]``.
            offsets: ``[B + 1]``.
            max_seq_len: the longest sequence allowed (divisor when ``scaling_seqlen`` is -1).
            num_targets: ``[B]`` candidates at the end of each sequence, or None.
            bias: optional attention bias ``[B, N, N]`` (see ``hstu_attention``).

        Returns:
            ``[L, D]``.

        """
        heads, hidden, att = self._num_heads, self._hidden_dim, self._attention_dim
        normed = F.layer_norm(
            x, (x.shape[-1],), self._input_norm_weight, self._input_norm_bias, eps=1e-6
        )
        uvqk = torch.addmm(self._uvqk_beta, normed, self._uvqk_weight)
        u, v, q, k = torch.split(
            uvqk, [hidden * heads, hidden * heads, att * heads, att * heads], dim=1
        )
        u = F.silu(u)
        scaling = self._scaling_seqlen if self._scaling_seqlen > 0 else max_seq_len
        attn = hstu_attention(
            q.reshape(-1, heads, att),
            k.reshape(-1, heads, att),
            v.reshape(-1, heads, hidden),
            offsets,
            self._alpha,
            scaling,
            self._causal,
            num_targets if self._target_aware else None,
            self._max_attn_len,
            bias,
            self._contextual,
        ).reshape(-1, heads * hidden)
        if self._use_group_norm:
            normed_attn = F.group_norm(
                attn.reshape(-1, heads, hidden),
                heads,
                self._output_norm_weight,
                self._output_norm_bias,
                eps=1e-6,
            ).reshape(-1, heads * hidden)
        else:
            normed_attn = F.layer_norm(
                attn, (heads * hidden,), self._output_norm_weight, self._output_norm_bias, 1e-6
            )
        y = torch.cat([u, attn, u * normed_attn], dim=1)
        y = F.dropout(y, p=self._dropout, training=self.training)
        return torch.addmm(x, y, self._output_weight)


class STUStack(nn.Module):
    """STU layers applied one after the other.

    Args:
        layers: the layers.

    """

    def __init__(self, layers: list[STULayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self,
        x: torch.Tensor,
        offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Runs every layer; arguments as ``STULayer.forward``; returns ``[L, D]``."""
        for layer in self.layers:
            x = layer(x, offsets, max_seq_len, num_targets, bias)
        return x
