"""WuKong's interaction layer over ``N`` feature vectors of one dim ``D``.

A linear compress block and an FM block side by side, with a residual connection and a layer
norm.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from recforge.modules.mlp import MLP
from recforge.protos import module_pb2


class LinearCompressBlock(nn.Module):
    """Linear mixing of the feature vectors: ``N`` vectors in, ``M`` vectors out.

    Output vector ``m`` is ``sum_n W[n, m] x_n`` (one weight per pair of vectors, shared by
    every embedding dim).

    Args:
        num_in: number of input vectors ``N``.
        num_out: number of output vectors ``M``.

    Shapes:
        ``[B, N, D]`` -> ``[B, M, D]``.

    """

    def __init__(self, num_in: int, num_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_in, num_out))
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mixed vectors ``[B, M, D]``."""
        return torch.einsum("bnd,nm->bmd", x, self.weight)


class FactorizationMachineBlock(nn.Module):
    """Optimised FM block: pairwise dot products against ``K`` compressed vectors, then an MLP.

    The ``N`` vectors are compressed to ``K`` (``x^T W``, ``W`` ``[N, K]``); the dot product of
    every input vector with every compressed one (``[B, N, K]``, flattened) is layer-normed,
    run through the MLP and projected to ``M`` vectors of dim ``D``.

    Args:
        dim: embedding dim ``D``.
        num_in: number of input vectors ``N``.
        num_out: number of output vectors ``M``.
        compressed_num: number of compressed vectors ``K``.
        mlp: the ``feature_num_mlp`` config over the ``N * K`` dot products.

    Shapes:
        ``[B, N, D]`` -> ``[B, M, D]``.

    """

    def __init__(
        self, dim: int, num_in: int, num_out: int, compressed_num: int, mlp: module_pb2.MLP
    ) -> None:
        super().__init__()
        if compressed_num < 1:
            raise ValueError(f"compressed_feature_num must be >= 1, found {compressed_num}")
        self._num_out = num_out
        self._dim = dim
        self.compress = nn.Parameter(torch.empty(num_in, compressed_num))
        nn.init.kaiming_uniform_(self.compress)
        self.norm = nn.LayerNorm(num_in * compressed_num)
        self.mlp = MLP.from_config(num_in * compressed_num, mlp)
        self.project = nn.Linear(self.mlp.output_dim(), num_out * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The FM block's vectors ``[B, M, D]``."""
        compressed = torch.einsum("bnd,nk->bdk", x, self.compress)
        dots = torch.bmm(x, compressed).flatten(1)  # [B, N * K]
        out = self.project(self.mlp(self.norm(dots)))
        return out.view(-1, self._num_out, self._dim)


class WuKongLayer(nn.Module):
    """One WuKong layer: ``LayerNorm([FMB(x), LCB(x)] + residual(x))``.

    The FM block's ``fmb_feature_num`` vectors come first, then the linear compress block's
    ``lcb_feature_num``; the residual is ``x`` itself when ``N`` equals their sum, else a
    linear compress block to that many vectors. The layer norm is over the embedding dim.

    Args:
        dim: embedding dim ``D``.
        num_in: number of input vectors ``N``.
        lcb_feature_num: vectors of the linear compress block.
        fmb_feature_num: vectors of the FM block.
        compressed_feature_num: compressed vectors ``K`` of the FM block.
        feature_num_mlp: the FM block's MLP config.

    Shapes:
        ``[B, N, D]`` -> ``[B, output_feature_num(), D]``.

    Example:
        >>> from recforge.protos import module_pb2
        >>> layer = WuKongLayer(4, 5, 2, 3, 2, module_pb2.MLP(hidden_units=[8]))
        >>> layer(torch.randn(6, 5, 4)).shape
        torch.Size([6, 5, 4])

    """

    def __init__(
        self,
        dim: int,
        num_in: int,
        lcb_feature_num: int,
        fmb_feature_num: int,
        compressed_feature_num: int,
        feature_num_mlp: module_pb2.MLP,
    ) -> None:
        super().__init__()
        if lcb_feature_num < 1 or fmb_feature_num < 1:
            raise ValueError(
                "lcb_feature_num and fmb_feature_num must be >= 1, found"
                f" {lcb_feature_num} and {fmb_feature_num}"
            )
        self._num_out = lcb_feature_num + fmb_feature_num
        self.lcb = LinearCompressBlock(num_in, lcb_feature_num)
        self.fmb = FactorizationMachineBlock(
            dim, num_in, fmb_feature_num, compressed_feature_num, feature_num_mlp
        )
        self.norm = nn.LayerNorm(dim)
        self.residual: Optional[LinearCompressBlock] = None
        if num_in != self._num_out:
            self.residual = LinearCompressBlock(num_in, self._num_out)

    @classmethod
    def from_config(cls, dim: int, num_in: int, config: module_pb2.WuKongLayer) -> WuKongLayer:
        """Builds the layer a ``WuKongLayer`` message describes, over ``num_in`` vectors."""
        if not config.feature_num_mlp.hidden_units:
            raise ValueError("WuKongLayer needs feature_num_mlp { hidden_units }")
        return cls(
            dim,
            num_in,
            config.lcb_feature_num,
            config.fmb_feature_num,
            config.compressed_feature_num,
            config.feature_num_mlp,
        )

    def output_feature_num(self) -> int:
        """Number of output vectors (``lcb_feature_num + fmb_feature_num``)."""
        return self._num_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's vectors ``[B, output_feature_num(), D]``."""
        residual = x if self.residual is None else self.residual(x)
        return self.norm(torch.cat([self.fmb(x), self.lcb(x)], dim=1) + residual)
