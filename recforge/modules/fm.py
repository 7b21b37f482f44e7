"""Factorization machine: second-order feature interactions."""

from typing import Any

import torch
from torch import nn


class _PairwiseInteraction(torch.autograd.Function):
    """``0.5 * ((sum_i v_i)^2 - sum_i v_i^2)`` with a backward of two passes over the input.

    Autograd through ``pow`` and ``sum`` makes five passes over the ``[B, N, D]`` input in
    backward, each allocating (``pow(1)``, ``* 2``, ``* grad``, the expanded sum's gradient,
    their sum). This backward rounds the same products, so the gradient is bit for bit
    autograd's: ``h = grad * 0.5``; through the square of the sum ``h * (2 * s)``; through the
    sum of squares autograd's ``(2 * v) * (-h)``, here ``v * (-2 * h)``: doubling is exact, so
    both are the one rounding of ``-2 v h`` (``v`` is far below overflow when the forward's
    ``v^2`` is finite); then their sum.
    """

    @staticmethod
    def forward(ctx: Any, embeddings: torch.Tensor) -> torch.Tensor:
        summed = embeddings.sum(dim=1)
        ctx.save_for_backward(embeddings, summed)
        return 0.5 * (summed.pow(2) - embeddings.pow(2).sum(dim=1))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        embeddings, summed = ctx.saved_tensors
        half = grad * 0.5
        through_sum = half * (2 * summed)
        through_squares = embeddings * (half * -2).unsqueeze(1)
        return through_squares.add_(through_sum.unsqueeze(1))


class FactorizationMachine(nn.Module):
    """Pairwise interactions ``sum_{i<j} v_i * v_j`` of ``N`` embeddings, kept per dimension.

    Shapes:
        input ``[B, N, D]`` -> output ``[B, D]`` (sum over ``D`` for the FM logit).
    """

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Computes ``0.5 * ((sum_i v_i)^2 - sum_i v_i^2)``."""
        if torch.jit.is_scripting():  # alone in its condition, so TorchScript skips the rest
            return _pairwise(embeddings)
        if self.training:  # the same values; a cheaper backward (see _PairwiseInteraction)
            return _PairwiseInteraction.apply(embeddings)
        return _pairwise(embeddings)


def _pairwise(embeddings: torch.Tensor) -> torch.Tensor:
    square_of_sum = embeddings.sum(dim=1).pow(2)
    sum_of_square = embeddings.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_square)
