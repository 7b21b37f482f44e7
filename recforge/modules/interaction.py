"""Feature-interaction layers over ``N`` equal-width embeddings: DLRM's dot, xDeepFM's CIN."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from recforge.protos import module_pb2


class DotInteraction(nn.Module):
    """DLRM's pairwise interaction: the dot product of every pair ``i < j`` of ``N`` vectors.

    Args:
        num_features: ``N``, the number of vectors.

    Shapes:
        input ``[B, N, D]`` -> output ``[B, N * (N - 1) / 2]`` (pairs in row-major order).

    Example:
        >>> DotInteraction(4)(torch.randn(2, 4, 8)).shape
        torch.Size([2, 6])

    """

    if TYPE_CHECKING:  # buffers typed for mypy only (TorchScript cannot resolve them)
        rows: torch.Tensor
        cols: torch.Tensor

    def __init__(self, num_features: int) -> None:
        super().__init__()
        if num_features < 2:
            raise ValueError(f"DotInteraction needs at least 2 vectors, found {num_features}")
        self._num_features = num_features
        rows, cols = torch.triu_indices(num_features, num_features, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def output_dim(self) -> int:
        """Number of pairs ``N * (N - 1) / 2``."""
        return self._num_features * (self._num_features - 1) // 2

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Dot products of all pairs: ``[B, N, D] -> [B, N(N-1)/2]``."""
        gram = torch.bmm(embeddings, embeddings.transpose(1, 2))
        return gram[:, self.rows, self.cols]


class _CINLayer(nn.Module):
    """One CIN layer: ``X^k_j = sum_{h, n} W_{j,h,n} (X^{k-1}_h * X^0_n) + b_j``."""

    def __init__(self, in_maps: int, num_features: int, out_maps: int) -> None:
        super().__init__()
        # the init of a linear layer over the in_maps * num_features products
        bound = 1.0 / math.sqrt(in_maps * num_features)
        self.weight = nn.Parameter(torch.empty(out_maps, in_maps, num_features))
        nn.init.uniform_(self.weight, -bound, bound)
        self.bias = nn.Parameter(torch.empty(out_maps, 1))
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, hidden: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``[B, H, D]`` maps and ``[B, N, D]`` embeddings -> ``[B, out_maps, D]``."""
        # one contraction, never materialising the [B, H * N, D] products
        return torch.einsum("bhd,bnd,jhn->bjd", hidden, embeddings, self.weight) + self.bias


class CIN(nn.Module):
    """xDeepFM's compressed interaction network.

    Layer ``k`` forms every product ``X^{k-1}_h * X^0_n`` (elementwise over ``D``) of its
    ``H_{k-1}`` input maps with the ``N`` input embeddings and compresses the
    ``H_{k-1} * N`` products into ``H_k`` maps with a learned weighted sum (a 1x1 convolution).
    Each layer's maps are summed over ``D``, and the sums of all layers are concatenated.

    Args:
        num_features: ``N``, the number of input embeddings.
        layer_sizes: ``H_k`` of each layer.

    Shapes:
        input ``[B, N, D]`` -> output ``[B, sum(layer_sizes)]``.

    Example:
        >>> CIN(5, [16, 8])(torch.randn(2, 5, 4)).shape
        torch.Size([2, 24])

    """

    def __init__(self, num_features: int, layer_sizes: Sequence[int]) -> None:
        super().__init__()
        if not layer_sizes:
            raise ValueError("CIN needs at least one entry in cin_layer_size")
        self.layers = nn.ModuleList()
        maps = num_features
        for size in layer_sizes:
            self.layers.append(_CINLayer(maps, num_features, size))
            maps = size
        self._output_dim = sum(layer_sizes)

    @classmethod
    def from_config(cls, num_features: int, config: module_pb2.CIN) -> CIN:
        """Builds the network described by a ``CIN`` message."""
        return cls(num_features, list(config.cin_layer_size))

    def output_dim(self) -> int:
        """Width of the output, ``sum(layer_sizes)``."""
        return self._output_dim

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Runs the layers: ``[B, N, D] -> [B, sum(layer_sizes)]``."""
        hidden = embeddings
        pooled: list[torch.Tensor] = []
        for layer in self.layers:
            hidden = layer(hidden, embeddings)
            pooled.append(hidden.sum(dim=2))
        return torch.cat(pooled, dim=1)
