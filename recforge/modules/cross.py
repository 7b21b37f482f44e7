"""Cross networks of DCN (vector weights) and DCN-V2 (low-rank matrices, optional mixture)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from recforge.protos import module_pb2


class CrossNet(nn.Module):
    """DCN's cross network: ``x_{l+1} = x0 * (x_l . w_l) + b_l + x_l`` for ``l < num_layers``.

    Each layer adds one degree of explicit feature crossing with ``2 * D`` parameters.

    Args:
        in_features: input width ``D``.
        num_layers: number of cross layers.

    Shapes:
        input ``[B, D]`` -> output ``[B, D]``.

    Example:
        >>> CrossNet(8, num_layers=3)(torch.randn(2, 8)).shape
        torch.Size([2, 8])

    """

    def __init__(self, in_features: int, num_layers: int = 3) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"CrossNet needs num_layers >= 1, found {num_layers}")
        self._num_layers = num_layers
        self._in_features = in_features
        # xavier normal of each [D, 1] weight vector
        std = math.sqrt(2.0 / (in_features + 1))
        self.weight = nn.Parameter(torch.randn(num_layers, in_features) * std)
        self.bias = nn.Parameter(torch.zeros(num_layers, in_features))

    @classmethod
    def from_config(cls, in_features: int, config: module_pb2.Cross) -> CrossNet:
        """Builds the network described by a ``Cross`` message."""
        return cls(in_features, config.cross_num)

    def output_dim(self) -> int:
        """Width of the output (the input width)."""
        return self._in_features

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """Crosses ``x0`` ``[B, D]`` with itself ``num_layers`` times: ``[B, D]``."""
        x = x0
        for i in range(self._num_layers):
            x = x0 * (x @ self.weight[i]).unsqueeze(1) + self.bias[i] + x
        return x


class CrossNetV2(nn.Module):
    """DCN-V2's cross network with low-rank weights, optionally a mixture of low-rank experts.

    Layer ``l`` computes, for each expert ``k``,
    ``E_k(x_l) = x0 * (U_lk (V_lk^T x_l) + b_lk)`` with ``U_lk: [r, D]``, ``V_lk: [D, r]``, and
    ``x_{l+1} = sum_k g_k(x_l) E_k(x_l) + x_l`` with a softmax gate ``g(x_l) = softmax(G_l x_l)``
    (DCN-Mix). With one expert there is no gate: ``x_{l+1} = x0 * (U_l V_l^T x_l + b_l) + x_l``,
    the low-rank DCN-V2 layer.

    Args:
        in_features: input width ``D``.
        num_layers: number of cross layers.
        low_rank: rank ``r`` of each weight matrix (at most ``D`` is useful).
        num_experts: low-rank experts per layer ``K``.

    Shapes:
        input ``[B, D]`` -> output ``[B, D]``.

    Example:
        >>> CrossNetV2(8, num_layers=2, low_rank=4, num_experts=3)(torch.randn(2, 8)).shape
        torch.Size([2, 8])

    """

    def __init__(
        self, in_features: int, num_layers: int = 3, low_rank: int = 32, num_experts: int = 1
    ) -> None:
        super().__init__()
        if num_layers < 1 or low_rank < 1 or num_experts < 1:
            raise ValueError(
                "CrossNetV2 needs num_layers, low_rank and num_experts >= 1, found"
                f" {num_layers}, {low_rank}, {num_experts}"
            )
        self._num_layers = num_layers
        self._in_features = in_features
        shape = (num_layers, num_experts)
        # xavier-uniform U and V: U V^T starts near the scale of a xavier D x D matrix
        self.down = nn.Parameter(torch.empty(*shape, in_features, low_rank))
        self.up = nn.Parameter(torch.empty(*shape, low_rank, in_features))
        for param in (self.down, self.up):
            bound = math.sqrt(6.0 / (in_features + low_rank))
            nn.init.uniform_(param, -bound, bound)
        self.bias = nn.Parameter(torch.zeros(*shape, in_features))
        self.gate: Optional[nn.Parameter] = None
        if num_experts > 1:
            self.gate = nn.Parameter(torch.zeros(num_layers, in_features, num_experts))

    @classmethod
    def from_config(cls, in_features: int, config: module_pb2.CrossV2) -> CrossNetV2:
        """Builds the network described by a ``CrossV2`` message."""
        return cls(in_features, config.cross_num, config.low_rank, config.num_experts)

    def output_dim(self) -> int:
        """Width of the output (the input width)."""
        return self._in_features

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """Crosses ``x0`` ``[B, D]`` with itself ``num_layers`` times: ``[B, D]``."""
        x = x0
        for i in range(self._num_layers):
            low = torch.einsum("bd,kdr->bkr", x, self.down[i])
            experts = x0.unsqueeze(1) * (
                torch.einsum("bkr,krd->bkd", low, self.up[i]) + self.bias[i]
            )
            gate = self.gate
            if gate is None:
                x = experts.squeeze(1) + x
            else:
                weights = torch.softmax(x @ gate[i], dim=1)  # [B, K]
                x = (weights.unsqueeze(2) * experts).sum(dim=1) + x
        return x
