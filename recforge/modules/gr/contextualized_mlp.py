"""HSTU's action MLP: action encodings to the sequence width.

TorchEasyRec's ``SimpleContextualizedMLP``: Linear -> swish layer norm -> Linear -> layer norm.
"""

from __future__ import annotations

import torch
from torch import nn


class SwishLayerNorm(nn.Module):
    """``x * sigmoid(layer_norm(x))``.

    Args:
        dim: the normalised width.
        eps: layer norm epsilon.

    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[*, dim]`` -> ``[*, dim]``."""
        return x * torch.sigmoid(self.norm(x))


class SimpleContextualizedMLP(nn.Module):
    """``[L, in_dim]`` -> ``[L, out_dim]`` (see the module docstring).

    Args:
        in_dim: input width.
        out_dim: output width (the sequence width).
        hidden_dim: hidden width.

    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int) -> None:
        super().__init__()
        if hidden_dim <= 0:
            raise ValueError(f"simple_mlp.hidden_dim must be > 0, found {hidden_dim}")
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            SwishLayerNorm(hidden_dim),
            nn.Linear(hidden_dim, out_dim),
            nn.LayerNorm(out_dim),
        )
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[L, in_dim]`` -> ``[L, out_dim]``."""
        return self.mlp(x)
