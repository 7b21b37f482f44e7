"""Contextual tokens of HSTU: a user's contextual features as prefix tokens of the sequence.

Each of the ``c`` contextual features (a DEEP group ``[B, c * d]``, all of one width ``d``)
goes through its own linear map to the model width ``D`` and becomes one token; the ``c``
tokens are put before the user's history (TorchEasyRec's contextual preprocessor: Xavier-normal
weights ``[c, d, D]``, zero biases). With ``concat`` the whole group is one feature: one token.
"""

from __future__ import annotations

import torch
from torch import nn


class ContextualTokens(nn.Module):
    """Contextual features ``[B, sum(dims)]`` -> tokens ``[B, c, D]``.

    Args:
        dims: the widths of the features, in the group's order (at least one).
        embedding_dim: the token width ``D``.
        concat: all features as one token (TorchEasyRec's ``concat_contextual_features``);
            else one token each, which needs one width for all.
        hint: put after the message of the width error (e.g. the option that avoids it).

    Raises:
        ValueError: no feature, or features of several widths without ``concat``.

    Example:
        >>> tokens = ContextualTokens([3, 3], embedding_dim=8)
        >>> tokens(torch.randn(5, 6)).shape
        torch.Size([5, 2, 8])

    """

    def __init__(
        self, dims: list[int], embedding_dim: int, concat: bool = False, hint: str = ""
    ) -> None:
        super().__init__()
        if not dims:
            raise ValueError("contextual tokens need at least one contextual feature")
        if concat:
            dims = [sum(dims)]
        if len(set(dims)) > 1:
            raise ValueError(
                f"the contextual features must have one embedding width, found"
                f" {sorted(set(dims))}{hint}"
            )
        self.num_tokens = len(dims)
        self._dim = dims[0]
        std = (2.0 / (self._dim + embedding_dim)) ** 0.5
        self.weight = nn.Parameter(
            torch.empty(self.num_tokens, self._dim, embedding_dim).normal_(0.0, std)
        )
        self.bias = nn.Parameter(torch.zeros(self.num_tokens, 1, embedding_dim))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """``[B, sum(dims)]`` -> ``[B, c, D]``."""
        context = context.reshape(-1, self.num_tokens, self._dim)
        return torch.baddbmm(self.bias, context.transpose(0, 1), self.weight).transpose(0, 1)
