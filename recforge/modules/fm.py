"""Factorization machine: second-order feature interactions."""

import torch
from torch import nn


class FactorizationMachine(nn.Module):
    """Pairwise interactions ``sum_{i<j} v_i * v_j`` of ``N`` embeddings, kept per dimension.

    Shapes:
        input ``[B, N, D]`` -> output ``[B, D]`` (sum over ``D`` for the FM logit).
    """

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Computes ``0.5 * ((sum_i v_i)^2 - sum_i v_i^2)``."""
        square_of_sum = embeddings.sum(dim=1).pow(2)
        sum_of_square = embeddings.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square)
