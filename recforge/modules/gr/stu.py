"""STU: the sequential transduction unit of HSTU, and a stack of them (jagged in, jagged out).

One layer, as TorchEasyRec's ``STULayer`` computes it::

    n = layer_norm(x)
    u, v, q, k = split(n @ W_uvqk + b_uvqk);  u = silu(u)       # pointwise projection
    a = hstu_attention(q, k, v)                                 # SiLU attention, no softmax
    y = u * norm(a)                                             # gating (layer or group norm)
    out = x + dropout(concat(u, a, y)) @ W_out                  # residual

The parameters have TorchEasyRec's shapes and names (``_uvqk_weight`` ``[D, (2 * hidden +
2 * attention) * heads]``, ``_output_weight`` ``[3 * hidden * heads, D]``, ...). Semi-local
attention (``sla_k1`` / ``sla_k2``) is an attention mask (see ``hstu_attention``); mid-stack
truncation is the stack's (``STUStack``); KV caching is not built.

Selective rematerialization (TorchEasyRec's ``recompute_normed_x`` / ``recompute_uvqk`` /
``recompute_y``, all on by default there and here): while training, the marked intermediate
tensors are not kept for backward but recomputed from the layer's input
(``torch.utils.checkpoint``); the gradients are the same, the memory lower, the backward
slower. ``recompute_normed_x``: the input layer norm (with the projection that reads it);
``recompute_uvqk``: the projection ``u, v, q, k`` with the attention that reads it;
``recompute_y``: ``concat(u, a, y)`` with the output projection that reads it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.utils.checkpoint import checkpoint

from recforge.modules.gr.attention import hstu_attention
from recforge.modules.gr.attention_memory import check_attention_memory
from recforge.modules.gr.jagged import lengths_of
from recforge.modules.gr.truncation import truncate_history

# traced export graphs call it as one opaque (scripted) function: its shapes depend on the data
torch.fx.wrap("hstu_attention")
torch.fx.wrap("truncate_history")


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
        sla_k1: semi-local attention's local window (see ``hstu_attention``); SLA is on when
            ``sla_k1`` or ``sla_k2`` is > 0.
        sla_k2: semi-local attention's global prefix.
        recompute_normed_x: recompute the input layer norm in backward (see the module doc).
        recompute_uvqk: recompute the ``u, v, q, k`` projection and attention in backward.
        recompute_y: recompute the output block's input in backward.

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
        sla_k1: int = 0,
        sla_k2: int = 0,
        recompute_normed_x: bool = True,
        recompute_uvqk: bool = True,
        recompute_y: bool = True,
    ) -> None:
        super().__init__()
        self._contextual = contextual_seq_len
        self._sla_k1 = sla_k1
        self._sla_k2 = sla_k2
        self._recompute_normed_x = recompute_normed_x
        self._recompute_uvqk = recompute_uvqk
        self._recompute_y = recompute_y
        self.num_heads = num_heads
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
        remat = self.training and torch.is_grad_enabled() and not is_fx_symbolic_tracing()
        norm_x = remat and self._recompute_normed_x
        uvqk_x = remat and self._recompute_uvqk
        if norm_x and uvqk_x:
            u, attn = checkpoint(
                self._front, x, offsets, max_seq_len, num_targets, bias, use_reentrant=False
            )
        elif norm_x:
            uvqk = checkpoint(self._normed_projection, x, use_reentrant=False)
            u, attn = self._attend(uvqk, offsets, max_seq_len, num_targets, bias)
        elif uvqk_x:
            u, attn = checkpoint(  # the layer norm's output is kept, the rest recomputed
                self._front,
                self._normalize(x),
                offsets,
                max_seq_len,
                num_targets,
                bias,
                False,
                use_reentrant=False,
            )
        else:
            u, attn = self._front(x, offsets, max_seq_len, num_targets, bias)
        if remat and self._recompute_y:
            return checkpoint(self._output, x, u, attn, use_reentrant=False)
        return self._output(x, u, attn)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(
            x, (x.shape[-1],), self._input_norm_weight, self._input_norm_bias, eps=1e-6
        )

    def _project(self, normed: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self._uvqk_beta, normed, self._uvqk_weight)

    def _normed_projection(self, x: torch.Tensor) -> torch.Tensor:
        return self._project(self._normalize(x))

    def _attend(
        self,
        uvqk: torch.Tensor,
        offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: Optional[torch.Tensor],
        bias: Optional[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``silu(u)`` ``[L, H * hidden]`` and the attention output ``[L, H * hidden]``."""
        heads, hidden, att = self.num_heads, self._hidden_dim, self._attention_dim
        u, v, q, k = torch.split(
            uvqk, [hidden * heads, hidden * heads, att * heads, att * heads], dim=1
        )
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
            self._sla_k1,
            self._sla_k2,
        ).reshape(-1, heads * hidden)
        return F.silu(u), attn

    def _front(
        self,
        x: torch.Tensor,
        offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: Optional[torch.Tensor],
        bias: Optional[torch.Tensor],
        normalize: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer norm, projection, attention: :meth:`_attend`'s pair.

        ``normalize=False``: ``x`` is the layer norm's output already (kept out of a
        recomputed region).
        """
        normed = self._normalize(x) if normalize else x
        return self._attend(self._project(normed), offsets, max_seq_len, num_targets, bias)

    def _output(self, x: torch.Tensor, u: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        heads, hidden = self.num_heads, self._hidden_dim
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
    """STU layers applied one after the other, with optional mid-stack truncation.

    With ``truncation_split_layer`` and ``truncation_tail_len`` both > 0 (TorchEasyRec's
    ``attn_truncation_split_layer`` / ``attn_truncation_tail_len``), the first
    ``truncation_split_layer`` layers see the whole sequence; then each sequence keeps its
    contextual prefix, its last ``truncation_tail_len`` history rows and its candidates
    (``truncate_history``), and the later layers see only those.

    Args:
        layers: the layers.
        truncation_split_layer: layers before the truncation, in ``(0, len(layers))``; 0 for
            no truncation.
        truncation_tail_len: history rows kept after it; 0 for no truncation.
        contextual_len: contextual rows at the start of each sequence (kept).

    Raises:
        ValueError: only one of the truncation settings > 0, or the split outside
            ``(0, len(layers))``.

    """

    def __init__(
        self,
        layers: list[STULayer],
        truncation_split_layer: int = 0,
        truncation_tail_len: int = 0,
        contextual_len: int = 0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        if (truncation_split_layer > 0) != (truncation_tail_len > 0):
            raise ValueError(
                "attn_truncation_split_layer and attn_truncation_tail_len must both be > 0"
                f" (or both 0), found {truncation_split_layer} and {truncation_tail_len}"
            )
        if truncation_split_layer > 0 and truncation_split_layer >= len(layers):
            raise ValueError(
                f"attn_truncation_split_layer must be < attn_num_layers ({len(layers)}), found"
                f" {truncation_split_layer}"
            )
        self._split = truncation_split_layer
        self._tail_len = truncation_tail_len
        self._heads = layers[0].num_heads if layers else 0
        self._contextual = contextual_len

    def forward(
        self,
        x: torch.Tensor,
        offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Runs every layer; arguments as ``STULayer.forward``; returns ``[L', D]``.

        ``L' < L`` after a truncation: see ``run`` for the offsets of the rows returned.
        """
        return self.run(x, offsets, max_seq_len, num_targets, bias)[0]

    def kept_rows(
        self,
        rows: torch.Tensor,
        offsets: torch.Tensor,
        num_targets: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The rows ``[L', *S]`` of ``rows`` ``[L, *S]`` that :meth:`run` keeps after truncation.

        For values that travel beside the sequence (each row's timestamp, say): ``offsets``
        and ``num_targets`` are those given to :meth:`run`; without truncation ``rows`` itself.
        """
        if self._tail_len <= 0:
            return rows
        return truncate_history(rows, offsets, num_targets, self._contextual, self._tail_len)[0]

    @torch.jit.unused
    def _layer_lengths(
        self, offsets: torch.Tensor, num_targets: Optional[torch.Tensor]
    ) -> list[int]:
        """Each layer's longest sequence for this batch (shorter after the truncation)."""
        longest = int(lengths_of(offsets).max()) if offsets.numel() > 1 else 0
        kept = longest
        if self._tail_len > 0:
            targets = int(num_targets.max()) if num_targets is not None else 0
            kept = min(longest, self._contextual + self._tail_len + targets)
        return [
            longest if self._tail_len <= 0 or i < self._split else kept
            for i in range(len(self.layers))
        ]

    def run(
        self,
        x: torch.Tensor,
        offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs every layer: the rows ``[L', D]`` and their offsets ``[B + 1]``.

        Raises:
            ValueError: a relative attention ``bias`` with truncation (its shape is the
                untruncated batch's).
            DataError: the batch's attention cannot fit in this host's memory (CPU; see
                ``recforge.modules.gr.attention_memory``).

        """
        if (
            not torch.jit.is_scripting()
            and not is_fx_symbolic_tracing()
            and x.device.type == "cpu"
            and self._heads > 0
        ):
            check_attention_memory(
                offsets,
                self._heads,
                self._layer_lengths(offsets, num_targets),
                x.element_size(),
                self.training,
            )
        for i, layer in enumerate(self.layers):
            if self._tail_len > 0 and i == self._split:
                if bias is not None:
                    raise ValueError("attention truncation cannot take a relative attention bias")
                x, offsets = truncate_history(
                    x, offsets, num_targets, self._contextual, self._tail_len
                )
            x = layer(x, offsets, max_seq_len, num_targets, bias)
        return x, offsets
